"""A worker's stage redeliveries (records consumed again after a crash or a hand-over,
dropped as already applied) and stage records read back after its consumer passed over
them are exported per stage, and every stage shows, at 0 if none."""

from __future__ import annotations

import threading

import pytest

from pipeline.core.stats import Stats
from pipeline.outputs.metrics import EngineCollector


class _Engine:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.lock = threading.Lock()

    def state_size(self) -> dict[str, int]:
        return {}


@pytest.mark.parametrize(
    ("field", "family"),
    [
        ("stage_redeliveries", "lockstep_stage_redeliveries"),
        ("stage_records_refetched", "lockstep_stage_records_refetched"),
    ],
)
def test_stage_counters_are_exported_per_stage(field: str, family: str) -> None:
    stats = Stats()
    stats.staged_by_stage.update({"follower_jump": 40, "enforcement": 3})
    getattr(stats, field).update({"enforcement": 2})
    families = {f.name: f for f in EngineCollector(_Engine(stats)).collect()}
    samples = {
        s.labels["stage"]: s.value for s in families[family].samples if s.name.endswith("_total")
    }
    assert samples == {"enforcement": 2, "follower_jump": 0}
