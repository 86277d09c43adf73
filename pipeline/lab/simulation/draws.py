"""Draws over wide ranges: every order of magnitude of a range as likely as the next.

A size or rate drawn uniformly between 20 and 400 is almost never small; log-uniform, an
operation of twenty accounts is as common as one of two hundred, so no detector can lean
on a typical size.
"""

from __future__ import annotations

import numpy as np


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A real number in [lo, hi] (0 < lo <= hi), log-uniform."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def log_count(rng: np.random.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, max(lo, hi)] (lo >= 1), log-uniform."""
    hi = max(lo, hi)
    return min(hi, max(lo, round(log_uniform(rng, lo, hi))))
