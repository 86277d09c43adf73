"""`lockstep replay`: a whole file through every enabled detector and the policy, as fast
as it can, writing findings, actions, dead letters and a summary (CONTRACT.md §4)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline import webhooks
from pipeline.audit import AuditTrail, open_audit
from pipeline.collector import collecting
from pipeline.engine import Engine
from pipeline.settings import Settings
from pipeline.sinks import OutputDir
from pipeline.sources import LineSource
from pipeline.summary import summarize


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
    source = LineSource(events)
    engine = Engine(settings)
    outputs = OutputDir(out)
    if audit is None:  # replay's own trail holds this run, like findings.jsonl
        trail = Path(out) / "audit.sqlite"
        trail.unlink(missing_ok=True)
        audit = str(trail)
    store = open_audit(audit)
    hooks = webhooks.from_settings(settings.webhooks, Path(out) / "webhook_outbox.sqlite")
    extra: dict[str, Any] = {}
    started = time.perf_counter()
    line = 1
    bar = _progress_bar(source) if progress else None
    try:
        with collecting(settings.run.gc_young, settings.run.gc_full_every_s) as collector:
            for lines in source:
                result = engine.process(lines, source.name, first_position=line)
                outputs.write(result)
                _record(store, result)
                if hooks is not None:
                    hooks[0].enqueue(result.actions, hooks[1].endpoints, time.time())
                line += len(lines)
                collector.tick()
                if bar is not None:
                    bar[0].update(bar[1], completed=source.position())
            result = engine.finish()
            outputs.write(result)
            _record(store, result)
            if hooks is not None:
                hooks[0].enqueue(result.actions, hooks[1].endpoints, time.time())
                extra["webhook_deliveries"] = hooks[1].run(settings.webhooks.wait_s)
    finally:
        if bar is not None:
            bar[0].stop()
        source.close()
        outputs.close()
        store.close()
        if hooks is not None:
            hooks[1].close()
            hooks[0].close()
        elapsed = time.perf_counter() - started
        summary = _write_summary(engine, elapsed, source.name, Path(out), extra)
    return summary


def _record(audit: AuditTrail, result: Any) -> None:
    """Findings, then the actions resting on them, into the audit trail."""
    if result.findings:
        audit.append("finding", result.findings, "finding_id")
    if result.actions:
        audit.append("action", result.actions, "action_id")


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
