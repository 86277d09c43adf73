"""`follower_jump` (Article 12 ¶2): abnormal changes in an account's follower count.

Keyed by the followed account, which is also the `target` of engagement with its content,
so one key sees both its new followers and the attention its content gets. Two ways to be
abnormal, each judged against the account's own history:

* a burst: this window's net follows far above the account's `CountBaseline`;
* a level shift: follows the followers made themselves persistently above what the
  account's engagement explains (`FollowSupport`'s CUSUM), a drip of a few extra follows
  per window for hours. Follows the platform itself made (recommendations at sign-up,
  onboarding defaults, contact imports) are explained by those flows, not by the
  account's audience, and their followers are never suspects; forced ones are
  `forced_follow`'s business.

A burst alone is not enough. A viral post brings a crowd of established accounts on
their own devices and networks: that is organic however large. So a burst is flagged only
when its followers' composition is suspicious (mostly freshly created accounts, or many of
them sharing a few networks or devices), or when nothing describes them at all. The finding lists as
members only followers that are individually suspicious; when the drip's accounts look like
anyone else's, the subject is named and the members are left empty rather than guessed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from models.count_baseline import CountBaseline
from models.follow_support import FollowSupport
from models.follower_composition import PLATFORM_FLOWS, FollowerComposition
from models.recent_windows import remember
from models.scales import decay_alpha, saturating
from pipeline.contract.events import Follow
from pipeline.contract.findings import Finding, fabricated, make_finding, severity_of
from pipeline.core.derived import Derived
from pipeline.core.numbers import NonNegative, NonNegativeInt, Positive, PositiveInt, Share
from pipeline.core.settings import SeveritySettings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.detectors.case_evidence import member_facts, series
from pipeline.detectors.follower_evidence import composition_evidence, composition_of, why_bought
from pipeline.detectors.registry import Build, Detector, DetectorSettings, check_hops
from pipeline.detectors.silent_followers import JUMP_STREAM, jump_record


class FollowerJumpSettings(DetectorSettings):
    """`detectors.follower_jump` in config/lockstep.yaml, which explains each field."""

    window_ms: PositiveInt
    hop_ms: PositiveInt
    half_life_ms: PositiveInt
    warmup_windows: NonNegativeInt
    z_threshold: Positive
    min_net_follows: PositiveInt
    min_ratio: Positive
    clip_z: Positive
    max_members: PositiveInt
    idle_ttl_ms: PositiveInt
    young_account_ms: PositiveInt
    young_share: Share
    shared_min: PositiveInt
    crowding_share: Share
    first_seen_share: Share
    support_half_life_ms: PositiveInt
    support_warmup_windows: NonNegativeInt
    level_min_ratio: Positive
    level_allowance: NonNegative
    level_cap: Positive
    level_threshold: Positive
    level_min_net: PositiveInt
    level_window_z: NonNegative
    attention_z: Positive
    series_points: NonNegativeInt

    def check(self) -> None:
        check_hops("detectors.follower_jump", self.window_ms, self.hop_ms)


class FollowPane:
    __slots__ = (
        "dated",
        "engagement",
        "followers",
        "follows",
        "unfollows",
        "user_follows",
        "young",
    )

    def __init__(self) -> None:
        self.follows = 0
        self.user_follows = 0  # follows the account made itself (not PLATFORM_FLOWS)
        self.unfollows = 0
        self.engagement = 0  # clicks, reposts and comments on the account's content
        self.young = 0  # follows by accounts created within `young_account_ms`
        self.dated = 0  # follows whose actor's creation time is known
        self.followers: list[Follow] = []  # the first max_members follows, as they came

    def __getstate__(self) -> tuple[int, int, int, int, int, int, list[Follow]]:
        return (
            self.follows,
            self.user_follows,
            self.unfollows,
            self.engagement,
            self.young,
            self.dated,
            self.followers,
        )

    def __setstate__(self, state: tuple[int, int, int, int, int, int, list[Follow]]) -> None:
        (
            self.follows,
            self.user_follows,
            self.unfollows,
            self.engagement,
            self.young,
            self.dated,
            self.followers,
        ) = state


class FollowModel:
    """An account's history: its net follows and its engagement per window, and how much
    of the follows the engagement explains."""

    __slots__ = ("attention", "follows", "recent", "support")

    def __init__(
        self, follows: CountBaseline, attention: CountBaseline, support: FollowSupport
    ) -> None:
        self.follows = follows
        self.attention = attention
        self.support = support
        # its latest judged windows (end, net follows, expected), for a finding's chart
        self.recent: bytes | None = None

    def __getstate__(self) -> tuple[Any, ...]:
        # the fourth place once held a follow-up of silent_followers': kept, as None, so
        # states pickled before and after read alike
        return self.follows, self.attention, self.support, None, self.recent

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.follows, self.attention, self.support, *rest = state
        self.recent = rest[1] if len(rest) > 1 else None


class WindowCounts(NamedTuple):
    """A window's follows and engagement, summed over its panes."""

    follows: int
    unfollows: int
    engagement: int
    user_follows: int

    @classmethod
    def of(cls, panes: list[FollowPane]) -> WindowCounts:
        return cls(
            sum(p.follows for p in panes),
            sum(p.unfollows for p in panes),
            sum(p.engagement for p in panes),
            sum(p.user_follows for p in panes),
        )

    @property
    def net(self) -> int:
        return self.follows - self.unfollows


class Learned(NamedTuple):
    """What an account's models made of a window as they learned it."""

    score: float  # how far its net follows are above the account's normal, in [0, 1]
    excess: float  # how far its follows exceed what its engagement explains (z)
    surge: bool  # its content drew far more attention than usual


class FollowerJumpStage(Stage):
    detector = "follower_jump"
    key_field = "target"
    event_types = frozenset({"follow", "unfollow", "click", "repost", "comment"})
    counted_types = frozenset({"click", "repost", "comment"})  # attention: only counted

    def __init__(
        self, cfg: FollowerJumpSettings, severity: SeveritySettings, hand_on: bool = False
    ) -> None:
        """`hand_on`: hand each flagged window on to `silent_followers`, which holds the
        account to a lower bar for a while after it."""
        super().__init__(WindowSpec(cfg.window_ms, cfg.hop_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        self._alpha = decay_alpha(cfg.hop_ms, cfg.half_life_ms)
        self._support_alpha = decay_alpha(cfg.hop_ms, cfg.support_half_life_ms)
        self._hand_on = hand_on
        if hand_on:
            self.emits = frozenset({JUMP_STREAM})

    def new_model(self) -> FollowModel:
        cfg = self.cfg
        return FollowModel(
            CountBaseline(
                alpha=self._alpha,
                warmup=cfg.warmup_windows,
                z_scale=cfg.z_threshold,
                clip_z=cfg.clip_z,
            ),
            CountBaseline(
                alpha=self._alpha,
                warmup=cfg.warmup_windows,
                z_scale=cfg.z_threshold,
                clip_z=cfg.clip_z,
            ),
            FollowSupport(
                alpha=self._support_alpha,
                warmup=cfg.support_warmup_windows,
                allowance=cfg.level_allowance,
                cap=cfg.level_cap,
                learn_below=cfg.clip_z,
                min_ratio=cfg.level_min_ratio,
            ),
        )

    def new_pane(self) -> FollowPane:
        return FollowPane()

    def add(self, pane: FollowPane, event: Any) -> None:
        kind = event.type
        if kind == "follow":
            pane.follows += 1
            if event.origin in PLATFORM_FLOWS:
                return  # the platform's doing, not the follower's: not suspects
            pane.user_follows += 1
            created = event.actor_created_at
            if created is not None:
                pane.dated += 1
                pane.young += event.ts - created < self.cfg.young_account_ms
            if len(pane.followers) < self.cfg.max_members:
                pane.followers.append(event)
        elif kind == "unfollow":
            pane.unfollows += 1
        else:
            pane.engagement += 1

    def add_count(self, pane: FollowPane, events: int) -> None:
        pane.engagement += events

    def evaluate(
        self, key: str, model: FollowModel, panes: list[FollowPane], start: int, end: int
    ) -> Finding | list[Finding | Derived] | None:
        finding = self._judge(key, model, panes, start, end)
        if finding is None or not self._hand_on:
            return finding
        kind = finding.evidence["kind"]
        return [finding, jump_record(key, start, end, finding.finding_id, finding.score, kind)]

    def _judge(
        self, key: str, model: FollowModel, panes: list[FollowPane], start: int, end: int
    ) -> Finding | None:
        """The window's finding, if any: a burst on volume whose followers look bought, or
        a level shift (follows persistently above what the account's engagement explains)."""
        cfg = self.cfg
        counts = WindowCounts.of(panes)
        learned = self._learn(model, counts, end // cfg.hop_ms)
        model.recent = remember(
            model.recent, end, counts.net, model.follows.expected, cfg.series_points
        )
        loud, drift = self._abnormal(model, counts, learned)
        # an account without history of its own (a stream that starts mid-campaign, an
        # account never followed before): its window is judged as any account's would be,
        # on who its new followers are (an organic crowd mixes ages, networks, devices)
        cold = model.follows.n <= cfg.warmup_windows and counts.user_follows >= cfg.min_net_follows
        if not (loud or drift or cold):
            return None
        composition = self._followers(panes)
        suspicious = composition.looks_bought(cfg.young_share, cfg.crowding_share)
        # (networks alone do not say it of a crowd without history: a popular account's
        # followers share carriers' /24s; fresh accounts or shared devices do)
        first_seen = (
            cold
            and not loud
            and max(composition.young_share, composition.device_crowding) >= cfg.first_seen_share
        )
        burst = (loud and suspicious) or first_seen
        if not (burst or drift):
            return None
        score = learned.score
        if first_seen:  # no history to score against: how plainly bought the crowd is
            score = max(score, composition.young_share, composition.device_crowding)
        if not burst:  # a level shift: score how far the CUSUM is past its threshold
            score = max(score, saturating(model.support.cusum, cfg.level_threshold))
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        members = composition.suspects()[: cfg.max_members] if suspicious else []
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
                "kind": "burst" if burst else "level_shift",
                **self._evidence(model, counts, learned, composition),
                **series(model.recent),
                "member_facts": member_facts((f for p in panes for f in p.followers), members),
                "explanation": self._explanation(model, counts, composition, burst, end - start),
            },
        )

    def _learn(self, model: FollowModel, counts: WindowCounts, t: int) -> Learned:
        """Teach the account's models its window `t`, scoring it on the way."""
        baseline, support = model.follows, model.support
        expected_before = baseline.expected if baseline.n else 0.0
        score = baseline.update(t, max(counts.net, 0))
        model.attention.update(t, counts.engagement)
        excess = support.update(counts.user_follows, counts.engagement, floor=expected_before)
        # the account is having a moment (its content draws far more attention than usual):
        # extra followers then are plausibly converts, not a drip
        surge = model.attention.z >= self.cfg.attention_z
        if surge:  # nor does their excess count towards a drip afterwards
            support.cusum = 0.0
        return Learned(score, excess, surge)

    def _abnormal(
        self, model: FollowModel, counts: WindowCounts, learned: Learned
    ) -> tuple[bool, bool]:
        """(loud, drift): a burst on volume (whether it was bought, its followers tell),
        and a level shift, each above the account's own recent normal."""
        cfg = self.cfg
        net = counts.net
        # both above the account's own recent normal (a drift too: an explanation by
        # engagement that lags the daily rhythm is no evidence on its own)
        above_normal = net >= cfg.min_ratio * max(model.follows.expected, 1.0)
        loud = learned.score >= 0.5 and net >= cfg.min_net_follows and above_normal
        drift = (
            model.support.cusum >= cfg.level_threshold
            and learned.excess >= cfg.level_window_z
            and not learned.surge
            and min(net, counts.user_follows) >= cfg.level_min_net
            and above_normal
        )
        return loud, drift

    def _followers(self, panes: list[FollowPane]) -> FollowerComposition:
        """Who the window's new followers are; ages counted over all of them (the listed
        followers are capped at `max_members` per pane). Worked out only for a window that
        is judged on its followers: most windows are not."""
        cfg = self.cfg
        return composition_of(
            (f for p in panes for f in p.followers),
            cfg.shared_min,
            cfg.young_account_ms,
            ages=(sum(p.young for p in panes), sum(p.dated for p in panes)),
        )

    def _evidence(
        self,
        model: FollowModel,
        counts: WindowCounts,
        learned: Learned,
        composition: FollowerComposition,
    ) -> dict[str, Any]:
        """The window's numbers next to the account's history, for a finding."""
        baseline, support = model.follows, model.support
        predicted = support.predicted
        return {
            "observed": counts.net,
            "fabricated": fabricated(follow=counts.net - baseline.expected),
            "follows": counts.follows,
            "unfollows": counts.unfollows,
            "expected": round(baseline.expected, 2),
            "z": round(baseline.z, 2),
            "z_threshold": self.cfg.z_threshold,
            "user_follows": counts.user_follows,
            "engagement": counts.engagement,
            "engagement_z": round(model.attention.z, 2),
            "explained_by_engagement": None if predicted is None else round(predicted, 2),
            "excess_z": round(learned.excess, 2),
            "cumulative_excess": round(support.cusum, 2),
            **composition_evidence(composition),
            "history_windows": baseline.n - 1,
        }

    def _explanation(
        self,
        model: FollowModel,
        counts: WindowCounts,
        composition: FollowerComposition,
        burst: bool,
        length_ms: int,
    ) -> str:
        """A finding's explanation: how far above the account's normal, and why bought."""
        cfg = self.cfg
        baseline, support = model.follows, model.support
        minutes = length_ms / 60_000
        if burst and baseline.n <= cfg.warmup_windows:
            why = (
                f"{counts.net} net new followers in {minutes:g} min, with too little history "
                f"of this account ({baseline.n} windows) to expect a number: judged on who "
                "they are"
            )
        elif burst:
            why = (
                f"{counts.net} net new followers in {minutes:g} min where this account's own "
                f"history expects about {baseline.expected:.1f} (z={baseline.z:.1f})"
            )
        else:
            why = (
                f"{counts.net} net new followers in {minutes:g} min, persistently more than "
                f"the account's engagement explains (about {support.predicted or 0:.1f}; "
                f"cumulative excess {support.cusum:.1f})"
            )
        return why + why_bought(composition, cfg.young_share, cfg.crowding_share)


def _stages(cfg: FollowerJumpSettings, build: Build) -> list[Stage]:
    hand_on = JUMP_STREAM in build.consumers  # silent_followers runs
    return [FollowerJumpStage(cfg, build.severity, hand_on)]


DETECTOR = Detector(
    name="follower_jump",
    settings=FollowerJumpSettings,
    stages=_stages,
    feeds=(JUMP_STREAM,),  # its flagged windows, to silent_followers
)
