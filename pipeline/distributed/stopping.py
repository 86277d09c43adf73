"""A worker told to stop exits within `kafka.stop_timeout_s`; one whose work failed stops.

Faust's own stop has no bound: each RocksDB table store runs a full garbage collection as
it stops, and on a loaded machine (two cores, a broker and a second worker beside it) the
stop of one worker was measured at 12.7-17.2 s, and once at more than 60 s. An orchestrator
kills a process that outstays its grace period anyway; here the worker does it itself,
first saying so on one line. Nothing is lost by it: what the worker had not committed is
read again by the partitions' next owner, which drops the redeliveries, as after SIGKILL.

A stage round or the ingest loop that raises ends the worker with `WORKER_FAILED`, after
one log line naming what failed. Faust's own answer, restarting the agent in the same
process, kept the consumer in the group: the agent failed again on the same state, the
worker stayed up and owned its partitions, and nothing more came out of them, with no
signal but a silence. Exiting lets the group hand them to a healthy worker and the
orchestrator restart this one (and a failure that follows the state shows as a crash loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)

FORCED_EXIT = 0  # the stop was asked for and is done; the log line says it was cut short
WORKER_FAILED = 70  # EX_SOFTWARE: a stage or the ingest loop raised; restart the worker


class Failure:
    """The first error that ended this worker's work; `fail` asks the worker to stop."""

    def __init__(self, stop: Callable[[], Any] | None = None) -> None:
        self.reason: BaseException | None = None
        self._stop = stop or (lambda: os.kill(os.getpid(), signal.SIGTERM))

    def exit_code(self) -> int:
        return FORCED_EXIT if self.reason is None else WORKER_FAILED

    def fail(self, what: str, exc: BaseException) -> None:
        """Log `what` failed with `exc` and stop the worker (the first failure stops it;
        later ones, often the same error again on the way down, are logged only)."""
        first = self.reason is None
        if first:
            self.reason = exc
        log.critical(
            "%s failed: %s: %s; the worker stops (exit %d) so that its partitions move "
            "to another worker",
            what,
            type(exc).__name__,
            exc,
            WORKER_FAILED,
            exc_info=exc,
        )
        if first:
            self._stop()


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
    code: Callable[[], int] = lambda: FORCED_EXIT,
) -> threading.Timer:
    """Exit the process `seconds` from now unless it has exited by then, naming the
    tasks of `loop` still pending (what the stop was waiting for), with `code()`."""

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
        exit(code())

    timer = threading.Timer(seconds, overdue)
    timer.daemon = True
    timer.start()
    return timer


def bounded_worker(
    app: faust.App, stop_timeout_s: float, failure: Failure | None = None
) -> faust.Worker:
    """A Faust worker whose stop, once a signal asks for it, takes `stop_timeout_s` at
    most. Everything loaded at start (the libraries, the configured models) is moved out
    of the collector's sight first, so the collections Faust runs have less to scan (the
    stop time after this was not measured apart from the bound)."""
    import faust

    class BoundedWorker(faust.Worker):
        def _schedule_shutdown(self, signal: Any) -> None:
            if not self._signal_stop_time:
                code = failure.exit_code if failure is not None else lambda: FORCED_EXIT
                arm_stop_deadline(stop_timeout_s, loop=self.loop, code=code)
            super()._schedule_shutdown(signal)

    gc.collect()
    gc.freeze()
    return BoundedWorker(app, loglevel="WARNING", quiet=True)
