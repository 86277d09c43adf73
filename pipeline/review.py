"""Interim policy: findings at or above a severity become `human_review` actions.

The enforcement engine (Article 19 ladder) replaces this; until then every finding that
matters reaches a person, with an action_id that is stable across restarts.
"""

from __future__ import annotations

from pipeline.findings import SEVERITIES, Action, Finding, stable_id


class ReviewPolicy:
    def __init__(self, min_severity: str) -> None:
        self._min_rank = SEVERITIES.index(min_severity)

    def actions_for(self, findings: list[Finding]) -> list[Action]:
        return [
            Action(
                action_id=stable_id("human_review", f.subject_type, f.subject_id, f.finding_id),
                action="human_review",
                subject_type=f.subject_type,
                subject_id=f.subject_id,
                basis=[f.article],
                finding_ids=[f.finding_id],
                mode="review",
                ts=f.ts,
                expires_at=None,
                params={"detector": f.detector, "severity": f.severity},
            )
            for f in findings
            if SEVERITIES.index(f.severity) >= self._min_rank
        ]
