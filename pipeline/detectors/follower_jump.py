"""`follower_jump` (Article 12 ¶2): abnormal jumps in an account's net new followers.

Keyed by the followed account. Each window's net follows (follows - unfollows) is scored
by that account's own `CountBaseline`, so "abnormal" means abnormal for this account: 300
follows is a jump for an account that gets three an hour, and a quiet window for a star.
"""

from __future__ import annotations

from typing import Any

from models.count_baseline import CountBaseline
from pipeline.findings import Finding, make_finding, severity_of
from pipeline.settings import FollowerJumpSettings, SeveritySettings
from pipeline.stage import Stage, WindowSpec


class FollowPane:
    __slots__ = ("followers", "follows", "unfollows")

    def __init__(self) -> None:
        self.follows = 0
        self.unfollows = 0
        self.followers: list[str] = []

    def __getstate__(self) -> tuple[int, int, list[str]]:
        return self.follows, self.unfollows, self.followers

    def __setstate__(self, state: tuple[int, int, list[str]]) -> None:
        self.follows, self.unfollows, self.followers = state


class FollowerJumpStage(Stage):
    detector = "follower_jump"
    key_field = "target"
    event_types = frozenset({"follow", "unfollow"})

    def __init__(self, cfg: FollowerJumpSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec(cfg.window_ms, cfg.hop_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        self._alpha = 1.0 - 0.5 ** (cfg.hop_ms / cfg.half_life_ms)

    def new_model(self) -> CountBaseline:
        cfg = self.cfg
        return CountBaseline(
            alpha=self._alpha, warmup=cfg.warmup_windows, z_scale=cfg.z_threshold, clip_z=cfg.clip_z
        )

    def new_pane(self) -> FollowPane:
        return FollowPane()

    def add(self, pane: FollowPane, event: Any) -> None:
        if event.type == "follow":
            pane.follows += 1
            if len(pane.followers) < self.cfg.max_members:
                pane.followers.append(event.actor)
        else:
            pane.unfollows += 1

    def evaluate(
        self, key: str, model: CountBaseline, panes: list[FollowPane], start: int, end: int
    ) -> Finding | None:
        cfg = self.cfg
        follows = sum(p.follows for p in panes)
        unfollows = sum(p.unfollows for p in panes)
        net = follows - unfollows
        score = model.update(end // cfg.hop_ms, max(net, 0))
        if (
            score < 0.5
            or net < cfg.min_net_follows
            or net < cfg.min_ratio * max(model.expected, 1.0)
        ):
            return None
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        members = sorted({actor for p in panes for actor in p.followers})[: cfg.max_members]
        minutes = (end - start) / 60_000
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
                "observed": net,
                "follows": follows,
                "unfollows": unfollows,
                "expected": round(model.expected, 2),
                "z": round(model.z, 2),
                "z_threshold": cfg.z_threshold,
                "history_windows": model.n - 1,
                "explanation": (
                    f"{net} net new followers in {minutes:g} min where this account's own "
                    f"history expects about {model.expected:.1f} (z={model.z:.1f})"
                ),
            },
        )
