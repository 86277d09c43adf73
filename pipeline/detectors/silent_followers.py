"""`silent_followers` (Article 12): the new followers of an account who do next to nothing
but follow, and the accounts whose new followers are mostly such.

Bought followers follow and do little else; real followers click, repost and comment. A
slow drip of aged, bought accounts from many networks and devices looks like real people
follow by follow, and on a stream that starts while it runs the followed account has no
history to be abnormal against; what gives it away is how little its followers do, next
to how much the platform's followers usually do. That is a question about the
follower's own events, which no stage keyed by the followed account sees, so two stages
beside `follower_jump` answer it through derived streams (`pipeline.core.derived`):

    follower_activity (by shard of accounts): how many actions each account took lately
        (`models.activity.ActivityCounts`), the platform's usual rate among followers
        (`models.activity_norm.ActivityNorm`, a prior that needs no history of the
        followed account), and per window, for each followed account, its new
        established followers with their actions before the follow, then, for
        `observe_ms`, their actions after it
        --silent_follow, by the followed account-->
    follower_jump (by followed account): its flagged windows
        --jump_window, by the followed account-->
    silent_followers (by followed account): once a follower has been watched for
        `observe_ms`, it is low-activity when its actions around the follow are at most
        `low_share` of the median follower's over the same span. Over the last
        `accumulate_ms` of follows, when most established new followers are low-activity
        or followed from a device or address a low-activity one used, and they are many
        (`min_silent_alone`; `min_silent` within `follow_up_ms` of a follower_jump flag),
        a finding names them, and the followers still watched that share a device or
        address with a low-activity one (each record carries the follows that started
        being watched in its window, with their device and address). The low-activity
        ones on a device and address of their own are named only if they, too, are far
        more than the platform's followers explain, and only once `follower_activity`
        has watched them on for `settle_ms` and found them still quiet: where a farm
        shares its phones and proxies, the quiet ones on their own are mostly the
        account's quiet readers, and a reader wakes up sooner or later.

When the input ends (a replay of a slice of the logs), the followers still watched are
judged on what was seen of them: a drip running to the slice's end is named to its end.

Only a follower's own choice counts (platform-made follows are judged, and named when
they share a device or address with a farm's, but are no evidence), and only established
accounts (a freshly created account has had no time to be active: `follower_jump` judges
fresh crowds by their age).

Score: the share of low-activity followers; after a follower_jump flag, the jump's score
with the rest of the doubt closed in proportion to that share. State: per shard, the
accounts' actions of the last `lookback_ms` by generation, the followers still watched
and the shard's norm; per followed account, its followers of the last `memory_ms`.

Evidence: what the follows say of the members (`evidence.member_facts`). Only
`follower_activity` holds the follows, so each `silent_follow` record carries the facts
of its first `MAX_MEMBER_FACTS` followers by account id (`case_evidence.member_facts`
over the record's follows); `silent_followers` keeps them with the follows, for as long,
and takes each field from a member's earliest follow in the judged span that carries it.
A finding also charts the account's latest judged windows (`evidence.series`): its
low-activity followers against the fewest that flag it, at most `series_points`.
"""

from __future__ import annotations

import math
import statistics
import zlib
from collections import Counter, defaultdict, deque
from itertools import chain, compress, takewhile
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

from models.activity import ActivityCounts
from models.activity_norm import ActivityNorm
from models.follower_composition import PLATFORM_FLOWS
from models.recent_windows import remember, restate
from pipeline.contract.events import EVENT_TYPES
from pipeline.contract.findings import Finding, fabricated, make_finding, severity_of
from pipeline.core.derived import Derived
from pipeline.core.numbers import NonNegative, NonNegativeInt, PositiveInt, PositiveShare
from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.case_evidence import MAX_MEMBER_FACTS, member_facts, series
from pipeline.detectors.registry import Build, Detector, DetectorSettings

if TYPE_CHECKING:
    from pipeline.detectors.follower_jump import FollowerJumpSettings

SILENT_STREAM = "silent_follow"
FOLLOW = "follow"
REGISTER = "register"
HOUR_MS = 3_600_000
_actor = attrgetter("actor")
_row = itemgetter(0, 1)  # a judged follow's (ts, follower)
_order_of_event = attrgetter("ts", "event_id")
_type = attrgetter("type")
JUMP_STREAM = "jump_window"


class SilentFollowersSettings(DetectorSettings):
    """`detectors.silent_followers` in config/lockstep.yaml, which explains each field."""

    activity_types: list[str]
    shards: PositiveInt
    window_ms: PositiveInt
    judge_ms: PositiveInt
    generation_ms: PositiveInt
    lookback_ms: PositiveInt
    observe_ms: PositiveInt
    settle_ms: PositiveInt
    awake_share: PositiveShare
    norm_min_span_ms: PositiveInt
    norm_followers: PositiveInt
    norm_per_account: PositiveInt
    low_share: PositiveShare
    shared_low_share: PositiveShare
    accumulate_ms: PositiveInt
    follow_up_ms: NonNegativeInt
    memory_ms: PositiveInt
    min_silent: PositiveInt
    min_silent_alone: PositiveInt
    min_silent_share: PositiveShare
    min_excess_z: NonNegative
    renotify_new: PositiveInt
    max_follows: PositiveInt
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
        if self.generation_ms > self.lookback_ms:
            raise ConfigError(f"{where}: need generation_ms <= lookback_ms")
        if not self.observe_ms <= self.settle_ms <= self.lookback_ms + self.observe_ms:
            raise ConfigError(
                f"{where}: need observe_ms <= settle_ms <= lookback_ms + observe_ms "
                "(the actions counted reach that far back)"
            )
        if self.memory_ms < jumps.window_ms:
            raise ConfigError(f"{where}: memory_ms must cover follower_jump.window_ms")
        needed = self.observe_ms + self.accumulate_ms + self.window_ms + self.judge_ms
        if self.memory_ms < needed or self.idle_ttl_ms < self.window_ms:
            raise ConfigError(
                f"{where}: memory_ms must cover observe_ms + accumulate_ms + window_ms + "
                "judge_ms, and idle_ttl_ms window_ms"
            )


def jump_record(
    account: str,
    start: int,
    end: int,
    finding_id: str,
    score: float,
    kind: str,
) -> Derived:
    """What `follower_jump` hands `silent_followers` for a window [start, end) of an
    account it flagged (`kind` burst or level_shift)."""
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
        },
    )


def counts_as_established(event: Any, young_ms: int) -> bool:
    """A follow that is the follower's own choice, by an account not freshly created (or
    of unknown age): the follows whose followers' silence is evidence."""
    return event.origin not in PLATFORM_FLOWS and by_established(event, young_ms)


def by_established(event: Any, young_ms: int) -> bool:
    """A follow by an account not freshly created (or of unknown age), whoever made it."""
    created = event.actor_created_at
    return created is None or event.ts - created >= young_ms


Row = tuple[int, str, bool, str, str, int, float]
"""(ts, follower, low, device, address, actions, the usual follower's actions over the same
span): a follower judged, as a record carries it."""


class ActivityFold:
    """A pane's (or a batch's) accounts active in it, with their actions, its follows,
    and the accounts registered in it."""

    __slots__ = ("active", "follows", "registered")

    def __init__(self, active: Counter[str], follows: list[Any], registered: Counter[str]) -> None:
        self.active = active
        self.follows = follows
        self.registered = registered


class ActivityModel:
    """What `follower_activity` keeps: each account's recent actions, and per shard since
    when it has been watched, its followers being watched (shard -> [(first generation
    counted, follow)]) and its norm of follower activity."""

    __slots__ = ("counts", "follows", "norms", "registered", "settling", "since", "watched")

    def __init__(self, generation_ms: int, keep_ms: int) -> None:
        self.counts = ActivityCounts(generation_ms, keep_ms)
        self.follows = ActivityCounts(generation_ms, keep_ms)  # follows made, per account
        # a follow need not say its follower's age: one seen registering is young
        self.registered = ActivityCounts(generation_ms, keep_ms)
        self.since: dict[str, int] = {}  # shard -> the start of its first window
        self.watched: dict[str, deque[tuple[int, Any]]] = {}  # oldest follow first
        self.norms: dict[str, ActivityNorm] = {}  # shard -> its followers lately
        # shard -> the low-activity followers watched on to `settle_ms`, oldest first:
        # (follow ts, follower, followed account, the usual follower's actions per hour)
        self.settling: dict[str, deque[tuple[int, str, str, float]]] = {}

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        self.settling = {}  # (pickled before followers were watched on)
        for name, value in state[1].items():
            setattr(self, name, value)


class FollowerActivityStage(WholeWindowStage):
    """Per shard of accounts: how active each was lately; the new followers watched out,
    each judged low-activity or not against the shard's recent followers.

    The distributed runtime keeps a model per shard (its state goes to a table per key)
    and closes a shard's window when the shard had events in it; the embedded runtime
    keeps one model for every account (`ActivityCounts` answers per account, so
    splitting it changes nothing), with the watched followers and the norms per shard,
    and judges a shard's followers in the windows the shard had events in, as the
    distributed runtime does."""

    detector = "follower_activity"
    key_field = "actor"  # hashed into a shard by `key_of`
    event_types = frozenset()  # follows, and the activity types of the config
    folds = True
    EVERYONE = "follower_activity/all"  # the embedded runtime's one key

    def __init__(self, cfg: SilentFollowersSettings, young_ms: int) -> None:
        super().__init__(WindowSpec.tumbling(cfg.window_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.young_ms = young_ms
        kinds = {FOLLOW, REGISTER, *cfg.activity_types}
        self.event_types = frozenset(kinds)  # type: ignore[misc]
        self.emits = frozenset({SILENT_STREAM})
        self._keys = tuple(f"{self.detector}/{i}" for i in range(cfg.shards))
        self._shard_of: dict[str, str] = {}

    def shard(self, account: str) -> str:
        keys = self._keys
        return keys[zlib.crc32(account.encode("utf-8", "surrogatepass")) % len(keys)]

    def key_of(self, event: Any) -> str:
        return self.shard(event.actor)

    def new_model(self) -> ActivityModel:
        cfg = self.cfg
        # a follower's actions are counted from lookback_ms before its follow to the end
        # of its watch, in whole generations
        keep = cfg.lookback_ms + cfg.observe_ms + cfg.window_ms + cfg.generation_ms
        return ActivityModel(cfg.generation_ms, keep)

    def new_pane(self) -> ActivityFold:
        return ActivityFold(Counter(), [], Counter())

    def add(self, pane: ActivityFold, event: Any) -> None:
        kind = event.type
        if kind == FOLLOW:
            pane.follows.append(event)
        elif kind == REGISTER:
            pane.registered[event.actor] += 1
        else:
            pane.active[event.actor] += 1

    def fold(
        self, events: list[Any], kind: str | None = None, into: ActivityFold | None = None
    ) -> ActivityFold:
        """A batch as its active accounts and its follows (what `add` makes, event by
        event, in the distributed runtime), in C, added to `into` if given. The embedded
        runtime hands a stage its events a type at a time (`kind`): one pass folds them;
        a batch of mixed or unknown types takes one more to tell follows from the rest."""
        fold = ActivityFold(Counter(), [], Counter()) if into is None else into
        if kind == FOLLOW:
            fold.follows.extend(events)
        elif kind == REGISTER:
            fold.registered.update(map(_actor, events))
        elif kind is not None:
            fold.active.update(map(_actor, events))
        else:
            kinds = list(map(_type, events))
            fold.follows.extend(compress(events, map(FOLLOW.__eq__, kinds)))
            fold.registered.update(compress(map(_actor, events), map(REGISTER.__eq__, kinds)))
            acting = [k != FOLLOW and k != REGISTER for k in kinds]
            fold.active.update(compress(map(_actor, events), acting))
        return fold

    def evaluate(
        self, key: str, model: ActivityModel, panes: list[ActivityFold], start: int, end: int
    ) -> list[Derived]:
        """One shard's window (the distributed runtime)."""
        model.since.setdefault(key, start)
        return self._judge(panes, model, start, end, {key})

    def judge(
        self, folds: list[ActivityFold], models: Models, start: int, end: int
    ) -> list[Derived]:
        """Every shard's window at once (the embedded runtime)."""
        model: ActivityModel = models.get(self.EVERYONE, create=True)
        shard_of = self._shard_of
        here: set[str] = set()
        every = len(self._keys)
        actors = chain.from_iterable(
            chain(f.active, f.registered, map(_actor, f.follows)) for f in folds
        )
        for actor in actors:
            shard = shard_of.get(actor)
            if shard is None:
                shard = shard_of[actor] = self.shard(actor)
            here.add(shard)
            if len(here) == every:
                break  # every shard had events in the window (a busy stream: soon)
        if len(shard_of) > 64 * 4096:  # a cache, not a memory
            shard_of.clear()
        for shard in here:
            model.since.setdefault(shard, start)
        return self._judge(folds, model, start, end, here)

    def _judge(
        self,
        folds: list[ActivityFold],
        model: ActivityModel,
        start: int,
        end: int,
        shards: set[str],
    ) -> list[Derived]:
        """Count the window's actions, start watching its established new followers, and
        judge those of `shards` (those with events in the window) watched out."""
        cfg = self.cfg
        active: Counter[str] = Counter()
        registered: Counter[str] = Counter()
        for fold in folds:
            active.update(fold.active)
            registered.update(fold.registered)
        model.counts.learn(active, start)
        model.follows.learn(
            Counter(map(_actor, chain.from_iterable(f.follows for f in folds))), start
        )
        if registered or model.registered.generations:
            model.registered.learn(registered, start)
        one = len(shards) == 1
        started: dict[tuple[str, str], list[tuple[int, str, str, str]]] = defaultdict(list)
        new = sorted(chain.from_iterable(f.follows for f in folds), key=_order_of_event)
        for e in new:  # in time order: a shard's watched followers stay so
            if by_established(e, self.young_ms) and not (
                e.actor_created_at is None and model.registered.since(e.actor, 0)
            ):
                shard = next(iter(shards)) if one else self._shard_of_actor(e.actor)
                since = model.since.get(shard, start)
                first = max(e.ts - cfg.lookback_ms, since)
                first -= first % cfg.generation_ms  # counts are kept by whole generation
                watching = model.watched.get(shard)
                if watching is None:
                    watching = model.watched[shard] = deque()
                watching.append((max(first, since), e))
                # on its way: where it followed from, for the followers it shares them with
                started[(e.target, shard)].append((e.ts, e.actor, e.device_id or "", e.ip or ""))
        rows: dict[tuple[str, str], list[Row]] = defaultdict(list)
        platform: dict[tuple[str, str], list[Row]] = defaultdict(list)
        theirs: dict[tuple[str, str], list[Any]] = defaultdict(list)
        shares: dict[str, float | None] = {}
        settled: dict[tuple[str, str], list[tuple[int, str, bool]]] = defaultdict(list)
        for shard in sorted(shards):
            shares[shard] = self._watched_out(model, shard, end, rows, platform, theirs)
            self._settled(model, shard, end, settled)
        out: list[Derived] = []
        keys = rows.keys() | started.keys() | platform.keys() | settled.keys()
        for target, shard in sorted(keys):
            judged = rows.get((target, shard), [])
            made = platform.get((target, shard), [])
            low = sorted({a for _, a, is_low, *_ in chain(judged, made) if is_low})
            out.append(
                Derived(
                    stream=SILENT_STREAM,
                    key=target,
                    ts=end - 1,
                    event_id=f"{target}/{shard}/{start}",
                    data={
                        # [(ts, follower, low-activity, device or "", address or "",
                        #   actions, the usual follower's over the same span)]
                        "judged": sorted(judged, key=_row),
                        # the same, of follows the platform made: no evidence, but named
                        # when they share a device or address with a low-activity follower
                        "platform": sorted(made, key=_row),
                        # [(ts, follower, device, address)]: watched from now on
                        "started": sorted(started.get((target, shard), []), key=_row),
                        # [(ts, follower, awake)]: low-activity followers watched on to
                        # settle_ms; awake ones took more than a low-activity one would
                        "settled": sorted(settled.get((target, shard), []), key=_row),
                        "low_share": shares[shard],  # the shard's, before these
                        # what the follows say of the first low followers by id
                        "facts": member_facts(theirs[(target, shard)], low) if low else {},
                    },
                )
            )
        return out

    def _shard_of_actor(self, actor: str) -> str:
        shard = self._shard_of.get(actor)
        return self.shard(actor) if shard is None else shard

    def _watched_out(
        self,
        model: ActivityModel,
        shard: str,
        end: int,
        rows: dict[tuple[str, str], list[Row]],
        platform: dict[tuple[str, str], list[Row]],
        theirs: dict[tuple[str, str], list[Any]],
    ) -> float | None:
        """Judge the shard's followers watched for `observe_ms`: low-activity when their
        actions from `lookback_ms` before the follow to now are at most `low_share` of
        the median recent follower's over the same span (into `rows`, or `platform` for
        follows the platform made, which teach no norm). Returns the shard's share of
        low-activity followers before them."""
        cfg = self.cfg
        watching = model.watched.get(shard)
        if not watching:
            return None
        due = end if self.ending else end - cfg.observe_ms  # (the input ended: all now)
        if watching[0][1].ts >= due:
            return None
        done = list(takewhile(lambda w: w[1].ts < due, watching))
        norm = model.norms.get(shard)
        if norm is None:
            norm = model.norms[shard] = ActivityNorm(cfg.norm_followers, cfg.norm_per_account)
        judged = []  # (follow, its first generation counted, actions, span in hours)
        for first, e in done:
            if model.follows.since(e.actor, first) > cfg.max_follows:
                continue  # follows spread over many accounts: no evidence about this one
            judged.append((e, first, model.counts.since(e.actor, first), (end - first) / HOUR_MS))
        teach = cfg.norm_min_span_ms + cfg.observe_ms  # watched long enough to have a rate
        usual, share = norm.rate, norm.low_share
        if usual is None:  # the shard's first minutes: its first followers set the norm
            rates = [
                n / h
                for e, first, n, h in judged
                if end - first >= teach and e.origin not in PLATFORM_FLOWS
            ]
            if not rates:
                return None  # nobody watched long enough yet: they all wait for a norm
            usual = statistics.median(rates)
        for _ in done:
            watching.popleft()
        learned = []
        for e, first, actions, span_h in judged:
            low = actions <= cfg.low_share * usual * span_h
            made = e.origin in PLATFORM_FLOWS
            into = platform if made else rows
            row = (e.ts, e.actor, low, e.device_id or "", e.ip or "", actions, usual * span_h)
            into[(e.target, shard)].append(row)
            if low:
                theirs[(e.target, shard)].append(e)
                if not made:  # watched on: a quiet reader wakes up sooner or later
                    settling = model.settling.get(shard)
                    if settling is None:
                        settling = model.settling[shard] = deque()
                    settling.append((e.ts, e.actor, e.target, usual))
            if end - first >= teach and not made:
                learned.append((e.target, actions / span_h, low))
        norm.learn(learned)
        return share

    def _settled(
        self,
        model: ActivityModel,
        shard: str,
        end: int,
        into: dict[tuple[str, str], list[tuple[int, str, bool]]],
    ) -> None:
        """The shard's low-activity followers watched on for `settle_ms` after their follow
        (all of them when the input ended): awake when the actions they took since the
        follow are more than `awake_share` of the usual follower's over that span (a
        quiet reader reads again; a bought account stays quiet)."""
        cfg = self.cfg
        settling = model.settling.get(shard)
        if not settling:
            return
        due = end if self.ending else end - cfg.settle_ms
        generation = cfg.generation_ms
        while settling and settling[0][0] < due:
            ts, follower, target, usual = settling.popleft()
            first = ts - ts % generation  # counts are kept by whole generation
            actions = model.counts.since(follower, first)
            awake = actions > cfg.awake_share * usual * (end - first) / HOUR_MS
            into[(target, shard)].append((ts, follower, awake))


Judged = tuple[int, str, bool, float | None, str, str, int | None, float | None]
"""(ts, follower, low, share, device, address, actions, usual): a follower judged, its
device and address as its follow gave them ('' when it gave none), its actions and the
usual follower's over the same span (None: judged before records carried them)."""


class SilentMemory:
    """A followed account's followers of the last `memory_ms`, judged: (ts, follower,
    low-activity, the share of low-activity followers on their shard then, its device and
    address or ''); those still watched ((ts, follower, device, address), until judged);
    what their records said of the low ones ((ts, follower, facts)); its latest
    follower_jump flag ((window end, finding, score)); its latest judged windows, for a
    chart; the followers its findings named (follower -> when), while they are
    remembered; the followers the platform made, judged (no evidence, but named when
    they share a device or address with a low-activity one); the low-activity followers
    on a device and address of their own that a case would name, waiting to be settled
    (follower -> (follow ts, the case's score)); and the low-activity followers settled
    (follower -> (follow ts, awake))."""

    __slots__ = (
        "facts", "judged", "jump", "pending", "platform", "recent", "reported", "settled",
        "started",
    )  # fmt: skip

    def __init__(self) -> None:
        self.judged: list[Judged] = []
        self.facts: list[tuple[int, str, dict[str, Any]]] = []
        self.jump: tuple[int, str, float] | None = None
        self.recent: bytes | None = None
        self.reported: dict[str, int] = {}
        self.started: list[tuple[int, str, str, str]] = []
        self.platform: list[Judged] = []
        self.pending: dict[str, tuple[int, float]] = {}
        self.settled: dict[str, tuple[int, bool]] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        state = self.judged, self.facts, self.jump, self.recent, self.reported
        return (*state, self.started, self.platform, self.pending, self.settled, "judged")

    def __setstate__(self, state: Any) -> None:
        self.judged, self.facts, self.jump, self.recent, self.reported = [], [], None, None, {}
        self.started, self.platform, self.pending, self.settled = [], [], {}, {}
        if state[0] is None:  # pickled before the facts: (None, {"follows": [...]})
            self.judged = [_whole((ts, a, True, None)) for ts, a in state[1]["follows"]]
        elif state[-1] != "judged":  # (silent follows, facts[, chart]): silent = low
            self.judged = [_whole((ts, a, True, None)) for ts, a in state[0]]
            self.facts = state[1]
            self.recent = state[2] if len(state) > 2 else None
        else:
            judged, self.facts, self.jump, self.recent, self.reported = state[:5]
            self.started = state[5] if len(state) > 6 else []  # (before the watched ones)
            made = state[6] if len(state) > 7 else []  # (before platform follows)
            if len(state) > 9:  # (before followers were settled)
                self.pending, self.settled = state[7], state[8]
            self.judged = [_whole(j) for j in judged]
            self.platform = [_whole(j) for j in made]


class SilentFollowersStage(Stage):
    """Per followed account: its new followers, once watched out, over the last
    `accumulate_ms` of follows: flagged when most are low-activity, and far more than
    the platform's followers at the time."""

    detector = "silent_followers"
    key_field = "key"  # the followed account
    event_types = frozenset()
    streams = frozenset({SILENT_STREAM, JUMP_STREAM})

    def __init__(self, cfg: SilentFollowersSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec.tumbling(cfg.judge_ms), cfg.memory_ms)
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
        fresh = 0
        for d in sorted((d for pane in panes for d in pane), key=_order):
            if d.stream == SILENT_STREAM:
                fresh += self._take(model, d.data)
            elif d.data["kind"] != "follow_up":  # (records written before: flags only)
                model.jump = (int(d.data["window_end"]), d.data["finding"], d.data["score"])
        cfg = self.cfg
        horizon = end - cfg.memory_ms
        model.judged = [j for j in model.judged if j[0] >= horizon]
        if model.platform:
            model.platform = [j for j in model.platform if j[0] >= horizon]
        if model.facts:
            pending = model.pending  # (described when named, once settled)
            model.facts = [f for f in model.facts if f[0] >= horizon or f[1] in pending]
        if model.reported:
            model.reported = {a: t for a, t in model.reported.items() if t >= horizon}
        settling = horizon - cfg.settle_ms  # (the followers waiting to settle, and settled)
        if model.pending:
            model.pending = {a: p for a, p in model.pending.items() if p[0] >= settling}
        if model.settled:  # (kept for the followers waiting, or that may yet wait)
            pending = model.pending
            model.settled = {
                a: s for a, s in model.settled.items() if s[0] >= horizon or a in pending
            }
        # follows made before `until` have all been watched out by now (or the input
        # ended, and they were judged on what was seen of them)
        until = end if self.ending else end - cfg.observe_ms - cfg.window_ms
        if model.started:
            model.started = [r for r in model.started if r[0] >= until]
        if not fresh:
            return []
        found = self._judge(key, model, until - cfg.accumulate_ms, until, end)
        if self.ending and model.pending:  # the rest of those settled: no later case
            taken = {f.window_start for f in found}
            found += self._settled_findings(key, model, _ripe(model), end, taken)
        return found

    def _bar(self, followers: int, fewest: int, usual: float | None) -> float:
        """The fewest low-activity followers, of `followers`, that are a campaign's: at
        least `fewest` and `min_silent_share` of them, and (with the platform's share
        `usual` known) far more than the platform's followers at the time."""
        cfg = self.cfg
        bar = max(fewest, cfg.min_silent_share * followers)
        if usual is not None:
            expected = usual * followers
            sd = math.sqrt(max(expected * (1.0 - usual), 1.0))
            bar = max(bar, expected + cfg.min_excess_z * sd)
        return bar

    def _settled_findings(
        self, key: str, model: SilentMemory, ripe: list[str], now: int, taken: set[int]
    ) -> list[Finding]:
        """The followers on a device and address of their own that an earlier case of the
        account left to settle and that stayed quiet: named now, though its latest
        followers make no case (the drip has ended, or the input has), `max_members` to
        a finding (`taken`: the window starts of the account's findings at `now`)."""
        cfg = self.cfg
        fresh = [a for a in ripe if a not in model.reported]
        need = 1 if self.ending else cfg.renotify_new  # the fewest that flag
        if len(fresh) < need:
            return []  # (named once enough have settled, as a case is said again)
        found = []
        for at in range(0, len(fresh), cfg.max_members):
            members = fresh[at : at + cfg.max_members]
            cases = [model.pending[a] for a in members]
            score = max(score for _, score in cases)
            severity = severity_of(score, self.severity)
            if severity is None:
                continue  # (still waiting: named by a case that scores)
            for a in members:
                del model.pending[a]
            since, until = min(ts for ts, _ in cases), max(ts for ts, _ in cases) + 1
            start = since
            while start in taken:  # one id per finding: (account, window start, end)
                start += 1
            taken.add(start)
            model.reported.update((a, now) for a in members)
            chart = restate(model.recent, now, len(members), need, cfg.series_points)
            found.append(
                make_finding(
                    detector=self.detector,
                    article=cfg.article,
                    subject_type="account",
                    subject_id=key,
                    window_start=start,
                    window_end=now,
                    score=score,
                    severity=severity,
                    members=members,
                    evidence={
                        "follows_from": since,
                        "follows_until": until,
                        "follower_jump_finding": None,
                        "kind": "settled",
                        "silent": len(members),
                        "settle_ms": cfg.settle_ms,
                        "bar": need,
                        "fabricated": fabricated(follow=len(members)),
                        **series(chart),
                        "member_facts": _member_facts(model, members, since, until),
                        "explanation": (
                            f"{len(members)} established accounts that followed on a device "
                            "and address of their own, low-activity followers of a case made "
                            "earlier against this account, stayed quiet for "
                            f"{cfg.settle_ms / 60_000:g} min after their follow"
                        ),
                    },
                )
            )
        return found

    @staticmethod
    def _take(model: SilentMemory, data: dict[str, Any]) -> int:
        """A `silent_follow` record: followers watched out, and facts of the low ones."""
        share = data.get("low_share")
        judged = [
            (int(ts), str(a), bool(low), share, *_seen_on(where))
            for ts, a, low, *where in data.get("judged", ())
        ]
        model.judged.extend(judged)
        made = [
            (int(ts), str(a), bool(low), share, *_seen_on(where))
            for ts, a, low, *where in data.get("platform", ())
        ]
        model.platform.extend(made)
        started = [
            (int(ts), str(a), *_seen_on(where)[:2]) for ts, a, *where in data.get("started", ())
        ]
        model.started.extend(started)
        settled = data.get("settled", ())
        for ts, a, awake in settled:
            model.settled[str(a)] = (int(ts), bool(awake))
        facts = data.get("facts") or {}
        if facts:
            first: dict[str, int] = {}
            for ts, a, *_ in chain(judged, made):
                first[a] = min(first.get(a, ts), ts)
            model.facts.extend((first[a], a, known) for a, known in facts.items() if a in first)
        return len(judged) + len(made) + len(started) + len(settled)

    def _judge(
        self, key: str, model: SilentMemory, since: int, until: int, now: int
    ) -> list[Finding]:
        """The followers of [since, until), judged once watched: findings at `now`."""
        cfg = self.cfg
        span = [j for j in model.judged if since <= j[0] < until]
        followers = {j[1] for j in span}
        established = len(followers)
        low = sorted({j[1] for j in span if j[2]})
        shares = [j[3] for j in span if j[3] is not None]
        usual = sum(shares) / len(shares) if shares else None  # the platform's, then
        jump = model.jump
        after_jump = jump is not None and jump[0] + cfg.follow_up_ms >= since
        fewest = cfg.min_silent if after_jump else cfg.min_silent_alone
        bar = self._bar(established, fewest, usual)
        # followers on a device or address that a low-activity follower of the account
        # also used: a farm's phones and proxies follow in turns, and a member that also
        # clicks is one too (counted with the low ones); so is one still watched (a
        # drip's latest follows: named, not counted), and so is one the platform made
        sharing: list[str] = []
        places: list[dict[str, Seen]] = []  # the devices and addresses several used
        if low:
            seen = [(j[1], j[4], j[5], j[6], j[7]) for j in chain(model.judged, model.platform)]
            seen += [(a, device, ip, None, None) for _, a, device, ip in model.started]
            places = _shared_places(seen)
            lows = {j[1] for j in model.judged if j[2]}
            sharing = _sharers(places, lows, cfg.shared_low_share)
        suspect = len(low) + sum(a in followers for a in sharing)
        model.recent = remember(model.recent, now, suspect, bar, cfg.series_points)
        if usual is None or not low or suspect < bar:
            ripe = _ripe(model) if model.pending else []
            return self._settled_findings(key, model, ripe, now, set()) if ripe else []
        # The case is made; its members are named by what they share. The low-activity
        # followers who share no device or address with another follower are named only
        # if they too are far more than the platform's followers at the time explain,
        # and only once they have stayed quiet for `settle_ms`: where the farm's accounts
        # share their phones and proxies, the quiet ones on their own are mostly the
        # account's quiet readers, and a reader wakes up sooner or later.
        alone = followers.difference(*places)
        alone_low = [a for a in low if a in alone]
        alone_named = len(alone_low) >= self._bar(len(alone), fewest, usual)
        share = suspect / max(established, 1)
        score = share if not after_jump else jump[2] + (1.0 - jump[2]) * share  # type: ignore[index]
        held = bool(model.reported or model.pending)  # a case holds followers already
        if alone_named:
            when = {j[1]: j[0] for j in span}
            for a in alone_low:
                if a not in model.reported and a not in model.pending:
                    model.pending[a] = (when[a], score)
        nameable = [a for a in low if a not in alone]
        shared_low = set(nameable)
        nameable += [a for a in _ripe(model) if a not in shared_low]
        named = model.reported
        new = [a for a in nameable if a not in named]
        fresh = new + [a for a in sharing if a not in named]
        if held and len(fresh) < (1 if self.ending else cfg.renotify_new):
            return []  # a case holds them already: said again once enough are new
        severity = severity_of(score, self.severity)
        if severity is None:
            return []
        members = (fresh + [a for a in nameable if a in named])[: cfg.max_members]  # new first
        minutes = (until - since) / 60_000
        named.update((a, now) for a in members)
        described = since  # (members that settled followed before the span)
        for a in members:
            case = model.pending.pop(a, None)
            if case is not None:
                described = min(described, case[0])
        when = "after an abnormal follower jump" if after_jump else "no history needed"
        return [
            make_finding(
                detector=self.detector,
                article=cfg.article,
                subject_type="account",
                subject_id=key,
                window_start=described,  # (its members that settled followed earlier)
                window_end=now,  # when the last of them had been watched: the finding's time
                score=score,
                severity=severity,
                members=members,
                evidence={
                    "follows_from": described,
                    "follows_until": until,
                    "follower_jump_finding": jump[1] if after_jump else None,  # type: ignore[index]
                    "kind": "follow_up" if after_jump else "composition",
                    "silent": len(low),
                    "sharers": len(sharing),  # on a device or address a silent one used
                    "silent_alone": len(alone_low),  # on a device and address of their own
                    "silent_alone_named": alone_named,  # (once settled)
                    "settling": len(model.pending),  # to be named once settled
                    "suspect": suspect,  # the silent and the judged sharers: against the bar
                    "established_follows": established,
                    "silent_share": round(len(low) / max(established, 1), 3),
                    "suspect_share": round(share, 3),  # the score's share, before any jump
                    "platform_silent_share": round(usual, 3),
                    "bar": round(bar, 2),  # the fewest that flag: the chart's expected
                    "fabricated": fabricated(follow=len(low)),
                    **series(model.recent),
                    "member_facts": _member_facts(model, members, described, until),
                    "explanation": (
                        f"{len(low)} of the {established} established accounts that followed in "
                        f"{minutes:g} min ({when}) took at most {cfg.low_share:.0%} of the usual "
                        f"follower's actions ({', '.join(cfg.activity_types)}) in the hours "
                        f"around their follow, where {usual:.0%} of the platform's followers do"
                        + (
                            f"; {len(sharing)} more followed from a device or address "
                            "one of them used"
                            if sharing
                            else ""
                        )
                        + (
                            f"; the {len(alone_low)} of them on a device and address of their own "
                            "are not named: no more of those are quiet than the platform's "
                            "followers are"
                            if alone_low and not alone_named
                            else ""
                        )
                        + (
                            f"; {len(model.pending)} on a device and address of their own are "
                            f"named once they have stayed quiet for {cfg.settle_ms / 60_000:g} "
                            "min after their follow"
                            if model.pending
                            else ""
                        )
                    ),
                },
            )
        ]


def _ripe(model: SilentMemory) -> list[str]:
    """The followers waiting to be settled that stayed quiet, by id; those that woke up
    are forgotten (a quiet reader after all)."""
    ripe = []
    for a in sorted(model.pending):
        settled = model.settled.get(a)
        if settled is None:
            continue
        if settled[1]:
            del model.pending[a]
        else:
            ripe.append(a)
    return ripe


def _seen_on(where: list[Any]) -> tuple[str, str, int | None, float | None]:
    """A record row's device, address, actions and the usual follower's ('' or None for
    what it lacks: rows written before)."""
    device = str(where[0]) if where else ""
    address = str(where[1]) if len(where) > 1 else ""
    if len(where) < 4:
        return device, address, None, None
    return device, address, int(where[2]), float(where[3])


def _whole(j: tuple[Any, ...]) -> Judged:
    """A judged follower as kept before it had a device, an address or actions: the
    first four fields, then '' or None for each it lacks."""
    return j if len(j) >= 8 else (*j, *("", "", None, None)[len(j) - 4 :])  # type: ignore[return-value]


Seen = tuple[str, str, str, int | None, float | None]
"""(follower, device, address, actions, usual): '' or None for what is not known."""


def _sharers(places: list[dict[str, Seen]], low: set[str], low_share: float) -> list[str]:
    """Of the followers on `places` (`_shared_places`), those not low-activity on a
    farm's device or address: at least half of its followers judged low-activity (two
    or more of them, unless no other was judged), or together they took at most
    `low_share` of what as many usual followers take (a farm's accounts, each clicking
    now and then: what one does is no evidence, but several alike on one phone or proxy
    are). A carrier's address, shared by a cross-section of readers, is not."""
    farmed: set[str] = set()
    for users in places:
        if _farmed(users, low, low_share):
            farmed.update(users)
    return sorted(farmed - low)


def _shared_places(seen: list[Seen]) -> list[dict[str, Seen]]:
    """The followers `seen` of each device and each address that more than one used."""
    on: dict[tuple[int, str], dict[str, Seen]] = defaultdict(dict)
    for row in seen:
        follower, device, address = row[0], row[1], row[2]
        if device:
            on[(0, device)][follower] = row
        if address:
            on[(1, address)][follower] = row
    return [users for users in on.values() if len(users) > 1]


def _farmed(users: dict[str, Seen], low: set[str], low_share: float) -> bool:
    """Whether the followers on one device or address look like a farm's (`_sharers`)."""
    quiet = len(users.keys() & low)
    judged = [(u[3], u[4]) for u in users.values() if u[3] is not None and u[4] is not None]
    busy = len(judged) - quiet  # judged, and not low-activity
    if quiet and (busy <= 0 or (quiet >= 2 and quiet >= busy)):
        return True  # (one quiet reader beside a busy one on a carrier's line: no farm)
    if len(judged) < 2:
        return False
    return sum(n for n, _ in judged) <= low_share * sum(e for _, e in judged)  # type: ignore[misc]


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
