"""The watermark follows the stream, not its outliers: one event stamped far ahead (a bad
clock, a bit-flipped `ts`) is admitted without dragging the watermark, so no other event
turns late; a real jump in time (logs of two days with a gap) moves it once confirmed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.contract.events import NO_TIME
from pipeline.core.gate import Admitted, Gate
from pipeline.core.settings import ConfigError, Settings, load_settings
from pipeline.distributed.runtime import Ingest
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from pipeline.lab.simulation import simulate
from tests.helpers import HOUR, T0

DAY = 24 * HOUR
SETTINGS = load_settings()
LATENESS = SETTINGS.event_time.allowed_lateness_ms
CONFIRMATIONS = SETTINGS.event_time.jump_confirmations


def _line(i: int, ts: int) -> bytes:
    event = {"event_id": f"e{i}", "type": "follow", "ts": ts, "actor": f"u{i}", "target": "a"}
    return json.dumps(event).encode()


def _stream(count: int, start: int = T0, step_ms: int = 100) -> list[int]:
    """Event times of a steady stream, a little out of order (within the lateness)."""
    return [start + i * step_ms - (i % 7) * 1_000 for i in range(count)]


def _gate(wall_clock_ms: int, settings: Settings = SETTINGS) -> Gate:
    return Gate(settings, wall_clock=lambda: wall_clock_ms / 1000)


def _admit(gate: Gate, stamps: list[int], batch: int) -> Iterator[Admitted]:
    lines = [_line(i, ts) for i, ts in enumerate(stamps)]
    for first in range(0, len(lines), batch):
        yield gate.admit(lines[first : first + batch], "in", first_position=first + 1)


def _reasons(admitted: list[Admitted]) -> list[str]:
    return [d.reason for a in admitted for d in a.dead_letters]


@pytest.mark.parametrize("batch", [1, 500])
def test_one_event_a_day_ahead_makes_no_other_event_late(batch: int) -> None:
    stamps = _stream(2_000)
    stamps[9] += DAY  # inside the wall-clock bound: a day ahead of the data only
    gate = _gate(wall_clock_ms=T0 + HOUR)
    admitted = list(_admit(gate, stamps, batch))
    assert _reasons(admitted) == []
    assert sum(a.events for a in admitted) == 2_000  # the outlier is kept, not lost
    assert gate.watermark == max(stamps[:9] + stamps[10:]) - LATENESS


@pytest.mark.parametrize("batch", [1, 500])
@pytest.mark.parametrize("where", [0, 1, 1_234, 1_999])
def test_a_bit_flipped_ts_does_not_move_the_watermark(batch: int, where: int) -> None:
    stamps = _stream(2_000)
    honest = list(stamps)
    stamps[where] ^= 1 << 31  # 25 days ahead, still before a replay's wall clock
    gate = _gate(wall_clock_ms=T0 + 400 * DAY)
    admitted = list(_admit(gate, stamps, batch))
    assert _reasons(admitted) == []
    assert sum(a.events for a in admitted) == 2_000
    assert gate.watermark == max(honest[:where] + honest[where + 1 :]) - LATENESS


def test_scattered_outliers_do_not_add_up_to_a_jump() -> None:
    stamps = _stream(3_000)
    for where, bit in ((100, 27), (900, 31), (1_700, 34), (2_500, 37)):
        stamps[where] ^= 1 << bit
    gate = _gate(wall_clock_ms=T0 + 4_000 * DAY)
    assert _reasons(list(_admit(gate, stamps, 1))) == []
    assert gate.watermark < T0 + HOUR


@pytest.mark.parametrize("batch", [1, 64])
def test_a_real_jump_in_time_moves_the_watermark_once_confirmed(batch: int) -> None:
    first_day = _stream(1_000)
    second_day = _stream(1_000, start=T0 + DAY)
    gate = _gate(wall_clock_ms=T0 + 400 * DAY)
    assert _reasons(list(_admit(gate, first_day, batch))) == []
    lines = [_line(10_000 + i, ts) for i, ts in enumerate(second_day)]
    for i in range(CONFIRMATIONS - 1):  # admitted, not yet trusted to move the watermark
        assert gate.admit([lines[i]], "in").events == 1
        assert gate.watermark == max(first_day) - LATENESS
    assert gate.admit([lines[CONFIRMATIONS - 1]], "in").events == 1
    assert gate.watermark >= T0 + DAY - LATENESS
    rest = [gate.admit(lines[i : i + batch], "in") for i in range(CONFIRMATIONS, 1_000, batch)]
    assert _reasons(rest) == []
    assert gate.watermark == max(second_day) - LATENESS
    straggler = gate.admit([_line(99_999, max(first_day))], "in")
    assert [d.reason for d in straggler.dead_letters] == ["late"]  # day one is closed now


def test_the_first_events_confirm_where_the_stream_starts() -> None:
    gate = _gate(wall_clock_ms=T0 + HOUR)
    stamps = _stream(CONFIRMATIONS + 1)
    for i, ts in enumerate(stamps[:-1]):
        gate.admit([_line(i, ts)], "in")
        if i < CONFIRMATIONS - 1:
            assert gate.watermark == NO_TIME
    assert gate.watermark == max(stamps[:-1]) - LATENESS


def test_every_input_partition_of_the_distributed_runtime_holds_its_outliers() -> None:
    settings = load_settings(overrides={"kafka": {"partitions": 2}})
    ingest = Ingest(settings, [], Topics(settings.kafka.topic_prefix, 2))
    for tp in ("in:0", "in:1"):
        stamps = _stream(500)
        stamps[3] += DAY
        lines = [_line(i, ts) for i, ts in enumerate(stamps)]
        for first in range(0, 500, 50):
            batch = lines[first : first + 50]
            admitted = ingest.admit(tp, batch, list(range(first, first + len(batch))))
            assert admitted.dead_letters == []
        assert ingest.gates[tp].watermark == max(stamps[:3] + stamps[4:]) - LATENESS


@pytest.mark.parametrize(
    ("key", "value"), [("max_jump_ms", 0), ("max_jump_ms", -1), ("jump_confirmations", 0)]
)
def test_jump_settings_out_of_range_are_refused(key: str, value: int) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(overrides={"event_time": {key: value}})


def _ids(lines: list[bytes], settings: Settings) -> tuple[list[str], list[str]]:
    engine = Engine(settings, wall_clock=lambda: (T0 + 400 * DAY) / 1000)
    results = [engine.process(lines[i : i + 2_000], "w") for i in range(0, len(lines), 2_000)]
    results.append(engine.finish())
    findings = sorted(f.finding_id for r in results for f in r.findings)
    actions = sorted(a.action_id for r in results for a in r.actions)
    return findings, actions


def test_an_outlier_far_ahead_changes_nothing_when_the_input_ends(tmp_path: Path) -> None:
    """The replay ends at the time the stream reached, not at its outlier's: closing every
    window up to a follow bit-flipped 50 days ahead would reach every deadline between
    (it issued two hoarded_accounts findings and 843 actions of its own on a world)."""
    events = tmp_path / "world.jsonl"
    simulate(120, 3, None, out=events, labels_out=tmp_path / "labels.json", scale=0.3)
    lines = events.read_bytes().splitlines()
    flipped = list(lines)
    where = next(i for i in range(len(lines) // 2, len(lines)) if b'"type":"follow"' in lines[i])
    event = json.loads(lines[where])
    event["ts"] ^= 1 << 32
    flipped[where] = json.dumps(event).encode()
    honest_findings, honest_actions = _ids(lines, SETTINGS)
    assert honest_findings and honest_actions  # the world has cases, their deadlines too
    assert _ids(flipped, SETTINGS) == (honest_findings, honest_actions)
