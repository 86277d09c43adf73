"""Accounts under watch for dormancy: did they act before their deadline?

Accounts registered in bulk and then left untouched are hoarded (Article 18(8)): they wait
to be sold or switched on for a campaign. Real people who sign up act within hours. A
`DormancyWatch` holds accounts until a deadline; any activity of theirs before it takes
them off the watch, and at the deadline those still on it are dormant. Activity shortly
before an account was put on the watch (the minutes between its registration and the
verdict on its batch) counts too: the watch remembers who acted within `lookback_ms`.

    >>> watch = DormancyWatch()
    >>> watch.watch("a", Watched("batch-1", "net:203.0.113", 1_000, 3, 0.9, 10_000))
    >>> watch.watch("b", Watched("batch-1", "net:203.0.113", 1_000, 3, 0.9, 10_000))
    >>> watch.learn("b", 5_000)
    >>> [account for account, _ in watch.due(10_000, lookback_ms=60_000)]
    ['a']
"""

from __future__ import annotations

import msgspec


class Watched(msgspec.Struct, array_like=True, gc=False):
    """Why an account is watched: the group it was registered in, and until when."""

    group: str  # the finding that named it
    source: str  # where the group registered (network prefix or device)
    registered: int  # its registration time, epoch ms
    size: int  # accounts the group's finding named
    score: float  # how sure the finding was
    deadline: int  # still inactive at this time (epoch ms): dormant
    bar: float = 0.0  # the dormant share its group needs to be flagged; 0: the default one


class DormancyWatch(msgspec.Struct, gc=False):
    """Watched accounts, and the last activity of accounts seen lately."""

    watched: dict[str, Watched] = {}
    recent: dict[str, int] = {}  # account -> its last activity, within the lookback
    dropped: int = 0  # watches refused because the watch was full

    def watch(self, account: str, why: Watched, max_watched: int = 1 << 30) -> None:
        """Put an account on the watch, unless it has acted since it registered."""
        last = self.recent.get(account)
        if last is not None and last >= why.registered:
            return
        if len(self.watched) >= max_watched and account not in self.watched:
            self.dropped += 1
            return
        self.watched[account] = why

    def learn(self, account: str, ts: int) -> None:
        """An account acted at `ts`: not dormant, if it had registered by then."""
        why = self.watched.get(account)
        if why is not None and ts >= why.registered:
            del self.watched[account]
        last = self.recent.get(account)
        if last is None or ts > last:
            self.recent[account] = ts

    def next_deadline(self) -> int | None:
        """The earliest deadline on the watch, if any."""
        return min((w.deadline for w in self.watched.values()), default=None)

    def due(self, now: int, lookback_ms: int) -> list[tuple[str, Watched]]:
        """Accounts whose deadline has come without activity (taken off the watch), in
        account order; activity older than the lookback is forgotten."""
        cutoff = now - lookback_ms
        for account in [a for a, ts in self.recent.items() if ts < cutoff]:
            del self.recent[account]
        dormant = sorted((a, w) for a, w in self.watched.items() if w.deadline <= now)
        for account, _ in dormant:
            del self.watched[account]
        return dormant
