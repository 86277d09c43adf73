"""summary.json: what a run read, rejected, found and decided, and how fast."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from pipeline.contract.events import NO_TIME
from pipeline.core.stats import Stats


def summarize(stats: Stats, elapsed_s: float, source: str) -> dict[str, Any]:
    events = sum(stats.events_by_type.values())
    dead = sum(stats.dead_letters_by_reason.values())
    return {
        "source": source,
        "inputs": stats.inputs,
        "blank_lines": stats.blank_lines,
        "events": events,
        "events_by_type": dict(sorted(stats.events_by_type.items())),
        "dead_letters": dead,
        "dead_letters_by_reason": dict(sorted(stats.dead_letters_by_reason.items())),
        "duplicates": stats.duplicates,
        "late_events": stats.dead_letters_by_reason.get("late", 0),
        "findings": sum(stats.findings_by_kind.values()),
        "findings_by_detector": _tally(stats, lambda d, a, s: f"{d} ({a})"),
        "findings_by_severity": _tally(stats, lambda d, a, s: s),
        "actions": sum(stats.actions_by_type.values()),
        "actions_by_type": {f"{a} ({m})": n for (a, m), n in sorted(stats.actions_by_type.items())},
        "watermark": None if stats.watermark <= NO_TIME // 2 else stats.watermark,
        "elapsed_s": round(elapsed_s, 3),
        "events_per_s": round(stats.inputs / elapsed_s, 1) if elapsed_s > 0 else None,
    }


def _tally(stats: Stats, label: Callable[[str, str, str], str]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for kind, n in stats.findings_by_kind.items():
        counts[label(*kind)] += n
    return dict(sorted(counts.items()))
