"""The detectors (`REGISTRY`, in the order their stages run), and the stages both runtimes
run. Each detector is one module here, declared at its end (`registry.Detector`), and one
block under `detectors:` in config/lockstep.yaml."""

from __future__ import annotations

from pipeline.core.settings import Settings
from pipeline.core.stage import Stage
from pipeline.detectors import (
    account_handover,
    batch_registration,
    churn,
    duplicate_content,
    edge_burst,
    engagement_inflation,
    follower_jump,
    forced_follow,
    hoarded_accounts,
    lockstep_group,
    silent_followers,
)
from pipeline.detectors.registry import Registry

# The order is the order stages close windows at a watermark, so the order of a batch's
# findings and of the policy's decisions on them: changing it can change action ids.
REGISTRY = Registry(
    follower_jump.DETECTOR,
    silent_followers.DETECTOR,
    engagement_inflation.DETECTOR,
    forced_follow.DETECTOR,
    edge_burst.DETECTOR,
    lockstep_group.DETECTOR,
    churn.DETECTOR,
    batch_registration.DETECTOR,
    hoarded_accounts.DETECTOR,
    duplicate_content.DETECTOR,
    account_handover.DETECTOR,
)


def build_stages(settings: Settings) -> list[Stage]:
    """The running detectors' stages, in order, their derived streams wired."""
    return REGISTRY.build_stages(settings.detectors, settings.severity)
