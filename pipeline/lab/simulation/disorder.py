"""Transport noise: the order lines arrive in, redelivered duplicates, malformed lines.

Each event is delayed by a random transport lag (mostly under a second, a few up to 20 s)
and lines are written in arrival order, so no line is ever more than MAX_LAG behind the
latest event time before it, well inside the pipeline's 30 s allowed lateness. About
0.5% of events are delivered a second time, byte for byte, shortly after the first.
"""

from __future__ import annotations

import msgspec
import numpy as np

from pipeline.lab.simulation.clock import SECOND

MAX_LAG = 24 * SECOND  # a line's event time is at most this far behind earlier lines
DUPLICATE_SHARE = 0.005
MALFORMED_KINDS = ("invalid_json", "missing_field", "wrong_type", "unknown_type", "not_object")


def arrival_order(rng: np.random.Generator, ts: np.ndarray) -> np.ndarray:
    """Indices of events in the order they are written; a redelivered event's index
    appears twice."""
    n = ts.size
    roll = rng.random(n)
    lag = np.where(
        roll < 0.72,
        rng.uniform(0, 0.8 * SECOND, n),
        np.where(roll < 0.95, rng.exponential(2.5 * SECOND, n), rng.uniform(4, 20, n) * SECOND),
    )
    lag = np.minimum(lag, 22 * SECOND).astype(np.int64)
    again = np.flatnonzero(rng.random(n) < DUPLICATE_SHARE)
    relag = np.minimum(lag[again] + rng.uniform(0.3, 10, again.size) * SECOND, MAX_LAG)
    arrive = np.concatenate([ts + lag, ts[again] + relag.astype(np.int64)])
    index = np.concatenate([np.arange(n), again])
    return index[np.argsort(arrive, kind="stable")]


def malformed_slots(rng: np.random.Generator, lines: int) -> list[tuple[int, int, str]]:
    """Where to insert malformed lines: (position among the lines, the event a broken
    line is made from, how it is broken). A handful per hundred thousand lines."""
    n = max(5, round(lines * 4e-5))
    where = np.sort(rng.integers(0, lines + 1, n)).tolist()
    base = rng.integers(0, max(lines, 1), n).tolist()
    kinds = [MALFORMED_KINDS[int(k)] for k in rng.integers(0, len(MALFORMED_KINDS), n)]
    return list(zip(where, base, kinds, strict=True))


def corrupt(rng: np.random.Generator, event: dict[str, object], how: str) -> bytes:
    """One broken line made from an event (with its own event id): not JSON, a required
    field missing, a field of the wrong type, an unknown type, or not an object."""
    broken = dict(event)
    if how == "invalid_json":
        raw = msgspec.json.encode(broken)
        return raw[: int(rng.integers(5, max(len(raw) - 2, 6)))]
    if how == "missing_field":
        broken.pop(("actor", "ts", "type")[int(rng.integers(0, 3))])
    elif how == "wrong_type":
        field = ("ts", "actor", "event_id")[int(rng.integers(0, 3))]
        broken[field] = {"ts": str(broken["ts"]), "actor": 12345, "event_id": None}[field]
    elif how == "unknown_type":
        broken["type"] = "teleport"
    else:
        return msgspec.json.encode([broken])
    return msgspec.json.encode(broken)
