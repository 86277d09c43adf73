"""The conversions every model shares: counts to a scale where noise is the same at any
level, deviations to a score in [0, 1], half-lives to the weights that decay by them.

Each is written once here so that every model and detector computes it the same way, to
the last bit: a finding's score (and so the actions a policy takes on it) must not depend
on which module did the arithmetic. Keep each formula's form as it is; floating point
gives another last bit for another order of the same operations.

    >>> decay_alpha(1, half_life=1), decay_factor(20, half_life=10)
    (0.5, 0.25)
    >>> saturating(5.0, half_at=5.0), round(saturating(50.0, half_at=5.0), 4)
    (0.5, 0.999)
    >>> anscombe(0) == ANSCOMBE_ZERO, round(inverse_anscombe(anscombe(42)), 9)
    (True, 42.0)
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

Value = TypeVar("Value", float, np.ndarray)


def anscombe(count: float) -> float:
    """2 * sqrt(count + 3/8): a Poisson count's standard deviation is about 1 on this
    scale whatever its mean, so one threshold in deviations fits a quiet key and a busy
    one alike (3 where 0.2 were expected is noise; 300 is news). Negative counts are 0."""
    return 2.0 * math.sqrt(max(count, 0.0) + 0.375)


ANSCOMBE_ZERO = anscombe(0)  # a zero count on the Anscombe scale


def inverse_anscombe(y: float) -> float:
    """The count whose Anscombe value is `y` (0 below the value of a zero count): to say
    what a mean on that scale expects in plain events."""
    return max((y / 2.0) ** 2 - 0.375, 0.0)


def saturating(x: Value, half_at: float = 1.0) -> Value:
    """1 - 0.5 ** (x / half_at): a score in [0, 1) that is 0 at x = 0, 0.5 at `half_at`,
    0.9 at 3.32 * `half_at` and approaches 1 as `x` grows, so evidence of any size maps
    onto one scale without a cap (a float, or an array elementwise)."""
    return 1.0 - 0.5 ** (x / half_at)


def decay_factor(elapsed: float, half_life: float) -> float:
    """What remains of a quantity `elapsed` after it was set, when it halves every
    `half_life` (in the same unit): how a remembered level fades."""
    return 0.5 ** (elapsed / half_life)


def decay_alpha(step: float, half_life: float) -> float:
    """The weight an exponentially weighted mean gives each new value arriving every
    `step`, so that what it learned halves every `half_life`: settings speak in
    half-lives of event time, the models in weights per window."""
    return 1.0 - decay_factor(step, half_life)
