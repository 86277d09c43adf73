"""`lockstep run`: the embedded runtime on a live stream.

A reader thread feeds raw lines into a queue, each bounded as `lockstep replay` bounds them
(a line over `input.max_event_bytes` comes as its head, never held whole, and the gate
dead-letters it as too large); the loop cuts them into batches (full, or after
`max_batch_wait_s`), runs each through the engine, writes results at once and observes the
batch latency. Standard input ends the run at its end; a followed file is
tailed until the process is stopped.
"""

from __future__ import annotations

import io
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipeline.core.collector import collecting
from pipeline.core.settings import Settings, load_settings
from pipeline.core.sources import LineSource
from pipeline.embedded.engine import BatchResult, Engine
from pipeline.outputs.fanout import Fanout
from pipeline.outputs.metrics import Metrics

_END = None  # queue marker: the source is exhausted


def _bound(max_line_bytes: int | None) -> int:
    """The longest line read whole: the settings' `input.max_event_bytes` unless given (a
    longer line comes as its head, which the gate dead-letters as too large)."""
    return load_settings().input.max_event_bytes if max_line_bytes is None else max_line_bytes


def stdin_lines(max_line_bytes: int | None = None) -> Iterator[bytes]:
    """Standard input's lines as they arrive, each bounded as `lockstep replay` bounds them
    (`LineSource`): a line too long is never held whole."""
    source = LineSource("-", _bound(max_line_bytes))
    yield from source.lines()


class _Growing(io.BufferedIOBase):
    """A file read as it grows, for a `LineSource`: at its end `read1` waits for more (it
    ends only once `stop` is set), and reads a file that replaced it (log rotation) from
    its start."""

    def __init__(self, path: str, poll_s: float, stop: threading.Event | None) -> None:
        super().__init__()
        self.path, self.poll_s, self.stop = path, poll_s, stop
        self.handle = open(path, "rb")  # noqa: SIM115 - closed in close()

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1, /) -> bytes:
        while self.stop is None or not self.stop.is_set():
            if chunk := self.handle.read1(size):
                return chunk
            if self._replaced():
                self.handle.close()
                self.handle = open(self.path, "rb")  # noqa: SIM115 - closed in close()
                continue
            time.sleep(self.poll_s)
        return b""

    def _replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(self.handle.fileno()).st_ino
        except FileNotFoundError:  # being replaced: the new file is not there yet
            return False

    def tell(self) -> int:
        return self.handle.tell()

    def close(self) -> None:
        self.handle.close()
        super().close()


def file_lines(
    path: str,
    follow: bool,
    poll_s: float = 0.2,
    stop: threading.Event | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[bytes]:
    """Lines of a file, each bounded as `lockstep replay` bounds them (`LineSource`); with
    `follow`, wait for it to exist, keep reading as it grows until `stop` is set, and start
    over on a new file when it is replaced (log rotation)."""
    bound = _bound(max_line_bytes)
    if not follow:
        source = LineSource(path, bound)
    else:
        while not os.path.exists(path):
            if stop is not None and stop.is_set():
                return
            time.sleep(poll_s)
        source = LineSource(path, bound, stream=_Growing(path, poll_s, stop))
    try:
        yield from source.lines()
    finally:
        source.close()


def _pump(lines: Iterable[bytes], q: queue.Queue[bytes | None]) -> None:
    try:
        for line in lines:
            q.put(line)
    finally:
        q.put(_END)


def run_live(
    lines: Iterable[bytes],
    source_name: str,
    settings: Settings,
    out: str | Path,
    metrics_port: int | None = None,
    on_result: Callable[[BatchResult], None] | None = None,
    engine: Engine | None = None,
) -> Engine:
    """Process `lines` continuously until they end; returns the engine (for its totals)."""
    engine = engine or Engine(settings)
    if metrics_port:
        metrics: Metrics | None = Metrics(engine)
        metrics.serve(metrics_port)
    else:
        metrics = None
    # appended to: the throttling hook follows actions.jsonl, and what it holds is in force
    outputs = Fanout.from_settings(settings, Path(out), append=True)
    if outputs.webhooks is not None:
        outputs.webhooks.deliver_in_background()
    q: queue.Queue[bytes | None] = queue.Queue(maxsize=settings.run.batch_size * 8)
    threading.Thread(target=_pump, args=(lines, q), daemon=True, name="lockstep-reader").start()
    batch_size, wait_s = settings.run.batch_size, settings.run.max_batch_wait_s
    position, ended = 1, False
    run = settings.run
    with collecting(run.gc_young, run.gc_full_every_s) as collector:
        try:
            while not ended:
                batch: list[bytes] = []
                first = q.get()
                if first is _END:
                    break
                started = time.perf_counter()
                batch.append(first)
                deadline = started + wait_s
                while len(batch) < batch_size:
                    try:
                        item = q.get(timeout=max(deadline - time.perf_counter(), 0.0))
                    except queue.Empty:
                        break
                    if item is _END:
                        ended = True
                        break
                    batch.append(item)
                result = engine.process(batch, source_name, first_position=position)
                position += len(batch)
                _emit(result, outputs, on_result)
                collector.tick()
                if metrics is not None:
                    metrics.latency.observe(time.perf_counter() - started)
            _emit(engine.finish(), outputs, on_result)
        finally:
            if outputs.webhooks is not None:  # what is still due, before leaving
                outputs.webhooks.deliver(settings.webhooks.wait_s)
            outputs.close()
    return engine


def _emit(
    result: BatchResult, outputs: Fanout, on_result: Callable[[BatchResult], None] | None
) -> None:
    outputs.write(result)
    outputs.flush()
    if on_result is not None:
        on_result(result)
