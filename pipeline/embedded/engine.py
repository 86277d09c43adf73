"""The embedded runtime's core: raw inputs in, findings, actions and dead letters out.

One batch at a time: the gate decodes and validates (dead-lettering what fails), drops
redelivered ids and late events and advances the watermark; each stage then gets the
events it wants, and the windows the watermark has passed are closed. Nothing here does I/O; callers
(`lockstep replay`, `lockstep run`, the Faust worker) read inputs and write outputs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.events import NO_TIME
from pipeline.contract.findings import Action, Finding
from pipeline.core.derived import check_stream_order, split_outputs
from pipeline.core.gate import Gate
from pipeline.core.settings import Settings
from pipeline.core.stage import KeyedRunner, Stage
from pipeline.core.stats import Stats
from pipeline.core.window_runner import WholeWindowStage, WindowRunner
from pipeline.enforcement.stage import FINDING_STREAM, finding_records
from pipeline.topology import build_topology


@dataclass
class BatchResult:
    findings: list[Finding]
    actions: list[Action]
    dead_letters: list[DeadLetter]
    events: int  # validated, first-time, on-time events handed to the stages


class Engine:
    def __init__(
        self,
        settings: Settings,
        stages: list[Stage] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.runners: list[KeyedRunner | WindowRunner] = [
            WindowRunner(s) if isinstance(s, WholeWindowStage) else KeyedRunner(s)
            for s in (build_topology(settings) if stages is None else stages)
        ]
        check_stream_order([r.stage for r in self.runners])
        self.gate = Gate(settings, wall_clock)
        self._decides = any(FINDING_STREAM in r.stage.streams for r in self.runners)
        self.stats = Stats()
        self.lock = threading.Lock()  # held while stats change, so a scrape sees a whole batch
        self._last_eviction = NO_TIME

    @property
    def watermark(self) -> int:
        return self.stats.watermark

    def process(
        self,
        raws: Sequence[bytes],
        source: str,
        first_position: int = 1,
        positions: Sequence[int | str] | None = None,
    ) -> BatchResult:
        """Run one batch of raw inputs through the gate, every stage and the policy."""
        admitted = self.gate.admit(raws, source, first_position, positions)
        by_type, span = admitted.by_type, admitted.span
        staged: Counter[str] = Counter()
        for runner in self.runners:
            stage = runner.stage
            for event_type in stage.event_types - stage.counted_types:
                runner.add_batch(by_type[event_type], span, event_type)
            for event_type in stage.counted_types:  # tallied into one count per key and pane
                runner.count_batch(by_type[event_type], span)  # type: ignore[union-attr]
            staged[stage.detector] += sum(len(by_type[t]) for t in stage.event_types)
        watermark = self.gate.watermark
        findings, actions = self._advance(watermark)
        with self.lock:
            st = self.stats
            st.inputs += len(raws)
            st.max_event_ts = self.gate.max_ts
            st.watermark = max(st.watermark, watermark)
            st.add_admitted(admitted)
            st.staged_by_stage.update(staged)
            st.add_outputs(findings, actions, [])
        return BatchResult(findings, actions, admitted.dead_letters, admitted.events)

    def finish(self) -> BatchResult:
        """The input has ended: close every open window up to the latest event time the
        stream reached, and report what they hold. Windows past it hold only outliers
        (`Gate.settled_ts`); closing them would reach every deadline in between."""
        findings: list[Finding] = []
        actions: list[Action] = []
        until = self.gate.settled_ts
        for runner in self.runners:
            found, decided = self._route(runner.flush(None if until == NO_TIME else until))
            findings.extend(found)
            actions.extend(decided)
        findings.sort(key=_finding_order)
        actions.sort(key=_action_order)
        with self.lock:
            self.stats.add_outputs(findings, actions, [])
        return BatchResult(findings, actions, [], 0)

    def _advance(self, watermark: int) -> tuple[list[Finding], list[Action]]:
        findings: list[Finding] = []
        actions: list[Action] = []
        for runner in self.runners:  # producers of a derived stream before its consumers
            found, decided = self._route(runner.advance(watermark))
            findings.extend(found)
            actions.extend(decided)
        if watermark - self._last_eviction >= self.settings.event_time.eviction_interval_ms:
            if self._last_eviction != NO_TIME:
                for runner in self.runners:
                    runner.evict_idle(watermark)
            self._last_eviction = watermark
        findings.sort(key=_finding_order)
        actions.sort(key=_action_order)
        return findings, actions

    def _route(self, outputs: list[Any]) -> tuple[list[Finding], list[Action]]:
        """The findings and actions among a runner's outputs; its derived records, and its
        findings for the enforcement stage, go to the stages consuming their stream (later
        in `runners`, so they close the same windows)."""
        findings, derived, actions = split_outputs(outputs)
        if findings and self._decides:
            derived.extend(finding_records(findings))
        if derived:
            for runner in self.runners:
                mine = [d for d in derived if d.stream in runner.stage.streams]
                if mine:
                    runner.add_batch(mine)
        return findings, actions

    def state_size(self) -> dict[str, int]:
        """Keys held per stage and ids held by the de-duplicator (memory introspection)."""
        sizes = {r.stage.detector: len(r) for r in self.runners}
        sizes["dedup_ids"] = len(self.gate.dedup)
        return sizes


def _finding_order(f: Finding) -> tuple[int, str, str]:
    return (f.ts, f.detector, f.subject_id)


def _action_order(a: Action) -> tuple[int, str]:
    return (a.ts, a.action_id)
