"""`lockstep run`: the embedded runtime on a live stream.

A reader thread feeds raw lines into a queue; the loop cuts them into batches (full, or
after `max_batch_wait_s`), runs each through the engine, writes results at once and
observes the batch latency. Standard input ends the run at its end; a followed file is
tailed until the process is stopped.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipeline.core.collector import collecting
from pipeline.core.settings import Settings
from pipeline.embedded.engine import BatchResult, Engine
from pipeline.outputs.fanout import Fanout
from pipeline.outputs.metrics import Metrics

_END = None  # queue marker: the source is exhausted


def stdin_lines() -> Iterator[bytes]:
    yield from iter(sys.stdin.buffer.readline, b"")


def file_lines(
    path: str, follow: bool, poll_s: float = 0.2, stop: threading.Event | None = None
) -> Iterator[bytes]:
    """Lines of a file; with `follow`, wait for it to exist, keep reading as it grows, and
    start over on a new file when it is replaced (log rotation)."""
    while follow and not os.path.exists(path) and (stop is None or not stop.is_set()):
        time.sleep(poll_s)
    handle = open(path, "rb")  # noqa: SIM115 - closed below
    partial = b""
    try:
        while stop is None or not stop.is_set():
            chunk = handle.readline()
            if chunk:
                if chunk.endswith(b"\n"):
                    yield partial + chunk
                    partial = b""
                else:
                    partial += chunk
                continue
            if not follow:
                break
            try:
                if os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
                    handle.close()
                    handle = open(path, "rb")  # noqa: SIM115 - rotated: start the new file
            except FileNotFoundError:
                pass
            time.sleep(poll_s)
        if partial:
            yield partial
    finally:
        handle.close()


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
