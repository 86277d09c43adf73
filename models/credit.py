"""A subject's credit (Article 13: credit levels), spent by findings, regained with time.

A subject starts at `top`. Each finding costs points (more for graver ones); the score
climbs back at `recover_per_day` while nothing new is found, never above `top`. Its
level is the highest band whose floor the score reaches. Time is event time in epoch
milliseconds, so a backtest over last month's log gives the levels last month had.

    >>> c = Credit(top=100.0)
    >>> c.charge(0, 30.0)
    70.0
    >>> c.score_at(2 * DAY, recover_per_day=5.0)
    80.0
    >>> level_of(80.0, {"A": 90.0, "B": 70.0, "C": 0.0})
    'B'
"""

from __future__ import annotations

import msgspec

DAY = 86_400_000


class Credit(msgspec.Struct, gc=False):
    """The score as of `ts` (epoch ms of the last change)."""

    top: float
    score: float = -1.0  # -1: untouched, at the top
    ts: int = 0

    def score_at(self, ts: int, recover_per_day: float) -> float:
        if self.score < 0:
            return self.top
        regained = max(ts - self.ts, 0) / DAY * recover_per_day
        return min(self.top, self.score + regained)

    def charge(self, ts: int, points: float, recover_per_day: float = 0.0) -> float:
        """Spend `points` at `ts`; the score after it (not below zero)."""
        now = self.score_at(ts, recover_per_day)
        self.score = max(0.0, now - points)
        self.ts = max(ts, self.ts)
        return self.score


def level_of(score: float, floors: dict[str, float]) -> str:
    """The highest level whose floor `score` reaches (`floors`: level -> minimum score)."""
    for level, floor in sorted(floors.items(), key=lambda kv: -kv[1]):
        if score >= floor:
            return level
    return min(floors.items(), key=lambda kv: kv[1])[0]
