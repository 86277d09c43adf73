"""An online baseline for one stream of per-window counts that alerts sparingly.

`CountBaseline` scores every upward deviation from one flat level, so the evening peak of
every day and every ordinary burst outrank the rare window that is really wrong. This
model keeps what a series does at each time of day, judges a window both ways (a drop is
news too), and rates a deviation against the series' own record of deviations, so a
series that bursts every day needs a larger one to alarm than a calm series does.

- Level: a daily profile of the count on the Anscombe scale (`bins` phase bins of one
  `period`, linearly interpolated), each an exponentially weighted mean of winsorised
  values, so one burst moves it at most `clip_z` deviations.
- Scale: per phase bin, an exponentially weighted mean absolute residual (a robust spread,
  unmoved by a burst beyond `clip_z`), never below the Poisson floor of 1 on this scale.
- Deviation: the larger of |z| of this window and the normalised |mean z| of the recent
  windows (half-life `persist_half_life`), so a sustained shift or drop too small for any
  one window still stands out.
- Rarity: an online `quantile` of the series' past deviations (a stochastic quantile on
  the log scale); the score is the deviation in units of it, mapped onto [0, 1], so the
  same score means "this rare for this series" on a quiet and a busy one.

Memory is 4 * `bins` floats per series whatever its length; windows with no events are
learned one by one as zeros (a long gap costs its length).

    >>> import copy, math
    >>> b = SeasonalBaseline(period=24, bins=6, warmup=48)
    >>> rhythm = [round(50 + 30 * math.sin(2 * math.pi * t / 24)) for t in range(24 * 5)]
    >>> max(b.update(t, x) for t, x in enumerate(rhythm)) < 0.3
    True
    >>> spike, drop = copy.deepcopy(b), copy.deepcopy(b)
    >>> spike.update(120, 400) > 0.9, drop.update(120, 0) > 0.9
    (True, True)
"""

from __future__ import annotations

import math

from models.scales import anscombe, inverse_anscombe, saturating

_MEAN_ABS_NORMAL = math.sqrt(2.0 / math.pi)  # E|Z| of a standard normal: MAD to sd


class SeasonalBaseline:
    """Daily-profile level and robust scale of a count, scored two-sided against the
    series' own distribution of deviations.

    `update(t, value)` scores `value` against what came before, then learns it; `t` is the
    window index (consecutive integers; missing ones count as zero), its phase `t % period`.
    The score is in [0, 1]: about 0.16 at the series' own `quantile` of deviations, 0.5 at
    `half_at` times it, approaching 1 beyond. It stays 0 for the first `warmup` windows.
    """

    __slots__ = (
        "above",
        "alpha",
        "bins",
        "clip_z",
        "deviation",
        "expected",
        "half_at",
        "last_t",
        "level",
        "log_q",
        "n",
        "onset_half_life",
        "peak",
        "period",
        "persist",
        "persist_alpha",
        "q_rate",
        "quantile",
        "run",
        "scale",
        "scale_alpha",
        "seen",
        "warmup",
        "z",
    )

    def __init__(
        self,
        period: int = 288,
        bins: int = 24,
        alpha: float = 0.03,
        scale_alpha: float = 0.05,
        clip_z: float = 3.0,
        persist_half_life: float = 3.0,
        quantile: float = 0.95,
        q_rate: float = 0.05,
        half_at: float = 2.0,
        onset_half_life: float | None = 1.0,
        warmup: int | None = None,
    ) -> None:
        if period < 1 or not 1 <= bins <= period:
            raise ValueError("need 1 <= bins <= period")
        if not (0.0 < alpha < 1.0 and 0.0 < scale_alpha < 1.0 and 0.0 < quantile < 1.0):
            raise ValueError("alpha, scale_alpha and quantile must be in (0, 1)")
        self.period = period
        self.bins = bins
        self.alpha = alpha
        self.scale_alpha = scale_alpha
        self.clip_z = clip_z
        self.persist_alpha = 1.0 - 0.5 ** (1.0 / persist_half_life)
        self.quantile = quantile
        self.q_rate = q_rate
        self.half_at = half_at
        self.onset_half_life = onset_half_life
        self.run = 0  # windows since the current excursion's peak
        self.peak = 0.0
        self.warmup = period if warmup is None else warmup
        self.level = [0.0] * bins
        self.scale = [_MEAN_ABS_NORMAL] * bins  # mean |residual|: Poisson's at first
        self.seen = [0] * bins
        self.persist = 0.0
        self.log_q = math.log(3.0)
        self.above = False
        self.n = 0
        self.last_t: int | None = None
        self.z = 0.0
        self.deviation = 0.0
        self.expected = 0.0

    def _where(self, t: int) -> tuple[int, int, float]:
        """The two bins around phase t % period and the weight of the second."""
        x = (t % self.period) * self.bins / self.period - 0.5 + 0.5 * self.bins / self.period
        lo = math.floor(x)
        frac = x - lo
        return lo % self.bins, (lo + 1) % self.bins, frac

    def _known(self, b: int, fallback: float, table: list[float]) -> float:
        return table[b] if self.seen[b] else fallback

    def _step(self, t: int, value: float) -> float:
        b0, b1, f = self._where(t)
        y = anscombe(value)
        if self.n == 0:
            self.level = [y] * self.bins
            self.seen[b0] = 1
            self.n = 1
            self.expected = value
            return 0.0
        # A bin not yet visited borrows its neighbour's numbers, so day one has a level.
        l0 = self._known(b0, self.level[b1], self.level)
        l1 = self._known(b1, l0, self.level)
        s0 = self._known(b0, self.scale[b1], self.scale)
        s1 = self._known(b1, s0, self.scale)
        mean = (1.0 - f) * l0 + f * l1
        sd = max(((1.0 - f) * s0 + f * s1) / _MEAN_ABS_NORMAL, 1.0)
        r = y - mean
        z = r / sd
        clipped = max(-self.clip_z, min(self.clip_z, z))
        self.persist += self.persist_alpha * (clipped - self.persist)
        sustained = abs(self.persist) * math.sqrt((2.0 - self.persist_alpha) / self.persist_alpha)
        deviation = max(abs(z), sustained)
        self.z, self.deviation, self.expected = z, deviation, inverse_anscombe(mean)
        q = math.exp(self.log_q)
        score = saturating((deviation / q) ** 2, self.half_at**2)
        above = deviation > q
        worse = above and (not self.above or deviation > self.peak)
        self.run = 0 if worse or not above else self.run + 1
        self.peak = deviation if worse else self.peak
        if self.onset_half_life is not None and self.run:
            # An excursion is news while it gets worse: windows after its peak fade towards
            # the score at q (still above any ordinary window), so one long shift does not
            # spend the alerts that other series' onsets deserve.
            at_q = saturating(1.0, self.half_at**2)
            score = at_q + (score - at_q) * 0.5 ** (self.run / self.onset_half_life)
        # Learn: level and spread from the winsorised residual, then the rarity quantile.
        rc = clipped * sd
        for b, w, lb, sb in ((b0, 1.0 - f, l0, s0), (b1, f, l1, s1)):
            if w <= 0.0:
                continue
            a = max(self.alpha, 1.0 / (self.seen[b] + 1.0)) * w
            sa = max(self.scale_alpha, 1.0 / (self.seen[b] + 1.0)) * w
            self.level[b] = lb + a * rc
            self.scale[b] = sb + sa * (abs(rc) - sb)
            self.seen[b] += 1
        # An excursion above q teaches the quantile once, at its start: a sustained shift
        # is one rare event, not a hundred, and must not deafen the series for days.
        if self.n >= self.warmup // 2 and not (above and self.above):
            step = (1.0 if above else 0.0) - (1.0 - self.quantile)
            self.log_q = max(self.log_q + self.q_rate * step, 0.0)
        self.above = above
        self.n += 1
        return 0.0 if self.n <= self.warmup else score

    def update(self, t: int, value: float) -> float:
        """Score `value` in window `t` (missing windows before it are zeros), then learn."""
        if self.last_t is not None and t > self.last_t + 1:
            for gap in range(self.last_t + 1, t):
                self._step(gap, 0.0)
        if self.last_t is None or t > self.last_t:
            self.last_t = t
        return self._step(t, value)
