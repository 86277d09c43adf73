"""`silent_followers` (Article 12): the new followers of an abnormal follower jump that do
nothing but follow.

Bought followers follow and do nothing else; real followers click, repost and comment. A
follower jump made of established accounts from many networks and devices (a slow drip
of aged, bought accounts) looks like real people follow by follow; what gives it away is
that its followers were not active anywhere lately. Whether a follower was is a question
about the follower's own events, which no stage keyed by the followed account sees, so
two stages beside `follower_jump` answer it through derived streams (`pipeline.core.derived`):

    follower_activity (by shard of accounts): who clicked, reposted or commented lately
        (`models.activity.RecentActivity`), and which of a window's new followers did not
        --silent_follow, by the followed account-->
    follower_jump (by followed account): its flagged windows
        --jump_window, by the followed account-->
    silent_followers (by followed account): a flagged window in which most established
        new followers were silent is a finding naming them.

Only a follower's own choice counts (platform-made follows are not), and only established
accounts (a freshly created account has had no time to be active: `follower_jump` judges
fresh crowds by their age). The denominator is `follower_jump`'s count of the window's
established user follows, made by the same rules.

Score: the jump's score, with the rest of the doubt closed in proportion to the silent
share. State: per shard, the accounts active in the last one to two `generation_ms`; per
followed account, its silent followers of the last `memory_ms`.

Evidence: what the follows say of the members (`evidence.member_facts`). Only
`follower_activity` holds the follows, so each `silent_follow` record carries the facts
of its first `MAX_MEMBER_FACTS` silent followers by account id (`case_evidence.member_facts`
over the record's follows): a finding describes the first of its members, sorted by id,
and each of those is among the first of its own record. `silent_followers` keeps them with
the follows, for as long, and takes each field from a member's earliest follow in the
flagged window that carries it.

A finding also charts the followed account's latest judged windows (`evidence.series`):
per `jump_window` record judged (a flagged window of `follower_jump`, or one it follows
up on), its silent followers against the fewest that flag it
(`max(min_silent, min_silent_share * established_follows)`: a real follower is not
silent, so there is no usual number to expect, only the bar), at most `series_points`,
kept with the account's silent followers (`models.recent_windows`).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from itertools import chain, compress
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from models.activity import RecentActivity
from models.follower_composition import PLATFORM_FLOWS
from models.recent_windows import remember
from pipeline.contract.events import EVENT_TYPES
from pipeline.contract.findings import Finding, fabricated, make_finding, severity_of
from pipeline.core.derived import Derived
from pipeline.core.numbers import NonNegativeInt, PositiveInt, PositiveShare
from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.case_evidence import MAX_MEMBER_FACTS, member_facts, series
from pipeline.detectors.registry import Build, Detector, DetectorSettings

if TYPE_CHECKING:
    from pipeline.detectors.follower_jump import FollowerJumpSettings

SILENT_STREAM = "silent_follow"
FOLLOW = "follow"
_actor = attrgetter("actor")
_type = attrgetter("type")
JUMP_STREAM = "jump_window"


class SilentFollowersSettings(DetectorSettings):
    """`detectors.silent_followers` in config/lockstep.yaml, which explains each field."""

    activity_types: list[str]
    shards: PositiveInt
    window_ms: PositiveInt
    generation_ms: PositiveInt
    warmup_ms: NonNegativeInt
    follow_up_ms: NonNegativeInt
    memory_ms: PositiveInt
    min_silent: PositiveInt
    min_silent_share: PositiveShare
    max_members: PositiveInt
    idle_ttl_ms: PositiveInt
    series_points: NonNegativeInt

    def check(self, jumps: FollowerJumpSettings) -> None:
        where = "detectors.silent_followers"
        unknown = set(self.activity_types) - set(EVENT_TYPES)
        if not self.activity_types or unknown or "follow" in self.activity_types:
            raise ConfigError(
                f"{where}: activity_types must name event types other than follow, "
                f"not {sorted(unknown | ({'follow'} & set(self.activity_types)))}"
            )
        if self.generation_ms < self.window_ms:
            raise ConfigError(f"{where}: need window_ms <= generation_ms")
        if self.memory_ms < jumps.window_ms or self.idle_ttl_ms < self.window_ms:
            raise ConfigError(
                f"{where}: memory_ms must cover follower_jump.window_ms and idle_ttl_ms window_ms"
            )


def jump_record(
    account: str,
    start: int,
    end: int,
    finding_id: str,
    score: float,
    kind: str,
    established: int,
) -> Derived:
    """What `follower_jump` hands `silent_followers` for a window [start, end) of an
    account it flagged (`kind` burst or level_shift), or of one it follows up on after
    (`follow_up`, with the latest flagged window's finding and score); `established`:
    the window's established user follows."""
    return Derived(
        stream=JUMP_STREAM,
        key=account,
        ts=end - 1,
        event_id=f"{account}/{start}/jump",
        data={
            "finding": finding_id,
            "kind": kind,
            "score": score,
            "window_start": start,
            "window_end": end,
            "established": established,
        },
    )


def counts_as_established(event: Any, young_ms: int) -> bool:
    """A follow that is the follower's own choice, by an account not freshly created (or
    of unknown age): the follows whose followers' silence is evidence."""
    if event.origin in PLATFORM_FLOWS:
        return False
    created = event.actor_created_at
    return created is None or event.ts - created >= young_ms


class ActivityFold:
    """A pane's (or a batch's) accounts active in it, and its follows."""

    __slots__ = ("active", "follows")

    def __init__(self, active: set[str], follows: list[Any]) -> None:
        self.active = active
        self.follows = follows


class ActivityModel:
    """What `follower_activity` keeps: who was active lately, and since when each shard of
    accounts has been watched (a shard judges nobody before `warmup_ms`)."""

    __slots__ = ("activity", "since")

    def __init__(self, generation_ms: int) -> None:
        self.activity = RecentActivity(generation_ms)
        self.since: dict[str, int] = {}  # shard -> the start of its first window


class FollowerActivityStage(WholeWindowStage):
    """Per shard of accounts: who was active lately; a window's silent new followers.

    The distributed runtime keeps a model per shard (its state goes to a table per key);
    the embedded runtime keeps one for every account (`RecentActivity` answers per account,
    so splitting it changes nothing) and works out an account's shard only where the
    answer depends on it: a silent follower's shard, and a shard's first window."""

    detector = "follower_activity"
    key_field = "actor"  # hashed into a shard by `key_of`
    event_types = frozenset()  # follows, and the activity types of the config
    folds = True
    EVERYONE = "follower_activity/all"  # the embedded runtime's one key

    def __init__(self, cfg: SilentFollowersSettings, young_ms: int) -> None:
        super().__init__(WindowSpec.tumbling(cfg.window_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.young_ms = young_ms
        self.event_types = frozenset({"follow", *cfg.activity_types})  # type: ignore[misc]
        self.emits = frozenset({SILENT_STREAM})
        self._keys = tuple(f"{self.detector}/{i}" for i in range(cfg.shards))

    def shard(self, account: str) -> str:
        keys = self._keys
        return keys[zlib.crc32(account.encode("utf-8", "surrogatepass")) % len(keys)]

    def key_of(self, event: Any) -> str:
        return self.shard(event.actor)

    def new_model(self) -> ActivityModel:
        return ActivityModel(self.cfg.generation_ms)

    def new_pane(self) -> ActivityFold:
        return ActivityFold(set(), [])

    def add(self, pane: ActivityFold, event: Any) -> None:
        if event.type == FOLLOW:
            pane.follows.append(event)
        else:
            pane.active.add(event.actor)

    def fold(
        self, events: list[Any], kind: str | None = None, into: ActivityFold | None = None
    ) -> ActivityFold:
        """A batch as its active accounts and its follows (what `add` makes, event by
        event, in the distributed runtime), in C, added to `into` if given. The embedded
        runtime hands a stage its events a type at a time (`kind`): one pass folds them;
        a batch of mixed or unknown types takes one more to tell follows from the rest."""
        fold = ActivityFold(set(), []) if into is None else into
        if kind == FOLLOW:
            fold.follows.extend(events)
        elif kind is not None:
            fold.active.update(map(_actor, events))
        else:
            kinds = list(map(_type, events))
            fold.active.update(compress(map(_actor, events), map(FOLLOW.__ne__, kinds)))
            fold.follows.extend(compress(events, map(FOLLOW.__eq__, kinds)))
        return fold

    def evaluate(
        self, key: str, model: ActivityModel, panes: list[ActivityFold], start: int, end: int
    ) -> list[Derived]:
        """One shard's window (the distributed runtime)."""
        model.since.setdefault(key, start)
        return self._judge(panes, model, start, end, key)

    def judge(
        self, folds: list[ActivityFold], models: Models, start: int, end: int
    ) -> list[Derived]:
        """Every shard's window at once (the embedded runtime)."""
        model: ActivityModel = models.get(self.EVERYONE, create=True)
        if len(model.since) < len(self._keys):  # shards seen for the first time
            for fold in folds:
                for actor in chain(fold.active, map(_actor, fold.follows)):
                    model.since.setdefault(self.shard(actor), start)
        return self._judge(folds, model, start, end, None)

    def _judge(
        self, folds: list[ActivityFold], model: ActivityModel, start: int, end: int, key: str | None
    ) -> list[Derived]:
        """Remember the window's active accounts, then check its established new followers
        against who was active (before the window, or in it)."""
        activity, warmup = model.activity, self.cfg.warmup_ms
        for fold in folds:
            activity.learn(fold.active, start)
        follows = list(chain.from_iterable(f.follows for f in folds))
        quiet = activity.inactive(map(_actor, follows), start)
        silent: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        theirs: dict[tuple[str, str], list[Any]] = defaultdict(list)  # the follows themselves
        for e in follows:
            actor = e.actor
            if actor not in quiet or not counts_as_established(e, self.young_ms):
                continue
            shard = key or self.shard(actor)
            if start - model.since.get(shard, start) < warmup:
                continue  # too little seen of this shard yet to call anybody silent
            silent[(e.target, shard)].append((e.ts, actor))
            theirs[(e.target, shard)].append(e)
        out: list[Derived] = []
        for (target, shard), follows in sorted(silent.items()):
            followers = sorted({a for _, a in follows})
            data = {
                "follows": sorted(follows),  # [(ts, follower), ...]
                # what the follows say of the first followers by id: {follower: {...}}
                "facts": member_facts(theirs[(target, shard)], followers),
            }
            out.append(
                Derived(
                    stream=SILENT_STREAM,
                    key=target,
                    ts=end - 1,
                    event_id=f"{target}/{shard}/{start}",
                    data=data,
                )
            )
        return out


class SilentMemory:
    """A followed account's silent new followers of the last `memory_ms`: (ts, account),
    what their records said of them: (ts of the account's first follow in the record,
    account, facts), and its latest judged windows (end, silent, the bar), for a chart."""

    __slots__ = ("facts", "follows", "recent")

    def __init__(self) -> None:
        self.follows: list[tuple[int, str]] = []
        self.facts: list[tuple[int, str, dict[str, Any]]] = []
        self.recent: bytes | None = None

    def __getstate__(self) -> tuple[Any, ...]:
        return self.follows, self.facts, self.recent

    def __setstate__(self, state: Any) -> None:
        self.recent = None
        if state[0] is None:  # pickled before the facts: (None, {"follows": [...]})
            self.follows, self.facts = state[1]["follows"], []
        else:  # (follows, facts), and the chart since it was kept
            self.follows, self.facts, *rest = state
            self.recent = rest[0] if rest else None


class SilentFollowersStage(Stage):
    """Per followed account: its flagged windows, judged on their silent followers."""

    detector = "silent_followers"
    key_field = "key"  # the followed account
    event_types = frozenset()
    streams = frozenset({SILENT_STREAM, JUMP_STREAM})

    def __init__(self, cfg: SilentFollowersSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec.tumbling(cfg.window_ms), cfg.memory_ms)
        self.cfg = cfg
        self.severity = severity

    def new_model(self) -> SilentMemory:
        return SilentMemory()

    def new_pane(self) -> list[Derived]:
        return []

    def add(self, pane: list[Derived], event: Derived) -> None:
        pane.append(event)

    def evaluate(
        self, key: str, model: SilentMemory, panes: list[list[Derived]], start: int, end: int
    ) -> list[Finding]:
        records = sorted((d for pane in panes for d in pane), key=_order)
        for d in records:
            if d.stream == SILENT_STREAM:
                follows = [(int(ts), str(a)) for ts, a in d.data["follows"]]
                model.follows.extend(follows)
                facts = d.data.get("facts") or {}
                if facts:
                    first: dict[str, int] = {}
                    for ts, a in follows:
                        first[a] = min(first.get(a, ts), ts)
                    model.facts.extend((first[a], a, known) for a, known in facts.items())
        horizon = end - self.cfg.memory_ms
        model.follows = [f for f in model.follows if f[0] >= horizon]
        if model.facts:
            model.facts = [f for f in model.facts if f[0] >= horizon]
        found = []
        for d in records:
            if d.stream == JUMP_STREAM:
                finding = self._judge(key, model, d.data)
                if finding is not None:
                    found.append(finding)
        return found

    def _judge(self, key: str, model: SilentMemory, jump: dict[str, Any]) -> Finding | None:
        cfg = self.cfg
        start, end = jump["window_start"], jump["window_end"]
        silent = sorted({a for ts, a in model.follows if start <= ts < end})
        established = max(int(jump["established"]), len(silent))
        bar = max(cfg.min_silent, cfg.min_silent_share * established)
        model.recent = remember(model.recent, end, len(silent), bar, cfg.series_points)
        if not silent:
            return None
        share = len(silent) / established
        if len(silent) < cfg.min_silent or share < cfg.min_silent_share:
            return None
        score = jump["score"] + (1.0 - jump["score"]) * share
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        members = silent[: cfg.max_members]
        minutes = (end - start) / 60_000
        when = (
            "after an abnormal follower jump"
            if jump["kind"] == "follow_up"
            else "of an abnormal follower jump"
        )
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="account",
            subject_id=key,
            window_start=start,
            window_end=end,
            score=score,
            severity=severity,
            members=members,
            evidence={
                "follower_jump_finding": jump["finding"],
                "kind": jump["kind"],
                "silent": len(silent),
                "established_follows": established,
                "silent_share": round(share, 3),
                "fabricated": fabricated(follow=len(silent)),
                **series(model.recent),
                "member_facts": _member_facts(model, members, start, end),
                "explanation": (
                    f"{len(silent)} of the {established} established accounts that followed "
                    f"in {minutes:g} min {when} had shown no other activity "
                    f"({', '.join(cfg.activity_types)}) anywhere lately"
                ),
            },
        )


def _member_facts(
    model: SilentMemory, members: list[str], start: int, end: int
) -> dict[str, dict[str, Any]]:
    """What the records said of the first `MAX_MEMBER_FACTS` members, each field from the
    member's earliest follow in the window [start, end) that carried it."""
    wanted = dict.fromkeys(members[:MAX_MEMBER_FACTS])
    facts: dict[str, dict[str, Any]] = {}
    for ts, account, known in sorted(model.facts, key=_when):
        if start <= ts < end and account in wanted:
            mine = facts.setdefault(account, {})
            for field, value in known.items():
                mine.setdefault(field, value)
    return {m: facts[m] for m in wanted if facts.get(m)}


def _when(fact: tuple[int, str, dict[str, Any]]) -> tuple[int, str]:
    return fact[0], fact[1]


def _order(d: Derived) -> tuple[int, str, str]:
    return d.ts, d.stream, d.event_id


def _stages(cfg: SilentFollowersSettings, build: Build, jumps: FollowerJumpSettings) -> list[Stage]:
    """Who was active lately, then the verdict on follower_jump's flagged windows."""
    return [
        FollowerActivityStage(cfg, jumps.young_account_ms),
        SilentFollowersStage(cfg, build.severity),
    ]


DETECTOR = Detector(
    name="silent_followers",
    settings=SilentFollowersSettings,
    stages=_stages,
    needs=("follower_jump",),  # its windows, and its young accounts (not established)
    consumes=(JUMP_STREAM,),  # its flagged windows
)
