"""A key's latest windows as a detector judged them, for a finding to chart: per window its
end, the count observed and the level the key's baseline expected.

The record is bounded (the last `points` windows) and kept as one `bytes` of packed
doubles: a judged window costs one short copy, with no object per point and nothing for
the garbage collector to track (a stream holds one per account or item), and it pickles
as it is, so the embedded runtime and a table-backed stage hold the same record.

    >>> recent = None
    >>> for t in range(1, 6):
    ...     recent = remember(recent, end=t * 60_000, observed=t, expected=1.234, points=3)
    >>> as_series(recent)
    {'t': [180000, 240000, 300000], 'value': [3, 4, 5], 'expected': [1.23, 1.23, 1.23]}
    >>> remember(None, 60_000, 4, 1.0, points=0) is None  # 0: keep nothing
    True
"""

from __future__ import annotations

import struct
from typing import Any

_POINT = struct.Struct("<3d")  # window end (ms), observed, expected


def remember(
    recent: bytes | None, end: int, observed: float, expected: float, points: int
) -> bytes | None:
    """`recent` with the window ending at `end` appended, cut to its last `points`."""
    if points <= 0:
        return None
    point = _POINT.pack(end, observed, expected)
    if not recent or points == 1:
        return point
    keep = _POINT.size * (points - 1)
    return (recent[-keep:] if len(recent) > keep else recent) + point


def restate(
    recent: bytes | None, end: int, observed: float, expected: float, points: int
) -> bytes | None:
    """`recent` with its last window, the one ending at `end`, said again with other
    counts (a finding judged by another count than the window's chart)."""
    if recent and _POINT.unpack(recent[-_POINT.size :])[0] == end:
        recent = recent[: -_POINT.size]
    return remember(recent, end, observed, expected, points)


def as_series(recent: bytes | None, digits: int = 2) -> dict[str, list[Any]]:
    """The record as `{"t": [...], "value": [...], "expected": [...]}`, oldest first
    (whole counts as integers, the expected level rounded to `digits`)."""
    t: list[int] = []
    value: list[float] = []
    expected: list[float] = []
    for end, observed, level in _POINT.iter_unpack(recent or b""):
        t.append(int(end))
        value.append(int(observed) if observed.is_integer() else round(observed, digits))
        expected.append(round(level, digits))
    return {"t": t, "value": value, "expected": expected}
