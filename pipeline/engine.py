"""The embedded runtime's core: raw inputs in, findings, actions and dead letters out.

One batch at a time: decode and validate (dead-letter what fails), drop redelivered ids,
advance the watermark, dead-letter what falls behind it, hand each stage the events it
wants, then close the windows the watermark has passed. Nothing here does I/O; callers
(`lockstep replay`, `lockstep run`, the Faust worker) read inputs and write outputs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from pipeline.deadletter import DeadLetter, dead_letter
from pipeline.dedup import Deduplicator
from pipeline.detectors import build_stages
from pipeline.events import EVENT_TYPES, NO_TIME, Event, classify, decoder, to_epoch_ms
from pipeline.findings import Action, Finding
from pipeline.review import ReviewPolicy
from pipeline.settings import Settings
from pipeline.stage import KeyedRunner, Stage


@dataclass
class Stats:
    """Running totals; `lockstep replay` writes them to summary.json, `run` exports them."""

    inputs: int = 0
    blank_lines: int = 0
    events_by_type: Counter[str] = field(default_factory=Counter)
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    findings_by_kind: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    actions_by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    max_event_ts: int = NO_TIME
    watermark: int = NO_TIME


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
        self.runners = [
            KeyedRunner(s) for s in (build_stages(settings) if stages is None else stages)
        ]
        self._routes: dict[str, list[KeyedRunner]] = {t: [] for t in EVENT_TYPES}
        for runner in self.runners:
            for event_type in runner.stage.event_types:
                self._routes[event_type].append(runner)
        self.dedup = Deduplicator(settings.dedup.horizon_ms, settings.dedup.max_ids)
        self.review = ReviewPolicy(settings.review.min_severity)
        self.stats = Stats()
        self.lock = threading.Lock()  # held while stats change, so a scrape sees a whole batch
        self._wall_clock = wall_clock
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
        """Run one batch of raw inputs (JSON lines or record values) through every stage.

        Positions name each input in its source for dead letters: `positions[i]` when
        given (Kafka offsets), else `first_position + i` (line numbers).
        """
        cfg = self.settings
        keep = cfg.input.dead_letter_raw_bytes
        max_bytes = cfg.input.max_event_bytes
        min_ts = cfg.input.min_ts_ms
        max_ts_allowed = int(self._wall_clock() * 1000) + cfg.input.max_future_ms
        lateness = cfg.event_time.allowed_lateness_ms
        seen_now, seen_before = self.dedup.current, self.dedup.previous
        decode = decoder.decode
        by_type: dict[str, list[Event]] = {t: [] for t in EVENT_TYPES}
        dead: list[DeadLetter] = []
        max_ts = self.stats.max_event_ts
        watermark = max_ts - lateness
        duplicates = blank = 0

        def reject(i: int, reason: str, detail: str) -> None:
            where = positions[i] if positions is not None else first_position + i
            dead.append(dead_letter(reason, detail, source, where, raws[i], keep))

        for i, raw in enumerate(raws):
            if len(raw) > max_bytes:
                reject(i, "too_large", f"input is {len(raw)} bytes; the limit is {max_bytes}")
                continue
            try:
                event = decode(raw)
            except msgspec.DecodeError as exc:
                if raw.isspace() or not raw:
                    blank += 1
                else:
                    reject(i, classify(exc), str(exc))
                continue
            ts = event.ts
            if ts.__class__ is not int:
                ts = event.ts = to_epoch_ms(ts)
            if ts < min_ts or ts > max_ts_allowed:
                reject(
                    i,
                    "invalid_value",
                    f"ts {ts} is not plausible epoch milliseconds"
                    " (before 2000 or too far in the future)",
                )
                continue
            event_id = event.event_id
            if event_id in seen_now or event_id in seen_before:
                duplicates += 1
                continue
            seen_now.add(event_id)
            if ts > max_ts:
                max_ts = ts
                watermark = ts - lateness
            elif ts < watermark:
                reject(i, "late", f"event time {ts} is {watermark - ts} ms behind the watermark")
                continue
            by_type[event.type].append(event)

        for runner in self.runners:
            for event_type in runner.stage.event_types:
                runner.add_batch(by_type[event_type])
        self.dedup.expire(watermark)
        findings = self._advance(watermark)
        actions = self.review.actions_for(findings)
        events = sum(len(v) for v in by_type.values())
        with self.lock:
            st = self.stats
            st.inputs += len(raws)
            st.blank_lines += blank
            st.duplicates += duplicates
            st.max_event_ts = max_ts
            st.watermark = max(st.watermark, watermark)
            for event_type, evs in by_type.items():
                if evs:
                    st.events_by_type[event_type] += len(evs)
            for d in dead:
                st.dead_letters_by_reason[d.reason] += 1
            self._count_outputs(findings, actions)
        return BatchResult(findings, actions, dead, events)

    def finish(self) -> BatchResult:
        """The input has ended: close every open window and report what it holds."""
        findings: list[Finding] = []
        for runner in self.runners:
            findings.extend(runner.flush())
        findings.sort(key=_finding_order)
        actions = self.review.actions_for(findings)
        with self.lock:
            self._count_outputs(findings, actions)
        return BatchResult(findings, actions, [], 0)

    def _advance(self, watermark: int) -> list[Finding]:
        findings: list[Finding] = []
        for runner in self.runners:
            findings.extend(runner.advance(watermark))
        if watermark - self._last_eviction >= self.settings.event_time.eviction_interval_ms:
            if self._last_eviction != NO_TIME:
                for runner in self.runners:
                    runner.evict_idle(watermark)
            self._last_eviction = watermark
        findings.sort(key=_finding_order)
        return findings

    def _count_outputs(self, findings: list[Finding], actions: list[Action]) -> None:
        st = self.stats
        for f in findings:
            st.findings_by_kind[(f.detector, f.article, f.severity)] += 1
        for a in actions:
            st.actions_by_type[(a.action, a.mode)] += 1

    def state_size(self) -> dict[str, int]:
        """Keys held per stage and ids held by the de-duplicator (memory introspection)."""
        sizes = {r.stage.detector: len(r) for r in self.runners}
        sizes["dedup_ids"] = len(self.dedup)
        return sizes


def _finding_order(f: Finding) -> tuple[int, str, str]:
    return (f.ts, f.detector, f.subject_id)
