"""`edge_burst` (Article 12 ¶2): follower bursts on any account, in constant memory.

`follower_jump` judges an account against its own history, so it keeps state per account
and needs a few windows of it before it can alert: an account nobody has followed before
(bought followers for a brand-new profile) or one evicted as idle is out of its sight, and
its memory grows with the number of accounts. This stage covers every account with a
fixed amount of state: follow targets are hashed (crc32, the same in every process) into
`shards`, each shard is one key of the runner, and its model is one `EdgeBurst`
count-min sketch of the follows its targets get per tick. A target's history is its
bucket's (an account never followed has a history of zero follows), so a burst on a
never-seen account stands out at once, once the shard's sketch has warmed up.

Per tick (a tumbling window) the shard's follows are counted into the sketch (counts are
sums: arrival order changes nothing), and each target with enough follows is judged on
its own count against its history (`EdgeBurst.destination_burst`): neither arrival order nor another
target's traffic in the shard changes its score. As in `follower_jump`, a burst alone is
not enough: a viral post brings a crowd of established accounts on their own devices and
networks. A target is flagged only when its new followers look bought (mostly fresh
accounts, or crowded onto a few networks or devices; or nothing describes them at all),
and the members are the followers that are individually suspicious. Follows the platform
made (recommendations, onboarding defaults, contact imports) are left out altogether:
they are no evidence of a bought burst (`forced_follow` judges them).

State: `shards` sketches (9 * rows * buckets floats each) plus the follows of the open
ticks, whatever the number of accounts; both runtimes keep and pickle it like any key's.
No `evidence.series`: a target has no record of its own windows, only a share of sketch
buckets (decayed levels, not past ticks), and keeping one would make memory grow with the
accounts, which this stage exists not to do.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any, NamedTuple

import msgspec

from models.edge_burst import EdgeBurst
from models.follower_composition import PLATFORM_FLOWS
from pipeline.contract.events import Follow
from pipeline.contract.findings import Finding, fabricated, make_finding, severity_of
from pipeline.core.numbers import NonNegativeInt, Positive, PositiveInt, Share
from pipeline.core.settings import SKETCH_MAX_BYTES, ConfigError, SeveritySettings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.detectors.case_evidence import member_facts
from pipeline.detectors.follower_evidence import composition_evidence, composition_of, why_bought
from pipeline.detectors.registry import Detector, DetectorSettings

_CANONICAL = attrgetter("ts", "event_id")  # the order a tick's follows are listed in
_target = attrgetter("target")
_SHARD_MEMO = 100_000


class EdgeBurstSettings(DetectorSettings):
    """`detectors.edge_burst` in config/lockstep.yaml, which explains each field."""

    tick_ms: PositiveInt
    shards: PositiveInt
    rows: PositiveInt
    buckets: PositiveInt
    decay: Annotated[float, msgspec.Meta(gt=0, lt=1)]
    warmup_ticks: NonNegativeInt
    seed: int
    z_threshold: Positive
    clip_z: Positive
    threshold: Annotated[float, msgspec.Meta(ge=0, lt=1)]
    min_follows: PositiveInt
    min_ratio: Positive
    young_account_ms: PositiveInt
    young_share: Share
    shared_min: PositiveInt
    crowding_share: Share
    max_members: PositiveInt
    idle_ttl_ms: PositiveInt

    def check(self) -> None:
        where = "detectors.edge_burst"
        if 9 * 8 * self.rows * self.buckets > SKETCH_MAX_BYTES:
            raise ConfigError(
                f"{where}: rows * buckets must be <= {SKETCH_MAX_BYTES // 72} (a shard's state is "
                "one table changelog record; Kafka's default record limit is 1 MiB)"
            )


class Reading(NamedTuple):
    """What the shard's sketch says of one target at the close of a tick."""

    sketched: float  # its count-min count this tick (collisions only inflate it)
    expected: float  # the count its history expects
    z: float  # how far above that, on the variance-stabilised scale
    score: float  # z mapped to [0, 1]


class EdgeBurstStage(Stage):
    detector = "edge_burst"
    key_field = "target"  # hashed into a shard by `key_of`
    event_types = frozenset({"follow"})

    def __init__(self, cfg: EdgeBurstSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec.tumbling(cfg.tick_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        self.shards = cfg.shards
        self._shard_keys = tuple(f"{self.detector}/{i}" for i in range(cfg.shards))
        self._shard_of: dict[str, str] = {}  # target -> shard key, for the targets seen lately

    def key_of(self, event: Any) -> str:
        """The target's shard, by a hash that is the same in every process and worker
        (remembered for up to `_SHARD_MEMO` targets: popular targets are followed often)."""
        target = event.target
        shard = self._shard_of.get(target)
        if shard is None:
            if len(self._shard_of) >= _SHARD_MEMO:
                self._shard_of.clear()
            crc = zlib.crc32(target.encode("utf-8", "surrogatepass"))
            shard = self._shard_of[target] = self._shard_keys[crc % self.shards]
        return shard

    def new_model(self) -> EdgeBurst:
        cfg = self.cfg
        return EdgeBurst(
            rows=cfg.rows,
            buckets=cfg.buckets,
            decay=cfg.decay,
            seed=cfg.seed,
            z_scale=cfg.z_threshold,
            clip_z=cfg.clip_z,
            warmup=cfg.warmup_ticks,
        )

    def new_pane(self) -> list[Follow]:
        return []

    def add(self, pane: list[Follow], event: Follow) -> None:
        if event.origin not in PLATFORM_FLOWS:  # the platform's doing: neither evidence
            pane.append(event)  # nor part of a target's organic normal

    def evaluate(
        self, key: str, model: EdgeBurst, panes: list[list[Follow]], start: int, end: int
    ) -> list[Finding] | None:
        cfg = self.cfg
        follows = sorted(chain.from_iterable(panes), key=_CANONICAL)
        if not follows:
            return None
        targets = list(map(_target, follows))
        model.learn_destinations(targets, start // cfg.tick_ms)
        counts = Counter(targets)
        bursts: dict[str, Reading] = {}
        for target, count in counts.items():
            if count < cfg.min_follows:
                continue
            sketched, expected, raw = model.destination_burst(target)
            score = model.unit(raw)
            if score >= cfg.threshold and count >= cfg.min_ratio * max(expected, 1.0):
                bursts[target] = Reading(sketched, expected, math.sqrt(raw), score)
        if not bursts:
            return None
        theirs: dict[str, list[Follow]] = {target: [] for target in bursts}
        for f, target in zip(follows, targets, strict=True):
            mine = theirs.get(target)
            if mine is not None:
                mine.append(f)
        findings = []
        for target in sorted(bursts):
            finding = self._judge(key, target, theirs[target], bursts[target], start, end)
            if finding is not None:
                findings.append(finding)
        return findings or None

    def _judge(
        self,
        key: str,
        target: str,
        follows: list[Follow],
        reading: Reading,
        start: int,
        end: int,
    ) -> Finding | None:
        """A bursting target's finding, if its new followers look bought."""
        cfg = self.cfg
        composition = composition_of(follows, cfg.shared_min, cfg.young_account_ms)
        if not composition.looks_bought(cfg.young_share, cfg.crowding_share):
            return None  # a crowd of established, diverse accounts: organic however large
        severity = severity_of(reading.score, self.severity)
        if severity is None:
            return None
        expected, z = reading.expected, reading.z
        minutes = (end - start) / 60_000
        why = (
            f"{len(follows)} new followers in {minutes:g} min where the history of this "
            f"account's follows expects about {expected:.1f} (z={z:.1f})"
        )
        if not composition.described:
            why += "; nothing (age, address, device) describes the followers"
        else:
            why += why_bought(composition, cfg.young_share, cfg.crowding_share)
        members = composition.suspects()[: cfg.max_members]
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="account",
            subject_id=target,
            window_start=start,
            window_end=end,
            score=reading.score,
            severity=severity,
            members=members,
            evidence={
                "follows": len(follows),
                "fabricated": fabricated(follow=len(follows) - expected),
                "sketch_count": round(reading.sketched, 2),
                "expected": round(expected, 2),
                "z": round(z, 2),
                "z_threshold": cfg.z_threshold,
                **composition_evidence(composition),
                "described": composition.described,
                "shard": key,
                "member_facts": member_facts(follows, members),
                "explanation": why,
            },
        )


DETECTOR = Detector(
    name="edge_burst",
    settings=EdgeBurstSettings,
    stages=lambda cfg, build: [EdgeBurstStage(cfg, build.severity)],
)
