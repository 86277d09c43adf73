"""Near-copies of one message posted a few at a time, window after window.

A campaign can post its message slowly: two or three accounts every quarter of an hour
for two hours, never the crowd one window needs to count as a burst. `SlowFamilies`
remembers such small clusters of near-copies, each by its first centre (its MinHash
signature and LSH band keys), and links a later window's small cluster to the family
whose centre shares a bucket with its own and agrees with it on `similarity` of the
signature, so their posters add up. A family is as common as its first sighting said
(the accounts a text like it was expected to get per window then, times the windows it
has been seen in). Small clusters of ordinary phrases come back all day too, so the
caller also asks who the posters are (`models.follower_composition`): a family keeps
each poster's freshness, network and device. A family not seen for `horizon` windows is
forgotten; at most `max_families` are kept (a family full of posters but never flagged
goes first, then the one seen longest ago), each with at most `max_posters`, so the
memory stays small inside the one key's state.

    >>> import numpy as np
    >>> f = SlowFamilies(horizon=12, max_families=8, max_posters=20, similarity=0.5)
    >>> sig = np.arange(8, dtype=np.uint64)
    >>> _ = f.add(sig, [1, 2], [("a", True, "n", "d"), ("b", True, "n", "d")], 0.0, t=10)
    >>> fam = f.add(sig, [2, 9], [("c", False, "m", "e")], 5.0, t=11)  # bucket 2, same text
    >>> fam.accounts(), fam.windows, fam.expected
    (['a', 'b', 'c'], 2, 0.0)
    >>> other = f.add(sig[::-1].copy(), [2], [("d", True, "n", "d")], 0.0, t=11)
    >>> other is fam  # shares a bucket, but it is another text
    False
    >>> tight = SlowFamilies(horizon=12, max_families=1, max_posters=20, similarity=0.5)
    >>> _ = tight.add(sig, [1], [("a", True, "n", "d"), ("b", True, "n", "d")], 0.0, t=10)
    >>> new = tight.add(sig[::-1].copy(), [7], [("e", True, "n", "d")], 0.0, t=11)
    >>> tight.families == [new]  # the newest stays, however few its posters
    True
    >>> f.forget_before(30); len(f.families)
    0
"""

from __future__ import annotations

import msgspec
import numpy as np

# (account, fresh? (None: age unknown), network ('' unknown), device ('' unknown))
Poster = tuple[str, bool | None, str, str]


class Family(msgspec.Struct, gc=False):
    """One slowly posted message: its first centre (signature bytes, band keys), its
    posters, when it was first and last seen (window numbers), the accounts a text like
    it was expected to get per window at its first sighting, the windows it was seen in,
    and whether it has been flagged."""

    signature: bytes
    keys: list[int]
    posters: list[Poster]
    first: int
    last: int
    expected: float
    windows: int = 1
    flagged: bool = False

    def accounts(self) -> list[str]:
        return [p[0] for p in self.posters]


class SlowFamilies(msgspec.Struct, gc=False):
    """Small clusters of near-copies, accumulated across windows (see the module)."""

    horizon: int  # windows a family is kept without a sighting
    max_families: int
    max_posters: int
    similarity: float  # signature agreement with a family's centre to join it
    families: list[Family] = msgspec.field(default_factory=list)

    def add(
        self,
        signature: np.ndarray,
        keys: list[int],
        posters: list[Poster],
        expected: float,
        t: int,
    ) -> Family:
        """Window `t`'s small cluster (its centre's `signature` and band `keys`, its
        `posters`, the accounts expected of it now): the family it joins, or a new one."""
        family = self._family_of(signature, keys)
        if family is None:
            family = Family(signature.tobytes(), list(keys), [], t, t, expected, 0)
            self.families.append(family)
        if family.last != t or family.windows == 0:
            family.windows += 1
        family.last = t
        seen = {p[0] for p in family.posters}
        for poster in posters:
            if poster[0] not in seen and len(family.posters) < self.max_posters:
                family.posters.append(poster)
                seen.add(poster[0])
        if len(self.families) > self.max_families:
            self.families.sort(key=self._promise, reverse=True)
            del self.families[self.max_families :]
        return family

    def _promise(self, family: Family) -> tuple[bool, int, int]:
        """What keeps a family when there are too many: not full of posters without
        having been flagged (it had its chance), then seen most recently, then the most
        posters. A family just seen is never the first to go."""
        spent = len(family.posters) >= self.max_posters and not family.flagged
        return (not spent, family.last, len(family.posters))

    def _family_of(self, signature: np.ndarray, keys: list[int]) -> Family | None:
        wanted = set(keys)
        for family in self.families:
            if wanted.intersection(family.keys):
                centre = np.frombuffer(family.signature, signature.dtype)
                if (centre == signature).mean() >= self.similarity:
                    return family
        return None

    def forget_before(self, t: int) -> None:
        """Forget the families not seen in the `horizon` windows up to `t`."""
        self.families = [f for f in self.families if f.last > t - self.horizon]
