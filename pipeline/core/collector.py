"""How the garbage collector runs while an engine holds windows of events.

CPython's cyclic collector runs a young collection every 700 net new container objects
and, every so often, a full one that visits every live container: here the lists holding
a window's hundreds of thousands of events, the de-duplication sets and every key's
state. With every detector on, those full collections took 0.6 s of a 5 s replay of a
million events (three of them), and young ones 0.25 s more. Lockstep's own data is freed
by reference counting (its state holds no reference cycles), so while an engine runs the
thresholds are raised (a young collection per `young` net new containers, none of the
automatic full ones) and a full collection runs on a wall-clock cadence instead: garbage
in cycles (from libraries, exceptions) still cannot pile up for longer than
`full_every_s`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_NEVER = 1 << 30  # collections of the middle generation before an automatic full one


class Collector:
    """Raised thresholds plus a full collection every `full_every_s` seconds (`tick`)."""

    def __init__(
        self, young: int, full_every_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.young = young
        self.full_every_s = full_every_s
        self.clock = clock
        self.full_collections = 0
        self._last = clock()

    def tick(self) -> None:
        """Call between batches: runs a full collection when one is due."""
        now = self.clock()
        if now - self._last >= self.full_every_s:
            gc.collect()
            self.full_collections += 1
            self._last = self.clock()


@contextmanager
def collecting(young: int, full_every_s: float) -> Iterator[Collector]:
    """Run the block under `Collector`'s thresholds; the process's own come back after."""
    before = gc.get_threshold()
    collector = Collector(young, full_every_s)
    gc.set_threshold(young, 20, _NEVER)
    try:
        yield collector
    finally:
        gc.set_threshold(*before)
