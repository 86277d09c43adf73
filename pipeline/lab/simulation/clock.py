"""Simulated time: the fixed epoch, the platform's daily rhythm, and Poisson arrivals.

The epoch is a constant so that the same seed writes the same bytes. Rates follow local
(UTC+8) time of day, quiet before dawn and busiest in the evening, so a detector that
learns a flat baseline sees the drift a real platform shows.
"""

from __future__ import annotations

import numpy as np

EPOCH_MS = 1_772_409_600_000  # 2026-03-02T00:00:00Z, 08:00 in Beijing
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
UTC_OFFSET_MS = 8 * HOUR

# Relative activity at each local hour 0..23: night trough, lunch bump, evening peak.
_HOURLY = np.array(
    [1.0, 0.7, 0.45, 0.3, 0.25, 0.28, 0.4, 0.65, 0.85, 0.95, 1.0, 1.05,
     1.25, 1.15, 0.95, 0.95, 1.0, 1.05, 1.15, 1.3, 1.5, 1.65, 1.55, 1.3]
)  # fmt: skip
_HOURLY = _HOURLY / _HOURLY.mean()
_ANCHORS = np.arange(25.0)


def rhythm(ts: np.ndarray) -> np.ndarray:
    """Activity multiplier at each epoch-ms time, interpolated between the hourly levels;
    averages 1.0 over a day (about 0.26 before dawn, 1.75 at the evening peak)."""
    hours = ((np.asarray(ts, dtype=np.int64) + UTC_OFFSET_MS) % DAY) / HOUR
    return np.interp(hours, _ANCHORS, np.append(_HOURLY, _HOURLY[0]))


def minute_starts(start: int, end: int) -> np.ndarray:
    """The start of every minute in [start, end)."""
    return np.arange(start, end, MINUTE, dtype=np.int64)


def n_minutes(start: int, end: int) -> int:
    """How many minute bins `arrivals` uses for [start, end)."""
    return -(-(end - start) // MINUTE)


def arrivals(
    rng: np.random.Generator,
    start: int,
    end: int,
    per_hour: float,
    *,
    diurnal: bool = True,
    shape: np.ndarray | None = None,
) -> np.ndarray:
    """Sorted arrival times of a Poisson process over [start, end): `per_hour` times the
    daily rhythm and an optional per-minute `shape`, binned by minute (exact enough)."""
    minutes = minute_starts(start, end)
    lam = np.full(minutes.size, per_hour / 60.0)
    if diurnal:
        lam *= rhythm(minutes)
    if shape is not None:
        lam *= shape
    counts = rng.poisson(lam)
    ts = np.repeat(minutes, counts) + rng.integers(0, MINUTE, int(counts.sum()))
    ts = ts[ts < end]
    ts.sort()
    return ts


def arrivals_by_row(
    rng: np.random.Generator, start: int, end: int, per_hour: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals for many independent streams at once (one row per stream, e.g. per
    creator), all on the daily rhythm: returns (row index, ts) for every arrival."""
    minutes = minute_starts(start, end)
    lam = np.outer(np.asarray(per_hour, dtype=float) / 60.0, rhythm(minutes))
    counts = rng.poisson(lam)
    rows = np.repeat(np.arange(counts.shape[0]), counts.sum(axis=1))
    ts = np.repeat(np.tile(minutes, counts.shape[0]), counts.ravel())
    ts = ts + rng.integers(0, MINUTE, ts.size)
    keep = ts < end
    return rows[keep], ts[keep]
