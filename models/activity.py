"""How active an account has been lately: its clicks, reposts and comments, counted.

Bought followers are accounts that follow and do next to nothing else; real followers
read, click, repost and comment, some a little, most a lot. Whether a new follower is one
of the first is a question about the follower's own events, so an `ActivityCounts`
remembers, per account, how many actions it took in each generation (of `generation_ms`)
of the last `keep_ms`, and answers how many it took since a time. The answer for an
account depends on its own activity and the time only, so the memory can be split
between shards of accounts, or not, with the same answers. Generations older than
`keep_ms` are dropped: memory is bounded by the accounts active lately, not by the length
of the stream.

    >>> seen = ActivityCounts(generation_ms=600_000, keep_ms=3_600_000)
    >>> seen.learn({"reader": 3, "writer": 1}, 0)
    >>> seen.learn({"reader": 2}, 600_000)
    >>> seen.since("reader", 0), seen.since("reader", 600_000), seen.since("lurker", 0)
    (5, 2, 0)
    >>> seen.learn({"writer": 1}, 4_200_000)  # an hour on: the first generation is gone
    >>> seen.since("reader", 0), seen.since("writer", 0)
    (2, 1)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

MAX_COUNT = 255  # actions per account and generation kept, at most: "a lot" is enough


class ActivityCounts:
    __slots__ = ("generation_ms", "generations", "keep")

    def __init__(self, generation_ms: int, keep_ms: int) -> None:
        if generation_ms <= 0 or keep_ms < generation_ms:
            raise ValueError("need 0 < generation_ms <= keep_ms")
        self.generation_ms = generation_ms
        self.keep = -(-keep_ms // generation_ms)  # generations kept besides the current one
        self.generations: dict[int, dict[str, int]] = {}  # number -> account -> actions

    def learn(self, actions: Mapping[str, int], ts: int) -> None:
        """These accounts took this many actions at `ts`."""
        generation = ts // self.generation_ms
        current = self.generations.get(generation)
        if current is None:
            current = self.generations[generation] = Counter()
            for old in [g for g in self.generations if g < generation - self.keep]:
                del self.generations[old]
        current.update(actions)

    def since(self, account: str, ts: int) -> int:
        """Actions the account took in the generations from that of `ts` on (capped at
        MAX_COUNT per generation)."""
        first = ts // self.generation_ms
        total = 0
        for g, seen in self.generations.items():
            if g >= first:
                total += min(seen.get(account, 0), MAX_COUNT)
        return total

    def __getstate__(self) -> tuple[int, int, dict[int, dict[str, int]]]:
        capped = {
            g: {a: min(n, MAX_COUNT) for a, n in seen.items()}
            for g, seen in self.generations.items()
        }
        return self.generation_ms, self.keep, capped

    def __setstate__(self, state: tuple[int, int, dict[int, dict[str, int]]]) -> None:
        self.generation_ms, self.keep, generations = state
        self.generations = {g: Counter(s) for g, s in generations.items()}
