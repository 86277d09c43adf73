"""A worker's stage redeliveries (records consumed again after a crash or a hand-over,
dropped as already applied) are exported per stage, and every stage shows, at 0 if none."""

from __future__ import annotations

import threading

from pipeline.core.stats import Stats
from pipeline.outputs.metrics import EngineCollector


class _Engine:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.lock = threading.Lock()

    def state_size(self) -> dict[str, int]:
        return {}


def test_stage_redeliveries_are_exported_per_stage() -> None:
    stats = Stats()
    stats.staged_by_stage.update({"follower_jump": 40, "enforcement": 3})
    stats.stage_redeliveries.update({"enforcement": 2})
    families = {f.name: f for f in EngineCollector(_Engine(stats)).collect()}
    samples = {
        s.labels["stage"]: s.value
        for s in families["lockstep_stage_redeliveries"].samples
        if s.name.endswith("_total")
    }
    assert samples == {"enforcement": 2, "follower_jump": 0}


def test_stage_records_refetched_are_exported_per_stage() -> None:
    stats = Stats()
    stats.staged_by_stage.update({"follower_jump": 40, "enforcement": 3})
    stats.stage_records_refetched.update({"enforcement": 95})
    families = {f.name: f for f in EngineCollector(_Engine(stats)).collect()}
    samples = {
        s.labels["stage"]: s.value
        for s in families["lockstep_stage_records_refetched"].samples
        if s.name.endswith("_total")
    }
    assert samples == {"enforcement": 95, "follower_jump": 0}
