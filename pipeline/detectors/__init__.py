"""Detector stages. Each is a `pipeline.stage.Stage`; `build_stages` makes the enabled ones."""

from __future__ import annotations

from pipeline.detectors.follower_jump import FollowerJumpStage
from pipeline.settings import Settings
from pipeline.stage import Stage


def build_stages(settings: Settings) -> list[Stage]:
    stages: list[Stage] = []
    if settings.detectors.follower_jump.enabled:
        stages.append(FollowerJumpStage(settings.detectors.follower_jump, settings.severity))
    return stages
