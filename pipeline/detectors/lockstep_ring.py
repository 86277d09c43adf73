"""`lockstep_ring` (Article 18(4)): one ring acting in step on many accounts' content.

`lockstep_group` is keyed by the account whose content is acted on, so a ring that works
one account's posts meets there. A ring hired by many customers spreads out instead: one
round on this account's post, one on that one's, never two on the same account. This
second stage sees those rounds together without comparing rounds or accounts pairwise:
`lockstep_group` hands each closed round on under `ring_bands` MinHash values of its
actors (`models.lockstep.round_signature`: the actor with the smallest hash per band).
Rounds of one ring are mostly the same accounts, so for each band they share its value
with probability their Jaccard similarity, and with several bands almost surely in one;
a key here is one such value, and holds the rounds that share it. Each window brings new
rounds to a key, its rounds are grouped as `lockstep_group` does (`models.lockstep`), and
a group whose rounds are on at least two accounts' content (one account's rings are
`lockstep_group`'s findings) is reported.

Two stages, as a ring's rounds meet under several keys (one per band that agrees, and a
second value of a band when its smallest member skipped some rounds):

    lockstep_group (by account) --lockstep_round, by MinHash value-->
    lockstep_buckets (by MinHash value): groups of the rounds under one value
        --ring_candidate, by the group's smallest member (a MinHash of its members)-->
    lockstep_ring (by that member): candidates of one ring merged, the finding

Whatever key found it, a ring's members are the same accounts, so its candidates meet
under one member and are merged there: one ring, one subject (its first round), reported
again only when it has grown by `regrow_share`.

State: per MinHash value, its rounds over `horizon_ms` (at most `ring_max_rounds`, newest
kept); per ring, the items and members reported within the horizon, and for each of its
rounds which of the ring's members acted in it (at most `ROUND_MEMBERS_KEPT`, the ones in
most of the ring's items first: what the finding's members-by-item picture,
`evidence.member_items`, is drawn from), and its chart (`evidence.series`: per window in
which candidates of it arrived, its members then against `min_members`, the least a group
has; at most `ring_series_points`, `models.recent_windows`). Keys idle for `idle_ttl_ms`
are forgotten.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import msgspec

from models.lockstep import Round, round_signature
from models.recent_windows import remember
from models.scales import saturating
from pipeline.contract.findings import Finding, make_finding, severity_of, stable_id
from pipeline.core.derived import Derived
from pipeline.core.settings import SeveritySettings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.detectors.case_evidence import (
    MAX_PICTURED_ITEMS,
    MAX_PICTURED_MEMBERS,
    member_items,
    series,
)
from pipeline.detectors.lockstep_group import ROUND_STREAM, LockstepGroupSettings, group_rounds

MAX_LISTED_ROUNDS = 20
# members of the ring kept per round, for the picture (twice the members it draws, so a
# ring's first members by items joined are there though a candidate ranked them lower)
ROUND_MEMBERS_KEPT = 2 * MAX_PICTURED_MEMBERS
CANDIDATE_STREAM = "ring_candidate"


class HeldRound(msgspec.Struct, array_like=True, gc=False):
    """A round handed on by `lockstep_group`: on whose content, which item, who, when."""

    target: str
    item: str
    start: int
    end: int
    actors: list[str]


class BucketModel(msgspec.Struct, gc=False):
    """The rounds sharing this key's MinHash value."""

    rounds: dict[str, HeldRound] = {}  # item@start -> round


class LockstepBucketStage(Stage):
    """Rounds sharing one MinHash value, grouped; groups across accounts handed on."""

    detector = "lockstep_buckets"
    key_field = "key"  # band/actor: one MinHash value of a round's actors
    event_types = frozenset()
    streams = frozenset({ROUND_STREAM})

    def __init__(self, cfg: LockstepGroupSettings) -> None:
        super().__init__(WindowSpec.tumbling(cfg.window_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.emits = frozenset({CANDIDATE_STREAM})

    def new_model(self) -> BucketModel:
        return BucketModel()

    def new_pane(self) -> list[Derived]:
        return []

    def add(self, pane: list[Derived], event: Derived) -> None:
        pane.append(event)

    def evaluate(
        self, key: str, model: BucketModel, panes: list[list[Derived]], start: int, end: int
    ) -> list[Derived]:
        cfg = self.cfg
        fresh = False
        for d in sorted((d for pane in panes for d in pane), key=lambda d: d.event_id):
            data = d.data
            rid = f"{data['item']}@{data['start']}"
            if rid not in model.rounds:
                model.rounds[rid] = HeldRound(
                    data["target"], data["item"], data["start"], data["end"], data["actors"]
                )
                fresh = True
        self._forget(model, end)
        if not fresh:
            return []
        held = sorted(model.rounds.values(), key=lambda r: (r.start, r.item))
        slots = [Round(r.item, r.start, r.end, frozenset(r.actors)) for r in held]
        target_of = {r.item: r.target for r in held}
        groups = group_rounds(slots, cfg)
        out = []
        for group in groups:
            if len({target_of[r.item] for r in group.rounds}) < 2:
                continue  # one account's ring: lockstep_group's finding
            leader = round_signature(group.joined, 1)[0]
            rounds_seen = [
                [target_of[r.item], r.item, r.start, r.end, len(r.actors),
                 len(r.actors & group.joined.keys()), _ranked(r.actors, group.joined)]
                for r in group.rounds
            ]  # fmt: skip
            first = group.rounds[0]
            out.append(
                Derived(
                    stream=CANDIDATE_STREAM,
                    key=leader,
                    ts=end - 1,
                    event_id=f"{key}/{first.item}@{first.start}/{len(group.rounds)}",
                    data={"rounds": rounds_seen, "joined": group.joined},
                )
            )
        return out

    def _forget(self, model: BucketModel, end: int) -> None:
        cfg = self.cfg
        cutoff = end - cfg.horizon_ms
        for rid in [rid for rid, r in model.rounds.items() if r.end < cutoff]:
            del model.rounds[rid]
        if len(model.rounds) > cfg.ring_max_rounds:
            newest = sorted(model.rounds, key=lambda rid: (model.rounds[rid].end, rid))
            for rid in newest[: len(newest) - cfg.ring_max_rounds]:
                del model.rounds[rid]


class Ring(msgspec.Struct, gc=False):
    """A ring reported under this key: its rounds and members so far."""

    rounds: dict[str, list[Any]]  # item@start -> [target, item, start, end, actors, members]
    joined: dict[str, int]  # member -> items of the ring it acted on in round
    named: int  # members when last reported
    last_ts: int  # end of its latest round
    # its latest windows with candidates (end, members, min_members), for a chart
    recent: bytes | None = None


class RingModel(msgspec.Struct, gc=False):
    """The rings whose smallest member is this key's account."""

    rings: dict[str, Ring] = {}


class LockstepRingStage(Stage):
    """Candidates of one ring, from whichever MinHash key found them, merged: the finding."""

    detector = "lockstep_ring"
    key_field = "key"  # the candidate group's smallest member (a MinHash of its members)
    event_types = frozenset()
    streams = frozenset({CANDIDATE_STREAM})

    def __init__(self, cfg: LockstepGroupSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec.tumbling(cfg.window_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity

    def new_model(self) -> RingModel:
        return RingModel()

    def new_pane(self) -> list[Derived]:
        return []

    def add(self, pane: list[Derived], event: Derived) -> None:
        pane.append(event)

    def evaluate(
        self, key: str, model: RingModel, panes: list[list[Derived]], start: int, end: int
    ) -> list[Finding]:
        cfg = self.cfg
        cutoff = end - cfg.horizon_ms
        for gid in [g for g, ring in model.rings.items() if ring.last_ts < cutoff]:
            del model.rings[gid]
        touched: list[str] = []
        for d in sorted((d for pane in panes for d in pane), key=lambda d: d.event_id):
            rounds_seen = {f"{r[1]}@{r[2]}": r for r in d.data["rounds"]}
            gid = next(
                (g for g, ring in model.rings.items() if ring.rounds.keys() & rounds_seen), None
            )
            if gid is None:
                anchor = min(rounds_seen, key=lambda rid: (rounds_seen[rid][2], rid))
                gid = stable_id(self.detector, anchor)
                model.rings[gid] = Ring({}, {}, 0, 0)
            ring = model.rings[gid]
            acted: dict[str, set[str]] = {}
            for rid, r in rounds_seen.items():
                known = ring.rounds.get(rid)
                acted[rid] = {*_acted(r), *(_acted(known) if known is not None else ())}
                if known is None or r[5] > known[5]:
                    ring.rounds[rid] = list(r[:6])
            for member, n in d.data["joined"].items():
                ring.joined[member] = max(ring.joined.get(member, 0), n)
            for rid, members in acted.items():  # the round's members, as the ring ranks them
                del ring.rounds[rid][6:]
                ring.rounds[rid].append(_ranked(members, ring.joined))
            ring.last_ts = max(ring.last_ts, max(r[3] for r in rounds_seen.values()))
            if gid not in touched:
                touched.append(gid)
        findings = []
        for gid in touched:
            ring = model.rings[gid]
            ring.recent = remember(
                ring.recent, end, len(ring.joined), cfg.min_members, cfg.ring_series_points
            )
            grown = len(ring.joined) - ring.named
            if ring.named and grown < max(1.0, cfg.regrow_share * ring.named):
                continue
            finding = self._finding(gid, ring, end)
            if finding is not None:
                ring.named = len(ring.joined)
                findings.append(finding)
        return findings

    def _finding(self, gid: str, ring: Ring, end: int) -> Finding | None:
        cfg = self.cfg
        joined = ring.joined
        rounds_seen = sorted(ring.rounds.values(), key=lambda r: (r[2], r[1]))
        items = {r[1] for r in rounds_seen}
        targets = sorted({r[0] for r in rounds_seen})
        strength = (len(items) / cfg.min_items) * (len(joined) / cfg.min_members)
        score = saturating(math.sqrt(strength))
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        members = sorted(joined, key=lambda a: (-joined[a], a))[: cfg.max_members]
        share = sum(r[5] for r in rounds_seen) / max(sum(r[4] for r in rounds_seen), 1)
        spans = [(r[3] - r[2]) / 60_000 for r in rounds_seen]
        histogram = Counter(joined.values())
        pictured = rounds_seen[-MAX_PICTURED_ITEMS:]
        columns = [
            {"content_id": r[1], "owner": r[0], "start": r[2], "end": r[3]} for r in pictured
        ]
        acts = [(m, j, r[2]) for j, r in enumerate(pictured) for m in _acted(r)]
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="group",
            subject_id=gid,
            window_start=rounds_seen[0][2],
            window_end=end,
            score=score,
            severity=severity,
            members=members,
            evidence={
                "targets": targets[:50],
                "accounts": len(targets),
                "members": len(joined),
                "items": len(items),
                "rounds": [
                    {
                        "target": r[0],
                        "content_id": r[1],
                        "start": r[2],
                        "end": r[3],
                        "actors": r[4],
                        "members": r[5],
                    }
                    for r in rounds_seen[-MAX_LISTED_ROUNDS:]
                ],
                "members_by_items_joined": {str(k): histogram[k] for k in sorted(histogram)},
                "member_share_of_rounds": round(share, 3),
                **member_items(members, columns, acts, len(joined), len(rounds_seen)),
                **series(ring.recent),
                "explanation": (
                    f"{len(joined)} accounts acted together on {len(items)} items of "
                    f"{len(targets)} accounts: each on at least {min(joined.values())} of "
                    f"them, every time within the same {max(spans):.0f} min; they made "
                    f"{share:.0%} of those rounds' actions"
                ),
            },
        )


def _acted(r: list[Any]) -> list[str]:
    """The ring's members that acted in round record `r` (none in a record kept before
    rounds carried them)."""
    return r[6] if len(r) > 6 else []


def _ranked(actors: Any, joined: dict[str, int]) -> list[str]:
    """The members of `joined` among `actors`, those in most of the ring's items first,
    at most `ROUND_MEMBERS_KEPT`."""
    members = [a for a in actors if a in joined]
    return sorted(members, key=lambda a: (-joined[a], a))[:ROUND_MEMBERS_KEPT]
