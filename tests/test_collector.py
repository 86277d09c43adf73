"""`pipeline.core.collector`: raised thresholds while an engine runs, a full collection on a
wall-clock cadence (so cyclic garbage is still freed), the process's own thresholds back
afterwards."""

from __future__ import annotations

import gc
import weakref

from pipeline.core.collector import Collector, collecting


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_thresholds_are_raised_inside_and_restored_after() -> None:
    before = gc.get_threshold()
    with collecting(50_000, 60.0):
        young, _, full = gc.get_threshold()
        assert young == 50_000 and full > 10**6
    assert gc.get_threshold() == before


def test_a_full_collection_runs_when_due_and_frees_cycles() -> None:
    now = [0.0]
    collector = Collector(50_000, 10.0, clock=lambda: now[0])
    with collecting(50_000, 10.0):
        gc.collect()
        ref = _cycle()
        collector.tick()  # not due yet: the cycle survives (no automatic full collection)
        assert ref() is not None and collector.full_collections == 0
        now[0] = 10.5
        collector.tick()
        assert ref() is None and collector.full_collections == 1
        collector.tick()  # the cadence starts again from the last collection
        assert collector.full_collections == 1
