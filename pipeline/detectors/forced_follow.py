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
"""

from __future__ import annotations

from typing import Any

from models.prior_baseline import PriorCountBaseline
from pipeline.findings import Finding, fabricated, make_finding, severity_of
from pipeline.settings import ForcedFollowSettings, SeveritySettings
from pipeline.stage import Stage, WindowSpec

PaneState = tuple[int, int, int, dict[str, int], set[str]]


class ForcedPane:
    __slots__ = ("follows", "forced", "origins", "unconsented", "victims")

    def __init__(self) -> None:
        self.follows = 0  # every follow of the target
        self.forced = 0
        self.unconsented = 0  # forced follows with consent false
        self.origins: dict[str, int] = {}  # forced follows by origin
        self.victims: set[str] = set()  # distinct forced users, at most max_tracked_victims

    def __getstate__(self) -> PaneState:
        return self.follows, self.forced, self.unconsented, self.origins, self.victims

    def __setstate__(self, state: PaneState) -> None:
        self.follows, self.forced, self.unconsented, self.origins, self.victims = state


class ForcedFollowStage(Stage):
    detector = "forced_follow"
    key_field = "target"
    event_types = frozenset({"follow"})

    def __init__(self, cfg: ForcedFollowSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec(cfg.window_ms, cfg.hop_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        alpha = 1.0 - 0.5 ** (cfg.hop_ms / cfg.half_life_ms)
        self._fresh = PriorCountBaseline.starting_at(
            cfg.prior_forced, alpha, cfg.warmup_windows, cfg.z_threshold, cfg.clip_z
        )
        self._forcing = frozenset(cfg.forcing_origins)

    def new_model(self) -> PriorCountBaseline:
        return self._fresh.__copy__()

    def new_pane(self) -> ForcedPane:
        return ForcedPane()

    def add(self, pane: ForcedPane, event: Any) -> None:
        pane.follows += 1
        origin = event.origin
        unconsented = event.consent is False
        if unconsented or origin in self._forcing:
            pane.forced += 1
            pane.unconsented += unconsented
            name = origin or "user"
            pane.origins[name] = pane.origins.get(name, 0) + 1
            if len(pane.victims) < self.cfg.max_tracked_victims:
                pane.victims.add(event.actor)

    def evaluate(
        self, key: str, model: PriorCountBaseline, panes: list[ForcedPane], start: int, end: int
    ) -> Finding | None:
        cfg = self.cfg
        forced = sum(p.forced for p in panes)
        if not forced and model.last_t is not None:  # a quiet window: nothing to judge, and
            return None  # the baseline learns it (with any others) at its next update
        score = model.update(end // cfg.hop_ms, forced)
        if (
            score < 0.5
            or forced < cfg.min_forced
            or forced < cfg.min_ratio * max(model.expected, 1.0)
        ):
            return None
        follows = sum(p.follows for p in panes)
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
