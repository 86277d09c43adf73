"""The findings a perfect detector would emit for a world: what `evaluate` must score as
100%, so a user (and the tests) can check that the labels and the scoring agree."""

from __future__ import annotations

from typing import Any

from pipeline.contract.findings import stable_id
from pipeline.lab.labels import Campaign, Labels

DETECTOR = "perfect"


def perfect_findings(labels: Labels) -> list[dict[str, Any]]:
    """Per campaign: one finding on its first subject naming every member, emitted at its
    start over its whole span; and one account finding for each other account that
    `Labels.fake_accounts()` counts (further account subjects, owners of content subjects),
    since account precision and recall are measured on those too."""
    findings = []
    for c in labels.campaigns:
        if c.subjects:
            findings.append(_finding(c, c.subject_type, c.subjects[0], list(c.members)))
        elif c.members:
            findings.append(_finding(c, "account", c.members[0], list(c.members)))
        extra = c.subjects[1:] if c.subject_type == "account" else []
        for account in [*extra, *c.owners]:
            findings.append(_finding(c, "account", account, []))
    return findings


def _finding(c: Campaign, subject_type: str, subject_id: str, members: list[str]) -> dict:
    return {
        "finding_id": stable_id(DETECTOR, c.id, subject_type, subject_id),
        "detector": DETECTOR,
        "article": c.article,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "members": members,
        "score": 1.0,
        "severity": "critical",
        "window_start": c.start,
        "window_end": c.end,
        "ts": c.start,
        "evidence": {"explanation": f"planted campaign {c.id} ({c.kind})"},
    }
