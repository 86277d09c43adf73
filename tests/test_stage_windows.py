"""The generic keyed runner: tumbling and sliding windows closed by the watermark, late
events, idle-key eviction, and redelivery within the de-duplication horizon."""

from __future__ import annotations

import json
import pickle
from typing import Any, ClassVar

from pipeline.contract.findings import Finding, make_finding
from pipeline.core.dedup import Deduplicator
from pipeline.core.settings import load_settings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.embedded.engine import Engine
from tests.helpers import MINUTE, T0


class CountingStage(Stage):
    """Reports every closed window's event count per target, to observe the runner."""

    detector = "count"
    key_field = "target"
    event_types: ClassVar[frozenset[str]] = frozenset({"follow"})

    def new_model(self) -> list[int]:
        return []

    def new_pane(self) -> list[int]:
        return [0]

    def add(self, pane: list[int], event: Any) -> None:
        pane[0] += 1

    def evaluate(
        self, key: str, model: list[int], panes: list[list[int]], start: int, end: int
    ) -> Finding | None:
        count = sum(p[0] for p in panes)
        model.append(count)
        return make_finding(
            detector=self.detector,
            article="test",
            subject_type="account",
            subject_id=key,
            window_start=start,
            window_end=end,
            score=1.0,
            severity="low",
            members=[],
            evidence={"count": count},
        )


def _line(i: int, ts: int, target: str = "a") -> bytes:
    return json.dumps(
        {"event_id": f"e{i}", "type": "follow", "ts": ts, "actor": f"u{i}", "target": target}
    ).encode()


def _engine(window: WindowSpec, lateness_ms: int = 30_000, **overrides: Any) -> Engine:
    settings = load_settings(
        overrides={"event_time": {"allowed_lateness_ms": lateness_ms}, **overrides}
    )
    return Engine(settings, stages=[CountingStage(window, idle_ttl_ms=10 * MINUTE)])


def _counts(findings: list[Finding]) -> dict[tuple[str, int], int]:
    return {(f.subject_id, f.window_end - T0): f.evidence["count"] for f in findings}


def test_tumbling_windows_close_only_when_the_watermark_passes_their_end() -> None:
    engine = _engine(WindowSpec.tumbling(MINUTE), lateness_ms=10_000)
    batch = [_line(i, T0 + i * 10_000) for i in range(7)]  # 0s .. 60s
    result = engine.process(batch, "t")
    assert result.findings == []  # watermark 50 s: the first minute is still open
    result = engine.process([_line(100, T0 + 70_001)], "t")  # watermark 60.001 s
    assert _counts(result.findings) == {("a", MINUTE): 6}
    assert result.findings[0].ts == T0 + MINUTE  # stamped with the watermark that closed it
    final = engine.finish()
    assert _counts(final.findings) == {("a", 2 * MINUTE): 2}


def test_sliding_windows_sum_their_panes() -> None:
    engine = _engine(WindowSpec(3 * MINUTE, MINUTE), lateness_ms=0)
    lines = [_line(i, T0 + i * MINUTE + 5_000) for i in range(4)]  # one event per minute
    findings = engine.process(lines, "t").findings + engine.finish().findings
    assert _counts(findings) == {
        ("a", 1 * MINUTE): 1,
        ("a", 2 * MINUTE): 2,
        ("a", 3 * MINUTE): 3,
        ("a", 4 * MINUTE): 3,
        ("a", 5 * MINUTE): 2,
        ("a", 6 * MINUTE): 1,
    }


def test_late_events_are_dead_lettered_not_merged() -> None:
    engine = _engine(WindowSpec.tumbling(MINUTE), lateness_ms=10_000)
    start = [_line(0, T0 + 5_000), _line(4, T0 + 6_000), _line(1, T0 + 80_000)]
    engine.process(start, "src", first_position=10)  # 3 events confirm where time starts
    late = engine.process([_line(2, T0 + 30_000), _line(3, T0 + 71_000)], "src", first_position=12)
    assert [(d.reason, d.position) for d in late.dead_letters] == [("late", 12)]
    assert engine.stats.dead_letters_by_reason["late"] == 1
    findings = engine.finish().findings
    assert _counts(findings)[("a", 2 * MINUTE)] == 2  # 80 s and 71 s: on time


def test_result_is_the_same_whatever_the_batch_boundaries() -> None:
    lines = [
        _line(i, T0 + (i * 7_919) % 600_000 + (i // 50) * 600_000, f"k{i % 5}") for i in range(400)
    ]
    reference = None
    for batch_size in (1, 7, 64, 400):
        engine = _engine(WindowSpec(2 * MINUTE, MINUTE), lateness_ms=600_000)
        findings: list[Finding] = []
        dead = 0
        for i in range(0, len(lines), batch_size):
            result = engine.process(lines[i : i + batch_size], "t")
            findings += result.findings
            dead += len(result.dead_letters)
        findings += engine.finish().findings
        outcome = (sorted(_counts(findings).items()), dead)
        reference = reference or outcome
        assert outcome == reference


def test_idle_keys_are_evicted_and_active_ones_kept() -> None:
    engine = _engine(
        WindowSpec.tumbling(MINUTE),
        lateness_ms=0,
        event_time={"allowed_lateness_ms": 0, "eviction_interval_ms": MINUTE},
    )
    engine.process([_line(i, T0 + i, f"old{i}") for i in range(100)], "t")
    assert engine.state_size()["count"] == 100
    for step in range(1, 30):  # half an hour of one busy key
        engine.process([_line(1000 + step, T0 + step * MINUTE, "busy")], "t")
    assert engine.state_size()["count"] == 1  # idle longer than ttl: gone
    assert engine.runners[0].store["busy"].model  # history of the active key kept
    assert len(engine.runners[0]._open) <= 1  # closed panes leave the runner's index
    engine.process([_line(2000, T0 + 30 * MINUTE + 1, "old3")], "t")  # an evicted key, back
    assert _counts(engine.finish().findings)[("old3", 31 * MINUTE)] == 1


def test_key_state_survives_pickling_for_table_stores() -> None:
    engine = _engine(WindowSpec.tumbling(MINUTE))
    engine.process([_line(1, T0)], "t")
    state = engine.runners[0].store["a"]
    copy = pickle.loads(pickle.dumps(state))
    assert copy.panes == state.panes and copy.model == state.model


def test_dedup_remembers_at_least_a_horizon_and_is_capped() -> None:
    dedup = Deduplicator(horizon_ms=10_000, max_ids=1000)
    dedup.expire(T0)
    assert dedup.first_time("a") and not dedup.first_time("a")
    for step in range(1, 11):  # a full horizon of watermark progress
        dedup.expire(T0 + step * 1_000)
        assert not dedup.first_time("a"), step
    dedup.expire(T0 + 20_000)
    dedup.expire(T0 + 30_000)
    assert dedup.first_time("a")  # two horizons later: forgotten
    for i in range(5000):
        dedup.first_time(f"id{i}")
        dedup.expire(T0 + 40_000)
    assert len(dedup) <= 1000


def test_redelivery_inside_the_horizon_is_counted_once() -> None:
    engine = _engine(WindowSpec.tumbling(MINUTE), dedup={"horizon_ms": 5 * MINUTE})
    first = engine.process([_line(1, T0), _line(2, T0 + 1000)], "t")
    again = engine.process([_line(1, T0), _line(3, T0 + 2 * MINUTE), _line(2, T0 + 1000)], "t")
    assert first.events == 2 and again.events == 1
    assert engine.stats.duplicates == 2 and not again.dead_letters
