"""`CountBaseline`'s arithmetic, starting from a prior expectation instead of a first window.

`CountBaseline` takes a key's first window as its normal, which is right for an account
whose follows it starts watching mid-life. It is wrong where the first window seen may
itself be the attack: a click farm on a post published minutes ago, or a forced-follow
campaign on an account nobody was ever made to follow. Here the prior ("a new item gets
about one click a window", "nobody is normally followed without consent") counts as one
window of history, so the first real window is scored against it and, when anomalous,
learned only up to `clip_z` deviations like any later one. A caller that judges a window
on evidence the count alone does not have can `forget_last` a fabricated one, so a
sustained campaign never becomes the key's normal, or `adopt` a first window it found
ordinary as the normal outright (a busy item first seen mid-life is not a surge).

It is a `msgspec.Struct` with `gc=False`, like the events: a stream has one per content
item, and objects the garbage collector tracks cost every full collection time in
proportion to their number. The arithmetic is `CountBaseline`'s own methods, not a copy.

    >>> b = PriorCountBaseline.starting_at(0.0, alpha=0.05)
    >>> b.update(0, 40) > 0.5
    True
    >>> round(b.expected, 2)
    0.0
    >>> b.forget_last()
    >>> b.update(1, 40) > 0.5
    True
"""

from __future__ import annotations

from typing import Any, Self

import msgspec

from models.count_baseline import CountBaseline
from models.scales import anscombe


class PriorCountBaseline(msgspec.Struct, gc=False):
    """The state `CountBaseline` works on, seeded with `prior` events per window.

    Build it with `starting_at`. `warmup` here counts the prior: the key may alert once
    `n > warmup`, i.e. after `warmup - 1` observed windows.
    """

    alpha: float
    warmup: int
    z_scale: float
    clip_z: float
    mean: float
    var: float = 1.0
    n: int = 1  # the prior
    last_t: int | None = None
    z: float = 0.0
    expected: float = 0.0
    mean_before: float = 0.0  # before the last window was learned, for `forget_last`
    var_before: float = 1.0

    @classmethod
    def starting_at(
        cls,
        prior: float,
        alpha: float = 0.05,
        warmup: int = 0,
        z_scale: float = 5.0,
        clip_z: float = 3.0,
        **extra: Any,
    ) -> Self:
        """A baseline expecting `prior` per window, that may alert after `warmup` observed
        windows (0: from the first one). `extra` sets a subclass's own fields."""
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        y = anscombe(prior)
        return cls(
            alpha, warmup + 1, z_scale, clip_z, y, expected=float(prior), mean_before=y, **extra
        )

    update = CountBaseline.update  # score a window's count against the normal, then learn it
    _skip_zero_windows = CountBaseline._skip_zero_windows

    def _learn(self, y: float) -> None:
        self.mean_before = self.mean
        self.var_before = self.var
        CountBaseline._learn(self, y)  # type: ignore[arg-type]

    @property
    def observed(self) -> int:
        """Windows observed so far (quiet ones included), the prior not counted."""
        return self.n - 1

    def forget_last(self) -> None:
        """Undo what the last window taught (it still counts as observed)."""
        self.mean = self.mean_before
        self.var = self.var_before

    def adopt(self, value: float) -> None:
        """Take `value` as the normal outright: for a first window judged ordinary."""
        self.mean = anscombe(value)
        self.var = 1.0
