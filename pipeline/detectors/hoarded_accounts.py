"""`hoarded_accounts` (Article 18(8)): accounts registered in bulk that then stay dormant.

Whether a batch's accounts act later is a question about each account's own events,
which no stage keyed by network sees. Two stages after `batch_registration` answer it
through derived streams (`pipeline.core.derived`):

    batch_registration (by network/device) --batch_member, by account-->
    hoarded_watch (by shard of accounts) --dormant_member, by source-->
    hoarded_accounts (by the batch's network or device): the finding

`hoarded_watch` keeps a `models.dormancy.DormancyWatch` per shard: the batch's accounts
until `dormancy_ms` after their batch was found, and who acted lately. It reads the
activity of watched accounts, and remembers for `lookback_ms` that of accounts registered
within it (the events say so with `actor_created_at`; without it, activity before an
account was put on watch is not seen). The distributed runtime routes it only events of
young accounts or of unknown age, so an established account's events cost a comparison. At the
deadline, each account still inactive goes to `hoarded_accounts` under its batch's
source, where a batch's verdicts arrive in one window (they share the deadline): a batch
most of whose accounts never acted is one group finding naming the dormant ones.

Suspected bursts: a source registering far above its normal on as many devices as
accounts is no batch finding (a carrier's promotion looks so), but `batch_registration`
hands its accounts on too, as a suspected burst (records with a `bar`): real people sign
up to use the platform and act within minutes, so a burst nearly all of whose accounts
stay inactive for `suspect_dormancy_ms` (at least `suspect_dormant_share` of them) is a
batch after all, found within the hour.

Score: the batch finding's score, with the rest of the doubt closed in proportion to the
dormant share (`s + (1 - s) * share`), so a dormant batch is more certain than the burst
alone. State: per shard, the watched accounts (at most `max_watched`) and the young ones
active within `lookback_ms`; per source, its verdicts for one window, and its chart.

Evidence: a source's verdicts come once per batch (at its deadline), so its chart
(`evidence.series`) is its latest windows with verdicts: per such window, the dormant
accounts judged, against the fewest that flag a batch of its size
(`max(min_dormant, min_dormant_share * batch_size)`: real sign-ups act, so there is no
usual number of dormant ones to expect, only the bar). The record (`models.recent_windows`,
at most `series_points`) is the source's only state between windows, kept `idle_ttl_ms`;
a finding's last point is its own `dormant`.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

from models.dormancy import DormancyWatch, Watched
from models.recent_windows import remember
from pipeline.contract.events import EVENT_TYPES
from pipeline.contract.findings import Finding, make_finding, severity_of
from pipeline.core.derived import Derived
from pipeline.core.numbers import NonNegativeInt, PositiveInt, PositiveShare
from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.case_evidence import series, source_facts
from pipeline.detectors.registry import Detector, DetectorSettings

MEMBER_STREAM = "batch_member"
DORMANT_STREAM = "dormant_member"


class HoardedAccountsSettings(DetectorSettings):
    """`detectors.hoarded_accounts` in config/lockstep.yaml, which explains each field."""

    dormancy_ms: PositiveInt
    check_every_ms: PositiveInt
    lookback_ms: PositiveInt
    activity_types: list[str]
    shards: PositiveInt
    max_watched: PositiveInt
    min_dormant: PositiveInt
    min_dormant_share: PositiveShare
    suspect_dormancy_ms: PositiveInt
    suspect_dormant_share: PositiveShare
    idle_ttl_ms: PositiveInt
    series_points: NonNegativeInt

    def check(self) -> None:
        where = "detectors.hoarded_accounts"
        if min(self.dormancy_ms, self.suspect_dormancy_ms) < self.check_every_ms:
            raise ConfigError(
                f"{where}: need check_every_ms <= dormancy_ms and suspect_dormancy_ms"
            )
        if self.lookback_ms < self.check_every_ms or self.idle_ttl_ms < self.dormancy_ms:
            raise ConfigError(
                f"{where}: need lookback_ms >= check_every_ms and idle_ttl_ms >= dormancy_ms"
            )
        unknown = set(self.activity_types) - set(EVENT_TYPES)
        if not self.activity_types or unknown:
            raise ConfigError(
                f"{where}: activity_types must name event types, not {sorted(unknown)}"
            )


def _by_ts_key(d: Derived) -> tuple[int, str]:
    return d.ts, d.key


def member_record(finding: Finding, account: str, registered: int, dormancy_ms: int) -> Derived:
    """What `batch_registration` hands the watch for one account its finding named."""
    return watch_record(
        finding.finding_id,
        finding.subject_id,
        account,
        registered,
        size=len(finding.members),
        score=finding.score,
        at=finding.window_end,
        dormancy_ms=dormancy_ms,
    )


def watch_record(
    group: str,
    source: str,
    account: str,
    registered: int,
    *,
    size: int,
    score: float,
    at: int,
    dormancy_ms: int,
    bar: float = 0.0,
) -> Derived:
    """One account of a group (a batch finding, or a suspected burst: `bar` > 0, the
    dormant share that flags it) to watch from `at` for `dormancy_ms`."""
    data: dict[str, Any] = {
        "group": group,
        "source": source,
        "registered": registered,
        "size": size,
        "score": score,
        "deadline": at + dormancy_ms,
    }
    if bar:
        data["bar"] = bar
    return Derived(
        stream=MEMBER_STREAM, key=account, ts=at - 1, event_id=f"{group}/{account}", data=data
    )


class HoardedWatchStage(WholeWindowStage):
    """Accounts of registration batches, watched per shard until their deadline."""

    detector = "hoarded_watch"
    key_field = "actor"  # hashed into a shard by `key_of`
    event_types = frozenset()  # set from the config: the activity that counts
    streams = frozenset({MEMBER_STREAM})

    def __init__(self, cfg: HoardedAccountsSettings) -> None:
        super().__init__(WindowSpec.tumbling(cfg.check_every_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.event_types = frozenset(cfg.activity_types)  # type: ignore[misc]
        self.emits = frozenset({DORMANT_STREAM})
        self._shard_keys = tuple(f"{self.detector}/{i}" for i in range(cfg.shards))
        self._young_ms = max(cfg.dormancy_ms, cfg.suspect_dormancy_ms) + cfg.lookback_ms

    def shard(self, account: str) -> str:
        crc = zlib.crc32(account.encode("utf-8", "surrogatepass"))
        return self._shard_keys[crc % len(self._shard_keys)]

    def key_of(self, event: Any) -> str:
        return self.shard(event.key if event.__class__ is Derived else event.actor)

    def admits(self, event: Any) -> bool:
        """Whether an event can matter here: a member record, or activity of an account
        young enough to be watched (or of unknown age). The distributed runtime routes
        only these; `judge` ignores the rest the same way."""
        if event.__class__ is Derived:
            return True
        created = event.actor_created_at
        return created is None or event.ts - created <= self._young_ms

    def new_model(self) -> DormancyWatch:
        return DormancyWatch()

    def wake_at(self, model: DormancyWatch) -> int | None:
        """The next deadline: its window closes for the shard even if nobody acts."""
        return model.next_deadline()

    def judge(self, events: list[Any], models: Models, start: int, end: int) -> list[Derived]:
        """Watch the window's new members, take off those who acted, hand on the dormant."""
        cfg = self.cfg
        members = sorted((e for e in events if e.__class__ is Derived), key=_by_ts_key)
        for e in members:
            d = e.data
            why = Watched(
                d["group"],
                d["source"],
                d["registered"],
                d["size"],
                d["score"],
                d["deadline"],
                d.get("bar", 0.0),
            )
            watch: DormancyWatch = models.get(self.shard(e.key), create=True)
            watch.watch(e.key, why, cfg.max_watched)
        watched: set[str] = set()
        for key in self._shard_keys:
            watch = models.get(key, create=False)
            if watch is not None and watch.watched:
                watched.update(watch.watched)
        remember = cfg.lookback_ms
        for e in events:  # the stage's per-event work: a set lookup, an attribute or two
            if e.__class__ is Derived:
                continue
            actor = e.actor
            if actor not in watched:
                created = e.actor_created_at
                if created is None or e.ts - created > remember:
                    continue  # not watched, and too old (or of unknown age) to be soon
            models.get(self.shard(actor), create=True).learn(actor, e.ts)
        out: list[Derived] = []
        for key in self._shard_keys:
            watch = models.get(key, create=False)
            if watch is None:
                continue
            for account, why in watch.due(end, cfg.lookback_ms):
                out.append(
                    Derived(
                        stream=DORMANT_STREAM,
                        key=why.source,
                        ts=end - 1,
                        event_id=f"{why.group}/{account}/dormant",
                        data={
                            "account": account,
                            "group": why.group,
                            "source": why.source,
                            "registered": why.registered,
                            "size": why.size,
                            "score": why.score,
                            "bar": why.bar,
                        },
                    )
                )
        return out


class SourceChart(msgspec.Struct, gc=False):
    """A source's latest windows with verdicts as judged (end, dormant, the bar)."""

    recent: bytes | None = None


class HoardedAccountsStage(Stage):
    """The dormancy verdicts of a source's batches, judged together: the finding. A burst
    found over two windows is two batch findings; their verdicts share a deadline window
    and make one finding."""

    detector = "hoarded_accounts"
    key_field = "key"  # where the batch registered (a network prefix or a device)
    event_types = frozenset()
    streams = frozenset({DORMANT_STREAM})

    def __init__(self, cfg: HoardedAccountsSettings, severity: SeveritySettings) -> None:
        """A source is kept past its window only for its chart (`series_points` > 0)."""
        ttl = cfg.idle_ttl_ms if cfg.series_points else cfg.check_every_ms
        super().__init__(WindowSpec.tumbling(cfg.check_every_ms), ttl)
        self.cfg = cfg
        self.severity = severity

    def new_model(self) -> SourceChart | None:
        return SourceChart() if self.cfg.series_points else None

    def new_pane(self) -> list[Derived]:
        return []

    def add(self, pane: list[Derived], event: Derived) -> None:
        pane.append(event)

    def evaluate(
        self,
        key: str,
        model: SourceChart | None,
        panes: list[list[Derived]],
        start: int,
        end: int,
    ) -> Finding | None:
        cfg = self.cfg
        verdicts = sorted((d for pane in panes for d in pane), key=lambda d: d.data["account"])
        if not verdicts:
            return None
        groups = {
            d.data["group"]: (int(d.data["size"]), float(d.data["score"]), d.data.get("bar", 0.0))
            for d in verdicts
        }
        size = max(sum(n for n, _, _ in groups.values()), len(verdicts))
        share = len(verdicts) / size
        # a suspected burst (flagged on volume alone) must be dormant to a higher bar
        suspected = sorted(g for g, (_, _, bar) in groups.items() if bar)
        need = max([cfg.min_dormant_share] + [bar for _, _, bar in groups.values()])
        if model is not None:  # None: a source pickled before its chart, or series_points 0
            bar = max(cfg.min_dormant, need * size)
            model.recent = remember(model.recent, end, len(verdicts), bar, cfg.series_points)
        if len(verdicts) < cfg.min_dormant or share < need:
            return None
        batch_score = max(score for _, score, _ in groups.values())
        score = batch_score + (1.0 - batch_score) * share
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        source = key
        registered = [d.data["registered"] for d in verdicts]
        members = [d.data["account"] for d in verdicts]
        dormancy_ms = cfg.suspect_dormancy_ms if suspected else cfg.dormancy_ms
        hours = dormancy_ms / 3_600_000
        since = "their burst was seen" if suspected else "their batch was found"
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="group",
            subject_id=source,
            window_start=start,
            window_end=end,
            score=score,
            severity=severity,
            members=members,
            evidence={
                "source": source,
                "batch_findings": sorted(set(groups) - set(suspected)),
                "suspected_bursts": suspected,
                "batch_size": size,
                "dormant": len(verdicts),
                "dormant_share": round(share, 3),
                "dormancy_s": dormancy_ms // 1000,
                "first_registered_ts": min(registered),
                "last_registered_ts": max(registered),
                **series(None if model is None else model.recent),
                "member_facts": source_facts(
                    source, dict(zip(members, registered, strict=True)), members
                ),
                "explanation": (
                    f"{len(verdicts)} of the {size} accounts registered together from "
                    f"{source} have shown no activity ({', '.join(cfg.activity_types)}) in "
                    f"the {hours:g} h since {since}"
                ),
            },
        )


DETECTOR = Detector(
    name="hoarded_accounts",
    settings=HoardedAccountsSettings,
    # the watch, then the verdict per batch
    stages=lambda cfg, build: [HoardedWatchStage(cfg), HoardedAccountsStage(cfg, build.severity)],
    consumes=(MEMBER_STREAM,),  # batch_registration's findings' accounts
)
