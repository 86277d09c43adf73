"""Detector stages. Each is a `pipeline.core.stage.Stage`; `build_stages` makes the enabled ones."""

from __future__ import annotations

from pipeline.core.settings import Settings, policy_path
from pipeline.core.stage import Stage
from pipeline.detectors.batch_registration import BatchRegistrationStage
from pipeline.detectors.churn import ChurnStage
from pipeline.detectors.duplicate_content import DuplicateContentStage
from pipeline.detectors.edge_burst import EdgeBurstStage
from pipeline.detectors.engagement_inflation import EngagementInflationStage
from pipeline.detectors.follower_jump import FollowerJumpStage
from pipeline.detectors.forced_follow import ForcedFollowStage
from pipeline.detectors.hoarded_accounts import HoardedAccountsStage, HoardedWatchStage
from pipeline.detectors.lockstep_group import LockstepGroupStage
from pipeline.detectors.lockstep_ring import LockstepBucketStage, LockstepRingStage
from pipeline.detectors.silent_followers import FollowerActivityStage, SilentFollowersStage
from pipeline.enforcement.policy import load_policy
from pipeline.enforcement.stage import FINDING_STREAM, EnforcementStage


def build_stages(settings: Settings) -> list[Stage]:
    stages: list[Stage] = []
    jumps, silent = settings.detectors.follower_jump, settings.detectors.silent_followers
    if jumps.enabled:
        follower_jump = FollowerJumpStage(jumps, settings.severity)
        stages.append(follower_jump)
        if silent.enabled:  # two more stages: who was active lately, then the verdict
            follower_jump.hand_on_jumps(silent.follow_up_ms)
            stages.append(FollowerActivityStage(silent, jumps.young_account_ms))
            stages.append(SilentFollowersStage(silent, settings.severity))
    if settings.detectors.engagement_inflation.enabled:
        stages.append(
            EngagementInflationStage(settings.detectors.engagement_inflation, settings.severity)
        )
    if settings.detectors.forced_follow.enabled:
        stages.append(ForcedFollowStage(settings.detectors.forced_follow, settings.severity))
    if settings.detectors.edge_burst.enabled:
        stages.append(EdgeBurstStage(settings.detectors.edge_burst, settings.severity))
    lockstep = settings.detectors.lockstep_group
    if lockstep.enabled:
        groups = LockstepGroupStage(lockstep, settings.severity)
        stages.append(groups)
        if lockstep.across_accounts:  # its second stage, fed the rounds it closes
            groups.hand_on_rounds()
            stages.append(LockstepBucketStage(lockstep))
            stages.append(LockstepRingStage(lockstep, settings.severity))
    if settings.detectors.churn.enabled:
        stages.append(ChurnStage(settings.detectors.churn, settings.severity))
    if settings.detectors.batch_registration.enabled:
        batches = BatchRegistrationStage(settings.detectors.batch_registration, settings.severity)
        stages.append(batches)
        hoarded = settings.detectors.hoarded_accounts
        if hoarded.enabled:  # its second and third stages, fed by the first's findings
            batches.watch_members(hoarded.dormancy_ms)
            stages.append(HoardedWatchStage(hoarded))
            stages.append(HoardedAccountsStage(hoarded, settings.severity))
    if settings.detectors.duplicate_content.enabled:
        stages.append(
            DuplicateContentStage(settings.detectors.duplicate_content, settings.severity)
        )
    return stages


def build_topology(settings: Settings) -> list[Stage]:
    """The detector stages, each handing its findings on to the enforcement stage (last):
    what both runtimes run."""
    stages = build_stages(settings)
    for stage in stages:
        stage.emits = stage.emits | {FINDING_STREAM}
    cfg = settings.enforcement
    policy = load_policy(policy_path(settings))
    return [*stages, EnforcementStage(policy, cfg.window_ms, cfg.idle_ttl_ms)]
