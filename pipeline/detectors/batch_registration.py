"""`batch_registration` (Article 18(8), Article 10): accounts registered in bulk.

Keyed by the registration's source (`models.registration_burst.source_of`): its network
prefix (/24, /48), or its device when it carries no address. Volume is the trigger: a
source registering far more accounts in a window than its own normal (a
`PriorCountBaseline`, so a never-seen prefix is judged against a prior of a sign-up now and
then, and a busy one, a university or a carrier, against its own level). Device
concentration decides: a batch comes from a handful of devices, whereas real people
behind one carrier NAT address sign up on their own phones over the day; or a burst comes
from many addresses of one block (`spread_addresses`) within minutes, which no NAT
explains. The finding is a group (the source) naming the registered accounts as members.

Dormancy: the accounts of a batch usually lie dormant afterwards, but that is a question
about each account's later events, which live under other keys (actors, not networks).
The burst alone decides here, because a hundred accounts from one block on five devices
within minutes is Article 18(8)'s bulk registration whatever they do next; with
`hoarded_accounts` enabled, each finding also hands its accounts on (derived
`batch_member` records, keyed by account) to the stages that watch them for dormancy
(`pipeline.detectors.hoarded_accounts`).

Sliding windows (`window_ms`, a new one every `hop_ms`) see a burst from its first
minutes; a source's model remembers the accounts its findings already named, so a later
window of the same burst names only the newcomers. Cost: registrations are about 2% of
events; a window's are counted per source, and only sources with `min_registrations` get
any more work (a model, created on the first such window; windows below it count as quiet
ones for the source's normal, learned in closed form). State: a model per source that was
ever busy, evicted after `idle_ttl_ms` without a busy window; the accounts it remembers
are those named or handed on as suspected within the last window (at most `max_members`
per finding or burst).
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter
from typing import Any

import msgspec

from models.network import network_of
from models.prior_baseline import PriorCountBaseline
from models.recent_windows import remember
from models.registration_burst import devices_per_registration, source_of
from models.scales import decay_alpha, saturating
from pipeline.contract.findings import Finding, make_finding, severity_of
from pipeline.core.derived import Derived
from pipeline.core.numbers import (
    AtLeastTwo,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    PositiveShare,
)
from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.case_evidence import member_facts, series
from pipeline.detectors.hoarded_accounts import MEMBER_STREAM, member_record, watch_record
from pipeline.detectors.registry import Build, Detector, DetectorSettings, check_hops

_order = attrgetter("ts", "event_id")


class BatchRegistrationSettings(DetectorSettings):
    """`detectors.batch_registration` in config/lockstep.yaml, which explains each field."""

    window_ms: PositiveInt
    hop_ms: PositiveInt
    half_life_ms: PositiveInt
    prior_registrations: NonNegative
    z_threshold: Positive
    clip_z: Positive
    min_registrations: AtLeastTwo
    min_ratio: Positive
    max_devices_per_registration: PositiveShare
    spread_addresses: AtLeastTwo
    max_members: PositiveInt
    idle_ttl_ms: PositiveInt
    series_points: NonNegativeInt

    def check(self) -> None:
        where = "detectors.batch_registration"
        check_hops(where, self.window_ms, self.hop_ms)
        if self.idle_ttl_ms < self.window_ms:
            raise ConfigError(f"{where}: idle_ttl_ms must be >= window_ms")


class SourceModel(msgspec.Struct, gc=False):
    """A source's normal number of registrations per window, and the accounts its
    findings named lately (account -> registration ts), so no window names one twice."""

    baseline: PriorCountBaseline
    named: dict[str, int] = {}
    recent: bytes | None = None  # its latest busy windows as judged (`models.recent_windows`)
    suspected: dict[str, int] = {}  # accounts of its suspected bursts, as `named`


def _forget_before(accounts: dict[str, int], cutoff: int) -> dict[str, int]:
    """Drop the accounts registered before `cutoff` (in place); the same dict."""
    for account in [a for a, ts in accounts.items() if ts < cutoff]:
        del accounts[account]
    return accounts


def _source(event: Any) -> str:
    return source_of(event.ip, event.device_id)


class BatchRegistrationStage(WholeWindowStage):
    detector = "batch_registration"
    key_field = "ip"  # with the device as a fallback: `key_of`
    event_types = frozenset({"register"})

    def __init__(
        self,
        cfg: BatchRegistrationSettings,
        severity: SeveritySettings,
        dormancy_ms: int | None = None,
        suspect: tuple[int, float] | None = None,
    ) -> None:
        """`dormancy_ms`: hand each finding's accounts on to the dormancy watch
        (`hoarded_accounts`), which waits this long for them to act; `suspect`: and the
        accounts of suspected bursts, watched (dormancy_ms, the dormant share that
        flags them) the same way."""
        super().__init__(WindowSpec(cfg.window_ms, cfg.hop_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        self._dormancy_ms = dormancy_ms
        self._suspect = suspect if dormancy_ms is not None else None
        if dormancy_ms is not None:
            self.emits = frozenset({MEMBER_STREAM})
        alpha = decay_alpha(cfg.hop_ms, cfg.half_life_ms)
        self._fresh = PriorCountBaseline.starting_at(
            cfg.prior_registrations, alpha, 0, cfg.z_threshold, cfg.clip_z
        )

    def key_of(self, event: Any) -> str:
        return _source(event)

    def new_model(self) -> SourceModel:
        return SourceModel(self._fresh.__copy__())

    def judge(
        self, events: list[Any], models: Models, start: int, end: int
    ) -> list[Finding | Derived]:
        """Count the window's registrations per source; judge the busy sources."""
        cfg = self.cfg
        sources = list(map(_source, events))
        counts = Counter(sources)
        counts.pop("", None)  # neither address nor device: no source to judge
        t = end // cfg.hop_ms
        findings = []
        busy = sorted(s for s, n in counts.items() if n >= cfg.min_registrations)
        for source in busy:  # quieter windows teach a source's normal as quiet ones
            count = counts[source]
            model: SourceModel = models.get(source, create=True)
            baseline = model.baseline
            score = baseline.update(t, count)
            model.recent = remember(model.recent, end, count, baseline.expected, cfg.series_points)
            if score < 0.5 or count < cfg.min_ratio * max(baseline.expected, 1.0):
                continue
            mine = [e for e, s in zip(events, sources, strict=True) if s == source]
            mine.sort(key=_order)
            share = devices_per_registration((e.actor, e.device_id) for e in mine)
            addresses = len({e.ip for e in mine if e.ip})
            # a crowd behind one carrier NAT address signs up on its own phones; a burst
            # from many addresses of one block within minutes has no such excuse
            spread = addresses >= cfg.spread_addresses
            if share > cfg.max_devices_per_registration and not spread:
                # as many devices as accounts: a carrier's crowd, or a batch on emulated
                # phones; whether they act tells (hoarded_accounts)
                findings.extend(self._suspected(source, model, mine, score, end))
                continue
            baseline.forget_last()  # a batch is not this source's normal
            finding = self._finding(source, model, mine, score, share, start, end, spread)
            if finding is not None:
                findings.append(finding)
                if self._dormancy_ms is not None:
                    registered = {e.actor: e.ts for e in mine}
                    findings.extend(
                        member_record(finding, a, registered[a], self._dormancy_ms)
                        for a in finding.members
                    )
        return findings

    def _suspected(
        self, source: str, model: SourceModel, mine: list[Any], score: float, end: int
    ) -> list[Derived]:
        """A suspected burst's accounts not yet handed on, for the dormancy watch."""
        if self._suspect is None:
            return []
        dormancy_ms, bar = self._suspect
        seen = _forget_before(model.suspected, end - self.cfg.window_ms)
        new = [e for e in mine if e.actor not in seen and e.actor not in model.named]
        new = new[: self.cfg.max_members]
        seen.update((e.actor, e.ts) for e in new)
        group = f"{self.detector}/suspect/{source}/{end}"
        weak = min(score, 0.5)  # volume alone; dormancy has to make the case
        return [
            watch_record(
                group,
                source,
                e.actor,
                e.ts,
                size=len(new),
                score=weak,
                at=end,
                dormancy_ms=dormancy_ms,
                bar=bar,
            )
            for e in new
        ]

    def _finding(
        self,
        source: str,
        model: SourceModel,
        mine: list[Any],
        score: float,
        share: float,
        start: int,
        end: int,
        spread: bool = False,
    ) -> Finding | None:
        cfg = self.cfg
        named = _forget_before(model.named, end - cfg.window_ms)
        new = [e for e in mine if e.actor not in named][: cfg.max_members]
        if not new:
            return None  # the same burst, already reported by an earlier window
        limit = cfg.max_devices_per_registration
        strength = saturating(limit, max(share, 1e-6))  # 0.5 at the limit
        addresses = len({e.ip for e in mine if e.ip})
        if spread:  # or 0.5 at spread_addresses, more above
            strength = max(strength, saturating(addresses, cfg.spread_addresses))
        score = min(score, strength)
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        named.update((e.actor, e.ts) for e in new)
        devices = len({e.device_id or "\x00" + e.actor for e in mine})
        networks = sorted({network_of(e.ip) for e in mine if e.ip})
        first, last = mine[0].ts, mine[-1].ts
        span_s = (last - first) / 1000
        baseline = model.baseline
        members = [e.actor for e in new]
        what = source.partition(":")[2]
        where = f"network {what}" if source.startswith("net:") else f"device {what}"
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
                "registrations": len(mine),
                "new_members": len(new),
                "span_s": span_s,
                "first_ts": first,
                "last_ts": last,
                "distinct_devices": devices,
                "devices_per_registration": round(share, 3),
                "distinct_addresses": addresses,
                "networks": networks[:10],
                "expected": round(baseline.expected, 2),
                "z": round(baseline.z, 2),
                "z_threshold": cfg.z_threshold,
                "history_windows": baseline.observed - 1,
                **series(model.recent),
                "member_facts": member_facts(new, members),
                "explanation": (
                    f"{len(mine)} accounts registered from {where} within {span_s / 60:.1f} min "
                    f"on {devices} device{'s' if devices != 1 else ''} and {addresses} "
                    f"address{'es' if addresses != 1 else ''}, where this source usually "
                    f"registers about {baseline.expected:.1f} per {cfg.window_ms // 60_000} min"
                ),
            },
        )


def _stages(cfg: BatchRegistrationSettings, build: Build) -> list[Stage]:
    hoarded = build.consumers.get(MEMBER_STREAM)  # hoarded_accounts' settings, if it runs
    if hoarded is None:
        return [BatchRegistrationStage(cfg, build.severity)]
    suspect = (hoarded.suspect_dormancy_ms, hoarded.suspect_dormant_share)
    return [BatchRegistrationStage(cfg, build.severity, hoarded.dormancy_ms, suspect)]


DETECTOR = Detector(
    name="batch_registration",
    settings=BatchRegistrationSettings,
    stages=_stages,
    feeds=(MEMBER_STREAM,),  # its findings' accounts, to hoarded_accounts
)
