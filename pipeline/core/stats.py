"""Running totals of a run: what came in, what was turned away, found and decided.

Both runtimes keep them (the engine per process, each worker for its partitions);
summary.json and the Prometheus metrics are read from them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.events import NO_TIME
from pipeline.contract.findings import Action, Finding
from pipeline.core.gate import Admitted


@dataclass
class Stats:
    """Running totals; `lockstep replay` writes them to summary.json, `run` exports them."""

    inputs: int = 0
    blank_lines: int = 0
    events_by_type: Counter[str] = field(default_factory=Counter)
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    staged_by_stage: Counter[str] = field(default_factory=Counter)  # events each stage took
    # stage records' events consumed again after a crash or a hand-over, and dropped as
    # already applied (the distributed runtime's at-least-once stages; none in replay)
    stage_redeliveries: Counter[str] = field(default_factory=Counter)
    # stage records the distributed runtime's consumer passed over, read back by the stage
    stage_records_refetched: Counter[str] = field(default_factory=Counter)
    findings_by_kind: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    actions_by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    max_event_ts: int = NO_TIME
    watermark: int = NO_TIME

    def add_admitted(self, admitted: Admitted) -> None:
        """Count what a gate let in and turned away (callers hold the stats lock)."""
        self.blank_lines += admitted.blank
        self.duplicates += admitted.duplicates
        for event_type, events in admitted.by_type.items():
            if events:
                self.events_by_type[event_type] += len(events)
        self.add_outputs([], [], admitted.dead_letters)

    def add_outputs(
        self, findings: list[Finding], actions: list[Action], dead_letters: list[DeadLetter]
    ) -> None:
        for f in findings:
            self.findings_by_kind[(f.detector, f.article, f.severity)] += 1
        for a in actions:
            self.actions_by_type[(a.action, a.mode)] += 1
        for d in dead_letters:
            self.dead_letters_by_reason[d.reason] += 1
