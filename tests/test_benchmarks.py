"""The benchmark harnesses still run against the code they measure: each is run by hand,
so a changed signature would otherwise surface only when someone next measures."""

from __future__ import annotations

from pathlib import Path

from benchmarks.streams import ensure_file
from benchmarks.throughput import decode_only, full_replay


def test_throughput_runs_its_baseline_and_replay_on_a_small_stream(tmp_path: Path) -> None:
    path = ensure_file(tmp_path / "mixed.jsonl", 2_000)
    rate, decoded = decode_only(path)
    assert decoded == 2_000 and rate > 0
    rate, summary = full_replay(path)
    assert summary["inputs"] == 2_000 and rate > 0
