"""An online baseline for one stream of per-window counts, scored for upward jumps.

Counts are Poisson-like, so their spread grows with their level. The Anscombe transform
y = 2*sqrt(x + 3/8) makes a Poisson count's variance about 1 whatever its mean; on that
scale an exponentially weighted mean and variance track the stream's own normal, and the
variance never drops below 1, the Poisson floor, so a quiet account is not alarmed by noise
(3 follows where 0.2 were expected is not news; 300 is). Windows with no events are
applied in closed form, so an account needs no work while it is idle.

    >>> b = CountBaseline(alpha=0.1, warmup=3)
    >>> [round(b.update(t, 2), 2) for t in range(5)]
    [0.0, 0.0, 0.0, 0.0, 0.0]
    >>> b.update(5, 300) > 0.9
    True
"""

from __future__ import annotations

import math

from models.scales import ANSCOMBE_ZERO, anscombe, decay_alpha, inverse_anscombe, saturating


class CountBaseline:
    """EWMA mean and variance of a count on the variance-stabilised scale.

    `update(t, value)` scores `value` against what came before, then learns it; `t` is the
    window index (consecutive integers; missing ones count as zero). The score is in [0, 1]:
    0 for anything at or below normal, 0.5 at `z_scale` standard deviations above it, and
    approaching 1 as the jump grows. It stays 0 until `warmup` windows of history exist.
    Windows that are themselves anomalous teach the baseline at most `clip_z` deviations,
    so a sustained attack does not become the new normal within a few windows.
    """

    __slots__ = (
        "alpha",
        "clip_z",
        "expected",
        "last_t",
        "mean",
        "n",
        "var",
        "warmup",
        "z",
        "z_scale",
    )

    def __init__(
        self, alpha: float = 0.05, warmup: int = 6, z_scale: float = 5.0, clip_z: float = 3.0
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        self.alpha = alpha
        self.warmup = warmup
        self.z_scale = z_scale
        self.clip_z = clip_z
        self.mean = 0.0
        self.var = 1.0
        self.n = 0
        self.last_t: int | None = None
        self.z = 0.0
        self.expected = 0.0

    @classmethod
    def for_half_life(cls, half_life_windows: float, **kwargs: float) -> CountBaseline:
        """A baseline whose memory halves every `half_life_windows` windows."""
        return cls(alpha=decay_alpha(1.0, half_life_windows), **kwargs)  # type: ignore[arg-type]

    def _skip_zero_windows(self, k: int) -> None:
        """Learn k consecutive zero counts at once (closed form of k EWMA steps)."""
        r_k = (1.0 - self.alpha) ** k
        gap = ANSCOMBE_ZERO - self.mean
        self.mean = ANSCOMBE_ZERO - gap * r_k
        self.var = r_k * (self.var + gap * gap * (1.0 - r_k))
        self.n += k

    def _learn(self, y: float) -> None:
        diff = y - self.mean
        incr = self.alpha * diff
        self.mean += incr
        self.var = (1.0 - self.alpha) * (self.var + diff * incr)
        self.n += 1

    def update(self, t: int, value: float) -> float:
        if self.last_t is not None and t > self.last_t + 1:
            self._skip_zero_windows(t - self.last_t - 1)
        if self.last_t is None or t > self.last_t:
            self.last_t = t
        y = anscombe(value)
        if self.n == 0:
            self.mean, self.var, self.n = y, 1.0, 1
            self.z, self.expected = 0.0, value
            return 0.0
        sd = math.sqrt(max(self.var, 1.0))
        self.z = (y - self.mean) / sd
        self.expected = inverse_anscombe(self.mean)
        self._learn(min(y, self.mean + self.clip_z * sd))
        if self.n <= self.warmup or self.z <= 0.0:
            return 0.0
        return saturating(self.z, self.z_scale)
