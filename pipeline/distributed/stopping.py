"""A worker told to stop exits within `kafka.stop_timeout_s`.

Faust's own stop has no bound: each RocksDB table store runs a full garbage collection as
it stops, and on a loaded machine (two cores, a broker and a second worker beside it) the
stop of one worker was measured at 12.7-17.2 s, and once at more than 60 s. An orchestrator
kills a process that outstays its grace period anyway; here the worker does it itself,
first saying so on one line. Nothing is lost by it: what the worker had not committed is
read again by the partitions' next owner, which drops the redeliveries, as after SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

FORCED_EXIT = 0  # the stop was asked for and is done; the log line says it was cut short


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where a pending task waits: its coroutine's name and the innermost frame of its
    await chain, as `name at file:line`, for the line that explains a forced exit."""
    coro: Any = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    where = ""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            where = f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return f"{name} at {where}" if where else name


def arm_stop_deadline(
    seconds: float,
    exit: Callable[[int], Any] = os._exit,
    loop: asyncio.AbstractEventLoop | None = None,
) -> threading.Timer:
    """Exit the process `seconds` from now unless it has exited by then, naming the
    tasks of `loop` still pending (what the stop was waiting for)."""

    def overdue() -> None:
        pending = []
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the set changed while read: skip it
                pending = sorted(awaiting(t) for t in asyncio.all_tasks(loop) if not t.done())
        log.warning(
            "the worker did not stop within kafka.stop_timeout_s (%g s) of the signal; "
            "exiting now (what it had not committed is read again by the next owner); "
            "still pending: %s",
            seconds,
            "; ".join(pending[:20]) or "nothing",
        )
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        exit(FORCED_EXIT)

    timer = threading.Timer(seconds, overdue)
    timer.daemon = True
    timer.start()
    return timer


def bounded_worker(app: faust.App, stop_timeout_s: float) -> faust.Worker:
    """A Faust worker whose stop, once a signal asks for it, takes `stop_timeout_s` at
    most. Everything loaded at start (the libraries, the configured models) is moved out
    of the collector's sight first, so the collections Faust runs have less to scan (the
    stop time after this was not measured apart from the bound)."""
    import faust

    class BoundedWorker(faust.Worker):
        def _schedule_shutdown(self, signal: Any) -> None:
            if not self._signal_stop_time:
                arm_stop_deadline(stop_timeout_s, loop=self.loop)
            super()._schedule_shutdown(signal)

    gc.collect()
    gc.freeze()
    return BoundedWorker(app, loglevel="WARNING", quiet=True)
