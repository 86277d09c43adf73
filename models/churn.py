"""Follow-for-follow churn: follows undone within minutes, counted per account.

A real user unfollows now and then, and only rarely within minutes of following (a
mis-tap, a quick regret). A growth hacker follows dozens of accounts to be followed back
and drops them again minutes later, round after round. What tells them apart is the
*quick undo*: an unfollow of a pair (actor, target) the actor followed at most
`within_ms` before. `quick_undos` pairs them; `ChurnHistory` remembers one actor's quick
undos over a horizon and scores their number against what a real user makes (a prior:
the history of one account is all about that account, so a churner's own past never
becomes its normal).

    >>> follows = [("a", "t1", 0), ("a", "t2", 5_000), ("b", "t1", 0)]
    >>> unfollows = [("a", "t1", 60_000), ("a", "t2", 9_000_000), ("b", "t9", 1)]
    >>> quick_undos(follows, unfollows, within_ms=600_000)
    [('a', 't1', 0, 60000)]
    >>> h = ChurnHistory()
    >>> for i in range(12):
    ...     h.learn(60_000 * i, f"t{i}", horizon_ms=3_600_000, cap=100)
    >>> h.count, h.targets(), h.rounds(gap_ms=600_000)
    (12, 12, 1)
    >>> surprise(h.count, prior=0.2) > 4.0
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import msgspec

from models.scales import anscombe

Pair = tuple[str, str, int]  # (actor, target, ts)


def quick_undos(
    follows: Iterable[Pair], unfollows: Iterable[Pair], within_ms: int
) -> list[tuple[str, str, int, int]]:
    """(actor, target, follow ts, unfollow ts) for every unfollow that undoes a follow of
    the same pair made at most `within_ms` before it (the latest such follow), in the
    order of `unfollows`."""
    wanted: dict[tuple[str, str], list[int]] = {(a, t): [] for a, t, _ in unfollows}
    for actor, target, ts in follows:
        stamps = wanted.get((actor, target))
        if stamps is not None:
            stamps.append(ts)
    found = []
    for actor, target, ts in unfollows:
        before = [f for f in wanted[actor, target] if f <= ts]
        if before and ts - max(before) <= within_ms:
            found.append((actor, target, max(before), ts))
    return found


def surprise(count: int, prior: float) -> float:
    """How far `count` quick undos lie above the `prior` a real user makes, in Poisson
    standard deviations on the variance-stabilised (Anscombe) scale; 0 at or below it."""
    return max(anscombe(count) - anscombe(prior), 0.0)


class ChurnHistory(msgspec.Struct, gc=False):
    """One actor's recent quick undos (unfollow ts, target), oldest first, and when it
    was last flagged. A `msgspec.Struct` so a table of them pickles small and costs the
    garbage collector nothing."""

    undos: list[tuple[int, str]] = []
    flagged_at: int | None = None

    def learn(self, ts: int, target: str, horizon_ms: int, cap: int) -> None:
        """Remember a quick undo at `ts`; forget those older than `horizon_ms` before the
        newest, and the oldest beyond `cap`."""
        undos = self.undos
        undos.append((ts, target))
        if len(undos) > 1 and ts < undos[-2][0]:  # out of order: keep them sorted
            undos.sort()
        newest = undos[-1][0]
        drop = 0
        while drop < len(undos) and undos[drop][0] <= newest - horizon_ms:
            drop += 1
        drop = max(drop, len(undos) - cap)
        if drop:
            del undos[:drop]

    @property
    def count(self) -> int:
        return len(self.undos)

    def targets(self) -> int:
        """How many distinct accounts were followed and dropped again."""
        return len({target for _, target in self.undos})

    def rounds(self, gap_ms: int) -> int:
        """Runs of quick undos separated by more than `gap_ms`: a round of churn each."""
        stamps = [ts for ts, _ in self.undos]
        if not stamps:
            return 0
        return 1 + sum(1 for a, b in pairwise(stamps) if b - a > gap_ms)
