"""The enforcement stage: every finding, decided by the policy under its subject's key.

Escalation needs a subject's history (its credit, its latest measures), and findings
about one subject come from many stages keyed otherwise (by target, by shard, by group),
so every detector stage hands its findings on (a derived `finding` stream, keyed by
subject) to this stage, which keeps one `pipeline.enforcement.policy.SubjectRecord` per subject and
decides a subject's findings in (time, window length, id) order at the close of each
window. Both runtimes therefore decide the same actions with the same ids, a restarted
worker recovers the records from its table, and no history is split between partitions.
"""

from __future__ import annotations

from typing import Any

from pipeline.contract.findings import Action, Finding
from pipeline.core.derived import Derived
from pipeline.core.stage import Stage, WindowSpec
from pipeline.enforcement.policy import Enforcer, Policy, SubjectRecord

FINDING_STREAM = "finding"


def finding_records(findings: list[Finding]) -> list[Derived]:
    """Findings as records for the enforcement stage, keyed by subject."""
    return [
        Derived(
            stream=FINDING_STREAM,
            key=f"{f.subject_type}:{f.subject_id}",
            ts=f.ts - 1,  # the window that found it closed at f.ts: never behind downstream
            event_id=f.finding_id,
            data={
                "detector": f.detector,
                "article": f.article,
                "subject_type": f.subject_type,
                "subject_id": f.subject_id,
                "severity": f.severity,
                "score": f.score,
                "members": f.members,
                "window_start": f.window_start,
                "window_end": f.window_end,
                "ts": f.ts,
                "fabricated": f.evidence.get("fabricated", {}),
            },
        )
        for f in findings
    ]


class EnforcementStage(Stage):
    """Per subject: its findings of a window, decided in order by the policy."""

    detector = "enforcement"
    key_field = "key"  # subject_type:subject_id
    event_types = frozenset()
    streams = frozenset({FINDING_STREAM})

    def __init__(self, policy: Policy, window_ms: int, idle_ttl_ms: int) -> None:
        super().__init__(WindowSpec.tumbling(window_ms), idle_ttl_ms)
        self.enforcer = Enforcer(policy)

    def new_model(self) -> SubjectRecord:
        return self.enforcer.new_record()

    def new_pane(self) -> list[Derived]:
        return []

    def add(self, pane: list[Derived], event: Derived) -> None:
        pane.append(event)

    def evaluate(
        self, key: str, model: SubjectRecord, panes: list[list[Derived]], start: int, end: int
    ) -> list[Action]:
        records = sorted((d for pane in panes for d in pane), key=_order)
        actions: list[Action] = []
        for d in records:
            actions.extend(self.enforcer.decide(_finding(d), model))
        return actions


def _order(d: Derived) -> tuple[int, int, str]:
    """Time order; at one time, shorter windows first: a discount for a 5-minute window
    then takes off only what the 1-minute windows inside it have not (they end no later)."""
    data = d.data
    return data["ts"], data["window_end"] - data["window_start"], d.event_id


def _finding(d: Derived) -> Finding:
    data: dict[str, Any] = d.data
    return Finding(
        finding_id=d.event_id,
        detector=data["detector"],
        article=data["article"],
        subject_type=data["subject_type"],
        subject_id=data["subject_id"],
        members=data["members"],
        score=data["score"],
        severity=data["severity"],
        window_start=data["window_start"],
        window_end=data["window_end"],
        ts=data["ts"],
        evidence={"fabricated": data.get("fabricated", {})},
    )
