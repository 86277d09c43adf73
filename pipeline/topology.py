"""The topology both runtimes run: every running detector's stages, then the enforcement
stage, to which each hands its findings.

It sits above `pipeline.detectors` and `pipeline.enforcement`, which it joins: the policy
checks the detector names it may use against the detectors' registry.
"""

from __future__ import annotations

from pipeline.core.settings import Settings, policy_path
from pipeline.core.stage import Stage
from pipeline.detectors import build_stages
from pipeline.enforcement.policy import load_policy
from pipeline.enforcement.stage import FINDING_STREAM, EnforcementStage


def build_topology(settings: Settings) -> list[Stage]:
    """The detector stages, each handing its findings on to the enforcement stage (last):
    what both runtimes run."""
    stages = build_stages(settings)
    for stage in stages:
        stage.emits = stage.emits | {FINDING_STREAM}
    cfg = settings.enforcement
    policy = load_policy(policy_path(settings))
    return [*stages, EnforcementStage(policy, cfg.window_ms, cfg.idle_ttl_ms)]
