"""`lockstep replay`: a whole file through every enabled detector and the policy, as fast
as it can, writing findings, actions, dead letters and a summary (docs/contract.md §4)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.core.collector import collecting
from pipeline.core.settings import Settings
from pipeline.core.sources import LineSource
from pipeline.embedded.engine import Engine
from pipeline.embedded.summary import summarize
from pipeline.outputs.fanout import Fanout


def replay(
    events: str,
    out: str | Path,
    settings: Settings,
    progress: bool = False,
    audit: str | None = None,
) -> dict[str, Any]:
    """Replay `events` (path, .gz or '-') into `out`; returns the summary it writes.

    Raises InputError when the input cannot be read; whatever was read before a corrupt
    block is still processed and written.
    """
    source = LineSource(events, settings.input.max_event_bytes)
    engine = Engine(settings)
    outputs = Fanout.from_settings(settings, Path(out), audit=audit, fresh=True)
    extra: dict[str, Any] = {}
    started = time.perf_counter()
    line = 1
    bar = _progress_bar(source) if progress else None
    try:
        with collecting(settings.run.gc_young, settings.run.gc_full_every_s) as collector:
            for lines in source:
                outputs.write(engine.process(lines, source.name, first_position=line))
                line += len(lines)
                collector.tick()
                if bar is not None:
                    bar[0].update(bar[1], completed=source.position())
            outputs.write(engine.finish())
            if outputs.webhooks is not None:
                extra["webhook_deliveries"] = outputs.webhooks.deliver(settings.webhooks.wait_s)
    finally:
        if bar is not None:
            bar[0].stop()
        source.close()
        outputs.close()
        elapsed = time.perf_counter() - started
        summary = _write_summary(engine, elapsed, source.name, Path(out), extra)
    return summary


def _write_summary(
    engine: Engine, elapsed: float, name: str, out: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    summary = {**summarize(engine.stats, elapsed, name), **extra}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def _progress_bar(source: LineSource) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("replay {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = bar.add_task(source.name, total=source.size)
    bar.start()
    return bar, task
