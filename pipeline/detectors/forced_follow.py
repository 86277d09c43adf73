"""`forced_follow` (Article 12): follows made without the user's informed consent,
concentrated on one beneficiary.

Keyed by the followed account. A follow is forced when its `consent` is false or a
non-user flow made it (`forcing_origins`: onboarding defaults, API, imports); a missing
origin or consent counts as user / true. Forced follows on their own are not news:
contact imports without a confirmation happen all the time, a few for each of many
targets, and onboarding defaults for the popular accounts a platform recommends are a few
of the many follows those accounts get. What is flagged is one target receiving many
forced follows from many distinct users, making up most of its new follows, far above
that target's own normal (`PriorCountBaseline` from a prior of none, so an account that
never had a forced follow is judged from its first window). The forced users are victims,
not perpetrators: the finding has no members and lists a sample of them in its evidence.

Cost: almost every follow is an ordinary one, on a long tail of targets. The stage is a
whole-window stage that folds each batch into its pane as it comes (`ForcedFold`: follows
counted per target in C, the few forced ones summed per target). A window scores only the
targets that had forced follows, and starts the normal of those it sees for the first
time: a later quiet window teaches a target's baseline nothing it would not learn at its
next update anyway (`PriorCountBaseline` decays over the windows skipped).

Evidence: a finding charts the target's latest judged windows (`evidence.series`: per
window with forced follows, their count and the level its baseline expected), kept in its
model (`ForcedBaseline`, at most `series_points`). The record is a field of this stage's
own subclass, not of `PriorCountBaseline`: `EngagementBaseline` derives from that too, and
a field added to the base would come before the subclass's own, so an engagement baseline
pickled before it (positional fields) would load shifted.
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter
from typing import Any

from models.prior_baseline import PriorCountBaseline
from models.recent_windows import remember
from models.scales import decay_alpha
from pipeline.contract.events import Origin
from pipeline.contract.findings import Finding, fabricated, make_finding, severity_of
from pipeline.core.numbers import NonNegative, NonNegativeInt, Positive, PositiveInt, Share
from pipeline.core.settings import SeveritySettings
from pipeline.core.stage import WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.case_evidence import series
from pipeline.detectors.registry import Detector, DetectorSettings, check_hops

PaneState = tuple[int, int, dict[str, int], set[str]]
_target = attrgetter("target")


class ForcedFollowSettings(DetectorSettings):
    """`detectors.forced_follow` in config/lockstep.yaml, which explains each field."""

    window_ms: PositiveInt
    hop_ms: PositiveInt
    half_life_ms: PositiveInt
    prior_forced: NonNegative
    warmup_windows: NonNegativeInt
    z_threshold: Positive
    min_forced: PositiveInt
    min_victims: PositiveInt
    min_forced_share: Share
    min_ratio: Positive
    clip_z: Positive
    forcing_origins: tuple[Origin, ...]
    max_tracked_victims: PositiveInt
    max_listed_victims: NonNegativeInt
    idle_ttl_ms: PositiveInt
    series_points: NonNegativeInt

    def check(self) -> None:
        where = "detectors.forced_follow"
        check_hops(where, self.window_ms, self.hop_ms)


class ForcedBaseline(PriorCountBaseline, gc=False):
    """A target's normal of forced follows per window, and its latest windows with forced
    follows as judged (`models.recent_windows`), for a finding's `evidence.series`.

    A target's model pickled before the record existed is a plain `PriorCountBaseline`:
    it loads and judges as before, and keeps no record until it is forgotten (idle) and
    starts anew as a `ForcedBaseline`."""

    recent: bytes | None = None


class ForcedPane:
    """One target's forced follows in a pane."""

    __slots__ = ("forced", "origins", "unconsented", "victims")

    def __init__(self) -> None:
        self.forced = 0
        self.unconsented = 0  # forced follows with consent false
        self.origins: dict[str, int] = {}  # forced follows by origin
        self.victims: set[str] = set()  # distinct forced users, at most max_tracked_victims

    def __getstate__(self) -> PaneState:
        return self.forced, self.unconsented, self.origins, self.victims

    def __setstate__(self, state: PaneState) -> None:
        self.forced, self.unconsented, self.origins, self.victims = state


class ForcedFold:
    """A pane's follows, of every target (the embedded runtime) or of one (the
    distributed one): every follow counted per target, the forced ones per target."""

    __slots__ = ("follows", "forced")

    def __init__(self) -> None:
        self.follows: Counter[str] = Counter()
        self.forced: dict[str, ForcedPane] = {}

    def __getstate__(self) -> tuple[Counter[str], dict[str, ForcedPane]]:
        return self.follows, self.forced

    def __setstate__(self, state: tuple[Counter[str], dict[str, ForcedPane]]) -> None:
        self.follows, self.forced = state


class ForcedFollowStage(WholeWindowStage):
    detector = "forced_follow"
    key_field = "target"
    event_types = frozenset({"follow"})
    folds = True

    def __init__(self, cfg: ForcedFollowSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec(cfg.window_ms, cfg.hop_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        alpha = decay_alpha(cfg.hop_ms, cfg.half_life_ms)
        self._fresh = ForcedBaseline.starting_at(
            cfg.prior_forced, alpha, cfg.warmup_windows, cfg.z_threshold, cfg.clip_z
        )
        self._forcing = frozenset(cfg.forcing_origins)

    def new_model(self) -> ForcedBaseline:
        return self._fresh.__copy__()

    def new_pane(self) -> ForcedFold:
        return ForcedFold()

    def add(self, pane: ForcedFold, event: Any) -> None:
        pane.follows[event.target] += 1
        if event.consent is False or event.origin in self._forcing:
            self._add_forced(pane, event)

    def fold(
        self, events: list[Any], kind: str | None = None, into: ForcedFold | None = None
    ) -> ForcedFold:
        """A batch of follows as `add` folds them one by one (into `into` if given), the
        counting in C."""
        fold = ForcedFold() if into is None else into
        fold.follows.update(map(_target, events))
        forcing = self._forcing
        for event in events:
            if event.consent is False or event.origin in forcing:
                self._add_forced(fold, event)
        return fold

    def _add_forced(self, fold: ForcedFold, event: Any) -> None:
        pane = fold.forced.get(event.target)
        if pane is None:
            pane = fold.forced[event.target] = ForcedPane()
        pane.forced += 1
        pane.unconsented += event.consent is False
        name = event.origin or "user"
        pane.origins[name] = pane.origins.get(name, 0) + 1
        if len(pane.victims) < self.cfg.max_tracked_victims:
            pane.victims.add(event.actor)

    def judge(self, folds: list[ForcedFold], models: Models, start: int, end: int) -> list[Finding]:
        """A window's follows: each target that had forced ones, against its own normal.
        A target's first window starts its normal even without any (the usual: its
        baseline then knows how rarely it gets them); later quiet windows are learned
        at its next update."""
        forced: dict[str, list[ForcedPane]] = {}
        for fold in folds:
            for target, pane in fold.forced.items():
                forced.setdefault(target, []).append(pane)
        t = end // self.cfg.hop_ms
        findings = []
        for target in sorted(set().union(*(fold.follows for fold in folds))):
            model = models.get(target, create=True)
            if model is None:
                continue
            panes = forced.get(target)
            if panes is None:
                if model.last_t is None:
                    model.update(t, 0)
                continue
            follows = sum(fold.follows.get(target, 0) for fold in folds)
            found = self._judge(target, model, panes, follows, start, end)
            if found is not None:
                findings.append(found)
        return findings

    def _judge(
        self,
        key: str,
        model: PriorCountBaseline,
        panes: list[ForcedPane],
        follows: int,
        start: int,
        end: int,
    ) -> Finding | None:
        cfg = self.cfg
        forced = sum(p.forced for p in panes)
        score = model.update(end // cfg.hop_ms, forced)
        if isinstance(model, ForcedBaseline):  # not a model pickled before the record
            model.recent = remember(model.recent, end, forced, model.expected, cfg.series_points)
        if (
            score < 0.5
            or forced < cfg.min_forced
            or forced < cfg.min_ratio * max(model.expected, 1.0)
        ):
            return None
        victims = set().union(*(p.victims for p in panes))
        if len(victims) < cfg.min_victims or forced < cfg.min_forced_share * follows:
            return None
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        model.forget_last()  # a campaign is not this account's normal, however long it runs
        unconsented = sum(p.unconsented for p in panes)
        origins: dict[str, int] = {}
        for p in panes:
            for name, count in p.origins.items():
                origins[name] = origins.get(name, 0) + count
        minutes = (end - start) / 60_000
        how = ", ".join(f"{n} {name}" for name, n in sorted(origins.items(), key=_by_count))
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="account",
            subject_id=key,
            window_start=start,
            window_end=end,
            score=score,
            severity=severity,
            members=[],
            evidence={
                "forced": forced,
                "follows": follows,
                "fabricated": fabricated(follow=forced),
                "forced_share": round(forced / follows, 3),
                "unconsented": unconsented,
                "origins": dict(sorted(origins.items(), key=_by_count)),
                "distinct_victims": len(victims),
                "victims_sample": sorted(victims)[: cfg.max_listed_victims],
                "expected": round(model.expected, 2),
                "z": round(model.z, 2),
                "z_threshold": cfg.z_threshold,
                "history_windows": model.observed - 1,
                **series(getattr(model, "recent", None)),
                "explanation": (
                    f"{forced} of {follows} new follows in {minutes:g} min were made without "
                    f"informed consent ({how}; {unconsented} with consent false), by "
                    f"{len(victims)} different users, where this account's own history "
                    f"expects about {model.expected:.1f}"
                ),
            },
        )


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


DETECTOR = Detector(
    name="forced_follow",
    settings=ForcedFollowSettings,
    stages=lambda cfg, build: [ForcedFollowStage(cfg, build.severity)],
)
