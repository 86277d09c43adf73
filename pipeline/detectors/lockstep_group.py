"""`lockstep_group` (Article 18(4)): rings of accounts acting on the same content in step.

A ring bought to push one account reposts each of its new posts within minutes, round
after round, the same accounts every time (CopyCatch, WWW 2013: a group of users and a set
of pages, each user acting on each page within a small window). Keyed by the account whose
content is acted on (`target`): a ring working one account's posts meets in one key, and
the key keeps, for `horizon_ms`, who acted on each of its items when. When a window brings
an item at least `min_round_actors` actions, the key's items are split into rounds (event
slots: who acted on an item within a few minutes) and rounds of different items sharing
most of their actors are grouped (`models.lockstep`, through an index of each actor's
rounds, never comparing accounts pairwise). Organic popularity is no group: a viral post
is one round however large, and fans who come back to each post of an account they like
do so at scattered times, in rounds made mostly of other people.

What this keying cannot see alone: a ring that spreads over many accounts' content, one
round per account (its rounds never meet in one key). With `across_accounts`, each round
of `min_round_actors` is handed on once closed (no action within `round_gap_ms` after its
last) to `lockstep_ring` (`pipeline.detectors.lockstep_ring`), keyed by MinHash values of
its actors, where a ring's rounds meet whichever accounts they were on. An account with a
round still open asks to be woken when it closes (`wake_at`), so its last round is handed
on even if nothing more happens on that account.

One group, one subject: a group keeps its id (from its account and first item) while it
works more items, and is reported again (with all its members) only when it has members
not yet named, at least `regrow_share` of those named so far.

State per key: the (ts, actor) of its actions over `horizon_ms`, at most `max_actions`
(the oldest go first), and the groups it reported within the horizon; a key idle for
`idle_ttl_ms` is forgotten. An account gets state only from its first window in which one
of its items has `start_actions` actions: the long tail of accounts whose posts get a
repost now and then costs no memory (all in all: the actions of the last `horizon_ms` on
accounts that had such a window, at most `max_actions` each).

Cost: a whole-window stage (`pipeline.core.window_runner`): a window's actions are sorted out by
account and item once, with a C-level map and a dict step each; per account, work beyond
storing them is done only when one of its items has `min_round_actors` actions.

Evidence: a finding charts the account's latest regroupings (`evidence.series`): per
window in which its items were regrouped, the members of the largest group found (0 for
none) against `min_members`, the least a group has, kept in its model
(`models.recent_windows`, at most `series_points`); the finding's own group is its last
point, so a second group found in the same window charts its own members there.
"""

from __future__ import annotations

import math
from collections import Counter
from operator import attrgetter
from typing import Any, Literal

import msgspec

from models.lockstep import Group, Round, lockstep_groups, round_signature, rounds
from models.recent_windows import remember
from models.scales import saturating
from pipeline.contract.findings import Finding, make_finding, severity_of, stable_id
from pipeline.core.derived import Derived
from pipeline.core.numbers import (
    AtLeastTwo,
    NonNegative,
    NonNegativeInt,
    PositiveInt,
    PositiveShare,
)
from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.case_evidence import member_facts, series
from pipeline.detectors.registry import Build, Detector, DetectorSettings

MAX_LISTED_ROUNDS = 20  # rounds described in a finding's evidence
MAX_PICTURED_MEMBERS = 100  # members whose rounds a finding's evidence lists (`member_rounds`)
ROUND_STREAM = "lockstep_round"  # closed rounds, to lockstep_ring
_where = attrgetter("target", "content_id")
_action = attrgetter("ts", "actor")


class LockstepGroupSettings(DetectorSettings):
    """`detectors.lockstep_group` in config/lockstep.yaml, which explains each field (the
    ring_* ones are `lockstep_ring`'s)."""

    actions: tuple[Literal["repost", "click", "comment"], ...]
    window_ms: PositiveInt
    horizon_ms: PositiveInt
    start_actions: PositiveInt
    round_gap_ms: PositiveInt
    max_round_ms: PositiveInt
    min_round_actors: AtLeastTwo
    min_items: AtLeastTwo
    min_shared: AtLeastTwo
    link_share: PositiveShare
    member_share: PositiveShare
    min_members: PositiveInt
    regrow_share: NonNegative
    max_actions: PositiveInt
    max_members: PositiveInt
    idle_ttl_ms: PositiveInt
    across_accounts: bool
    ring_bands: PositiveInt
    ring_max_rounds: PositiveInt
    ring_max_actors: PositiveInt
    series_points: NonNegativeInt
    ring_series_points: NonNegativeInt

    def check(self) -> None:
        where = "detectors.lockstep_group"
        if not self.actions:
            raise ConfigError(f"{where}: actions must name at least one event type")
        if self.horizon_ms < self.max_round_ms or self.idle_ttl_ms < self.horizon_ms:
            raise ConfigError(f"{where}: need max_round_ms <= horizon_ms <= idle_ttl_ms")
        if self.start_actions > self.min_round_actors:
            raise ConfigError(f"{where}: start_actions must be in [1, min_round_actors]")
        if self.ring_max_actors < self.min_round_actors:
            raise ConfigError(f"{where}: ring_max_actors must be >= min_round_actors")


def group_rounds(slots: list[Round], cfg: LockstepGroupSettings) -> list[Group]:
    """`models.lockstep.lockstep_groups` with the configured thresholds."""
    return lockstep_groups(
        slots,
        min_items=cfg.min_items,
        min_shared=cfg.min_shared,
        link_share=cfg.link_share,
        member_share=cfg.member_share,
        min_members=cfg.min_members,
    )


class Reported(msgspec.Struct, gc=False):
    """A group already reported by this key: the items it worked, the members named."""

    items: list[str]
    members: list[str]  # named in its findings so far (at most max_members)
    named: int  # how many members it had when last reported
    last_ts: int  # end of its latest round


class TargetModel(msgspec.Struct, gc=False):
    """One account's recent audience: per item, (ts, actor) of the actions on it."""

    items: dict[str, list[tuple[int, str]]] = {}
    actions: int = 0
    oldest: int = 0  # ts of its oldest stored action (0: none)
    started: bool = False  # stores actions: one of its items had `start_actions` in a window
    groups: dict[str, Reported] = {}
    handed: dict[str, int] = {}  # rounds handed on to lockstep_ring (item@start -> end)
    wake: int = 0  # when its open round closes (0: none open)
    # its latest regroupings (end, largest group's members, min_members), for a chart
    recent: bytes | None = None


class LockstepGroupStage(WholeWindowStage):
    detector = "lockstep_group"
    key_field = "target"
    event_types = frozenset({"repost"})

    def __init__(
        self, cfg: LockstepGroupSettings, severity: SeveritySettings, rings: bool = False
    ) -> None:
        """`rings`: hand closed rounds on to `lockstep_ring` (rings across accounts)."""
        super().__init__(WindowSpec(cfg.window_ms, cfg.window_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        self.event_types = frozenset(cfg.actions)  # type: ignore[misc]
        if rings:
            self.emits = frozenset({ROUND_STREAM})

    def new_model(self) -> TargetModel:
        return TargetModel()

    def wake_at(self, model: TargetModel) -> int | None:
        return model.wake or None

    def on_wake(self, key: str, model: TargetModel, end: int) -> list[Derived]:
        return self._hand_on(key, model, end)

    def judge(
        self, events: list[Any], models: Models, start: int, end: int
    ) -> list[Finding | Derived]:
        """Store a window's actions with their accounts, then regroup the accounts whose
        items got a crowd. The actions are sorted out by account and item with a C-level
        map and one dict step per action: this is the stage's only per-event work."""
        by_item: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for where, action in zip(map(_where, events), map(_action, events), strict=True):
            mine = by_item.get(where)
            if mine is None:
                by_item[where] = [action]
            else:
                mine.append(action)
        per_target: dict[str, list[tuple[str, list[tuple[int, str]]]]] = {}
        for (target, item), actions in by_item.items():
            per_target.setdefault(target, []).append((item, actions))
        findings: list[Finding | Derived] = []
        start_actions = self.cfg.start_actions
        for target in sorted(per_target):
            new = per_target[target]
            busy = max(len(actions) for _, actions in new) >= start_actions
            model = models.get(target, create=busy)
            if model is None or not (model.started or busy):
                continue  # the long tail: no item of this account has had a crowd yet
            model.started = True
            findings.extend(self._judge_target(target, model, new, end, events))
        return findings

    def _judge_target(
        self,
        key: str,
        model: TargetModel,
        new: list[tuple[str, list[tuple[int, str]]]],
        end: int,
        window: list[Any],
    ) -> list[Finding | Derived]:
        """`window`: the window's events (of every key, in the embedded runtime), read
        only to describe the members of a finding."""
        cfg = self.cfg
        items = model.items
        crowded = False
        for item, actions in new:
            mine = items.get(item)
            if mine is None:
                mine = items[item] = actions
            else:
                mine.extend(actions)
            model.actions += len(actions)
            model.oldest = min(model.oldest, min(actions)[0]) if model.oldest else min(actions)[0]
            crowded = crowded or len(mine) >= cfg.min_round_actors
        self._forget(model, end)
        if not crowded:
            return []  # no item got a crowd this window: no new round to group
        slots = [
            r
            for item in sorted(items)
            if len(items[item]) >= cfg.min_round_actors
            for r in rounds(item, items[item], cfg.round_gap_ms, cfg.max_round_ms)
            if len(r.actors) >= cfg.min_round_actors
        ]
        groups = group_rounds(slots, cfg)
        before = model.recent  # the windows before this one, for each finding's chart
        largest = max((len(g.joined) for g in groups), default=0)
        model.recent = remember(before, end, largest, cfg.min_members, cfg.series_points)
        findings: list[Finding | Derived] = []
        for group in groups:
            finding = self._report(key, model, group, end, window, before)
            if finding is not None:
                findings.append(finding)
        if self.emits:
            findings.extend(self._hand_on(key, model, end))
        return findings

    def _hand_on(self, key: str, model: TargetModel, end: int) -> list[Derived]:
        """The account's closed rounds not handed on yet, as `round` records keyed by
        each MinHash value of their actors; remembers when the next open one closes."""
        cfg = self.cfg
        out: list[Derived] = []
        model.wake = 0
        for item in sorted(model.items):
            actions = model.items[item]
            if len(actions) < cfg.min_round_actors:
                continue
            for r in rounds(item, actions, cfg.round_gap_ms, cfg.max_round_ms):
                if len(r.actors) < cfg.min_round_actors:
                    continue
                rid = f"{item}@{r.start}"
                if rid in model.handed:
                    continue
                closes = r.end + cfg.round_gap_ms + 1  # an action from then on: a new round
                if closes > end:
                    model.wake = min(model.wake or closes, closes)
                    continue
                model.handed[rid] = r.end
                actors = sorted(r.actors)[: cfg.ring_max_actors]
                data = {"target": key, "item": item, "start": r.start, "end": r.end}
                data["actors"] = actors
                out.extend(
                    Derived(
                        stream=ROUND_STREAM, key=sig, ts=end - 1, event_id=f"{rid}/{sig}", data=data
                    )
                    for sig in round_signature(r.actors, cfg.ring_bands)
                )
        return out

    def _forget(self, model: TargetModel, end: int) -> None:
        """Drop actions older than the horizon, then the oldest beyond `max_actions`, and
        reported groups with no round within the horizon."""
        cfg = self.cfg
        cutoff = end - cfg.horizon_ms
        if model.groups:
            for gid in [g for g, r in model.groups.items() if r.last_ts < cutoff]:
                del model.groups[gid]
        if model.handed:
            for rid in [r for r, last in model.handed.items() if last < cutoff]:
                del model.handed[rid]
        if model.actions > cfg.max_actions:  # keep the newest: cut at the cap's oldest ts
            stamps = sorted(ts for mine in model.items.values() for ts, _ in mine)
            cutoff = max(cutoff, stamps[len(stamps) - cfg.max_actions] + 1)
        elif model.oldest >= cutoff:
            return  # nothing to drop: no pass over the items
        kept, oldest = 0, 0
        for item in list(model.items):
            mine = [a for a in model.items[item] if a[0] >= cutoff]
            if mine:
                model.items[item] = mine
                kept += len(mine)
                first = min(mine)[0]
                oldest = first if not oldest else min(oldest, first)
            else:
                del model.items[item]
        model.actions, model.oldest = kept, oldest

    def _report(
        self,
        key: str,
        model: TargetModel,
        group: Group,
        end: int,
        window: list[Any],
        before: bytes | None,
    ) -> Finding | None:
        """The group's finding if it is new, or has grown enough since it was reported
        (`before`: the account's chart up to the window before this one)."""
        cfg = self.cfg
        items = [r.item for r in group.rounds]
        last = max(r.end for r in group.rounds)
        gid = next((g for g, r in model.groups.items() if set(r.items) & set(items)), None)
        if gid is not None:
            known = model.groups[gid]
            known.items = sorted(set(known.items) | set(items))
            known.last_ts = max(known.last_ts, last)
            if len(known.members) < cfg.max_members:
                new = len(group.joined.keys() - set(known.members))
            else:  # names kept up to the cap: beyond it, growth is counted
                new = len(group.joined) - known.named
            if new < max(1.0, cfg.regrow_share * known.named):
                return None
        else:
            gid = stable_id(self.detector, key, items[0])
            known = model.groups[gid] = Reported(sorted(set(items)), [], 0, last)
        finding = self._finding(key, gid, group, end, model.items, window, before)
        if finding is not None:
            named = set(known.members) | set(finding.members)
            known.named = max(known.named, len(named), len(group.joined))
            known.members = sorted(named)[: cfg.max_members]
        return finding

    def _finding(
        self,
        key: str,
        gid: str,
        group: Group,
        end: int,
        items: dict[str, list[tuple[int, str]]],
        window: list[Any],
        before: bytes | None,
    ) -> Finding | None:
        """The group's finding. Its members are described (`member_facts`) from their
        actions on `key`'s content in this `window`, and placed in the listed rounds
        (`member_rounds`) from the actions the key keeps (`items`); its chart is the
        account's windows `before` this one, then its own members."""
        cfg = self.cfg
        joined = group.joined
        n_items = len({r.item for r in group.rounds})
        strength = (n_items / cfg.min_items) * (len(joined) / cfg.min_members)
        score = saturating(math.sqrt(strength))
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        members = sorted(joined, key=lambda a: (-joined[a], a))[: cfg.max_members]
        first = group.rounds[0]
        listed: list[Round] = group.rounds[-MAX_LISTED_ROUNDS:]
        in_rounds = [len(r.actors & joined.keys()) for r in group.rounds]
        share = sum(in_rounds) / max(sum(len(r.actors) for r in group.rounds), 1)
        spans = [(r.end - r.start) / 60_000 for r in group.rounds]
        histogram = Counter(joined.values())
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="group",
            subject_id=gid,
            window_start=first.start,
            window_end=end,
            score=score,
            severity=severity,
            members=members,
            evidence={
                "target": key,
                "members": len(joined),
                "items": n_items,
                "rounds": [
                    {
                        "content_id": r.item,
                        "start": r.start,
                        "end": r.end,
                        "actors": len(r.actors),
                        "members": len(r.actors & joined.keys()),
                    }
                    for r in listed
                ],
                "members_by_items_joined": {str(k): histogram[k] for k in sorted(histogram)},
                "items_joined": {m: joined[m] for m in members},
                "member_share_of_rounds": round(share, 3),
                "member_rounds": _member_rounds(listed, members[:MAX_PICTURED_MEMBERS], items),
                **series(remember(before, end, len(joined), cfg.min_members, cfg.series_points)),
                "member_facts": member_facts((e for e in window if e.target == key), members),
                "explanation": (
                    f"{len(joined)} accounts acted together on {n_items} items of {key}: "
                    f"each on at least {min(joined.values())} of them, every time within the "
                    f"same {max(spans):.0f} min; they made {share:.0%} of those rounds' actions"
                ),
            },
        )


def _member_rounds(
    listed: list[Round], members: list[str], items: dict[str, list[tuple[int, str]]]
) -> dict[str, list[list[int]]]:
    """Which of the listed rounds each of `members` acted in, and when it first did in
    each: `{member: [[round index, ts], ...]}`, so a picture can draw members by time.
    The earliest of a member's actions in a round, whatever order they were stored in."""
    wanted = set(members)
    acted: dict[str, list[list[int]]] = {}
    for i, r in enumerate(listed):
        first: dict[str, int] = {}
        for ts, actor in items.get(r.item, ()):
            in_round = r.start <= ts <= r.end and actor in wanted and actor in r.actors
            if in_round and ts < first.get(actor, ts + 1):
                first[actor] = ts
        for actor in sorted(first):
            acted.setdefault(actor, []).append([i, first[actor]])
    return {m: acted[m] for m in members if m in acted}


def _stages(cfg: LockstepGroupSettings, build: Build) -> list[Stage]:
    """The groups per account; with `across_accounts`, the rings across accounts too, from
    the rounds the first stage closes."""
    from pipeline.detectors.lockstep_ring import (  # here: lockstep_ring imports this module
        LockstepBucketStage,
        LockstepRingStage,
    )

    groups = LockstepGroupStage(cfg, build.severity, rings=cfg.across_accounts)
    if not cfg.across_accounts:
        return [groups]
    return [groups, LockstepBucketStage(cfg), LockstepRingStage(cfg, build.severity)]


DETECTOR = Detector(
    name="lockstep_group",
    settings=LockstepGroupSettings,
    stages=_stages,
    also_finds=("lockstep_ring",),
)
