"""How active the platform's followers usually are: a prior for accounts never seen.

A follower who took two actions in the hours around a follow is quiet on a platform where
followers take twenty, and ordinary where they take one. So "low activity" is measured
against the platform's own followers, not against a constant: `ActivityNorm` keeps the
latest `size` followers judged, each as its activity rate (actions per hour) and whether
it was found low, and says what the median follower does (`rate`) and how common a
low-activity follower is (`low_share`). Each followed account contributes its latest
`per_account` followers at most, so the norm is the platform's and not that of one
account's drip, however large (the accounts a campaign feeds must not set the bar it is
judged by). Medians and shares over the latest followers are robust to the few accounts
that act all day, and they move with the daily rhythm. It is a platform-wide prior: a
stream that starts with a campaign under way judges the campaign's followers against
everybody else's from its first minutes, before any account has a history.

    >>> norm = ActivityNorm(size=4, per_account=2)
    >>> norm.rate is None, norm.low_share
    (True, None)
    >>> norm.learn([("a", 12.0, False), ("b", 0.0, True), ("c", 20.0, False)])
    >>> norm.rate, round(norm.low_share, 3)
    (12.0, 0.333)
    >>> norm.learn([("d", 15.0, False), ("d", 30.0, False)])  # the oldest (a) makes room
    >>> norm.rate, norm.low_share
    (17.5, 0.25)
    >>> norm.learn([("d", 0.0, True)] * 5)  # one account's followers: only its latest two
    >>> sorted(norm.judged)
    [('b', 0.0, True), ('c', 20.0, False), ('d', 0.0, True), ('d', 0.0, True)]
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter, deque
from collections.abc import Iterable


class ActivityNorm:
    __slots__ = ("judged", "lows", "per_account", "rates", "size", "taken")

    def __init__(self, size: int, per_account: int) -> None:
        if size < 1 or per_account < 1:
            raise ValueError("size and per_account must be at least 1")
        self.size = size
        self.per_account = per_account
        self.judged: deque[tuple[str, float, bool]] = deque()
        self.taken: Counter[str] = Counter()  # followed account -> its entries in `judged`
        self.rates: list[float] = []  # the rates of `judged`, kept sorted (the median)
        self.lows = 0  # how many of `judged` were found low-activity

    def learn(self, judged: Iterable[tuple[str, float, bool]]) -> None:
        """Followers judged, oldest first: (followed account, actions per hour, found
        low-activity)."""
        rows, taken = self.judged, self.taken
        for row in judged:
            account = row[0]
            if taken[account] >= self.per_account:
                oldest = next(r for r in rows if r[0] == account)  # its oldest
                rows.remove(oldest)
                self._forget(oldest)
            elif len(rows) >= self.size:
                oldest = rows.popleft()
                self._forget(oldest)
                taken[oldest[0]] -= 1
                if not taken[oldest[0]]:
                    del taken[oldest[0]]
                taken[account] += 1
            else:
                taken[account] += 1
            rows.append(row)
            insort(self.rates, row[1])
            self.lows += row[2]

    def _forget(self, row: tuple[str, float, bool]) -> None:
        del self.rates[bisect_left(self.rates, row[1])]
        self.lows -= row[2]

    @property
    def rate(self) -> float | None:
        """Actions per hour of the median recent follower; None before the first."""
        rates = self.rates
        if not rates:
            return None
        mid = len(rates) // 2
        return rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2

    @property
    def low_share(self) -> float | None:
        """The share of recent followers found low-activity; None before the first."""
        if not self.judged:
            return None
        return self.lows / len(self.judged)

    def __getstate__(self) -> tuple[int, int, list[tuple[str, float, bool]]]:
        return self.size, self.per_account, list(self.judged)

    def __setstate__(self, state: tuple[int, int, list[tuple[str, float, bool]]]) -> None:
        self.size, self.per_account, judged = state
        self.judged = deque(judged)
        self.taken = Counter(r[0] for r in judged)
        self.rates = sorted(r[1] for r in judged)
        self.lows = sum(r[2] for r in judged)
