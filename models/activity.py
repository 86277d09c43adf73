"""Who has been active lately: the accounts that did something other than follow.

Bought followers are accounts that follow and do nothing else; real followers read, click,
repost and comment. Whether a new follower has "no other activity" is a question about
the follower's own recent events, so a `RecentActivity` remembers, per account, the
generations (of `generation_ms`) it was active in: an account is active at `ts` if it was
in that generation or the one before (within the last one to two generations). The answer
for an account depends on its own activity and the time only, so the memory can be split
between shards of accounts, or not, with the same answers. Only the
last two generations are kept: memory is bounded by the accounts active lately, not by
the length of the stream.

    >>> seen = RecentActivity(generation_ms=3_600_000)
    >>> seen.learn(["reader", "writer"], 0)
    >>> seen.active("reader", 10), seen.active("lurker", 10)
    (True, False)
    >>> seen.learn(["writer"], 3_600_000)  # the next hour: "reader" is in the one before
    >>> seen.active("reader", 3_600_000)
    True
    >>> seen.active("reader", 7_200_000), seen.active("writer", 7_200_000)  # an hour on
    (False, True)
    >>> sorted(seen.inactive(["reader", "writer", "lurker"], 7_200_000))
    ['lurker', 'reader']
"""

from __future__ import annotations

from collections.abc import Iterable


class RecentActivity:
    __slots__ = ("generation_ms", "generations")

    def __init__(self, generation_ms: int) -> None:
        self.generation_ms = generation_ms
        self.generations: dict[int, set[str]] = {}  # the last two: number -> its accounts

    def learn(self, accounts: Iterable[str], ts: int) -> None:
        """These accounts were active at `ts`."""
        generation = ts // self.generation_ms
        current = self.generations.get(generation)
        if current is None:
            current = self.generations[generation] = set()
            for old in [g for g in self.generations if g < generation - 1]:
                del self.generations[old]
        current.update(accounts)

    def active(self, account: str, ts: int) -> bool:
        """Whether the account was active in the generation of `ts` or the one before."""
        generation = ts // self.generation_ms
        for g in (generation, generation - 1):
            seen = self.generations.get(g)
            if seen is not None and account in seen:
                return True
        return False

    def inactive(self, accounts: Iterable[str], ts: int) -> set[str]:
        """Those of `accounts` not active at `ts` (`active` for many accounts, in C)."""
        generation = ts // self.generation_ms
        quiet = set(accounts)
        for g in (generation, generation - 1):
            seen = self.generations.get(g)
            if seen is not None:
                quiet = quiet.difference(seen)  # (`-=` would walk all of `seen`)
        return quiet
