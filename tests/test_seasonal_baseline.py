"""`models.SeasonalBaseline` on plain numbers: the daily rhythm is not news, a spike, a
level shift and a drop are, and a score means the same on a quiet and a busy series."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest

from models import SeasonalBaseline

PERIOD = 96  # a short "day" keeps the tests fast; the model does not care about its length


def _rhythm(level: float, days: int, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """Counts on a daily rhythm (5x from trough to peak) with multiplicative noise."""
    t = np.arange(days * PERIOD)
    shape = 1.0 + 0.66 * np.sin(2 * np.pi * t / PERIOD)
    lam = level * shape * rng.gamma(1.0 / noise**2, noise**2, t.size)
    return rng.poisson(lam)


def _trained(level: float, seed: int = 1, days: int = 6) -> tuple[SeasonalBaseline, int]:
    model = SeasonalBaseline(period=PERIOD, bins=12)
    counts = _rhythm(level, days, np.random.default_rng(seed))
    for t, x in enumerate(counts):
        model.update(t, float(x))
    return model, counts.size


@pytest.mark.parametrize("level", [0.5, 20.0, 2000.0])
def test_a_daily_rhythm_alone_stays_low(level: float) -> None:
    model = SeasonalBaseline(period=PERIOD, bins=12)
    counts = _rhythm(level, 8, np.random.default_rng(3))
    scores = np.array([model.update(t, float(x)) for t, x in enumerate(counts)])
    assert scores.max() <= 1.0 and scores.min() >= 0.0
    assert np.quantile(scores[PERIOD:], 0.99) < 0.35
    # The evening peak is no higher than the trough: the rhythm is learned, not scored.
    peak = scores[PERIOD:].reshape(-1, PERIOD)[:, PERIOD // 4]
    assert peak.mean() < 0.2


@pytest.mark.parametrize("level", [20.0, 2000.0])
def test_a_spike_a_level_shift_and_a_drop_score_high(level: float) -> None:
    model, t = _trained(level)
    expected = level * (1.0 + 0.66 * math.sin(2 * math.pi * t / PERIOD))
    spike = copy.deepcopy(model).update(t, 8 * expected)
    shifted = copy.deepcopy(model)
    shift = max(shifted.update(t + k, 3 * expected) for k in range(12))
    dropped = copy.deepcopy(model)
    drop = max(dropped.update(t + k, 0.05 * expected) for k in range(12))
    assert spike > 0.8 and shift > 0.8 and drop > 0.8


def test_the_same_relative_anomaly_scores_alike_on_a_quiet_and_a_busy_series() -> None:
    """Where the noise is mostly the series' own (not Poisson), a x4 spike means the same
    at 50 a window and at 5,000: both well above the ordinary windows and close to each
    other."""
    scores = {}
    for level in (50.0, 5000.0):
        model, t = _trained(level, seed=5)
        expected = level * (1.0 + 0.66 * math.sin(2 * math.pi * t / PERIOD))
        scores[level] = copy.deepcopy(model).update(t, 4 * expected)
    assert min(scores.values()) > 0.6
    assert abs(scores[50.0] - scores[5000.0]) < 0.15


def test_pickling_round_trips_and_carries_on_identically() -> None:
    model, t = _trained(30.0, days=3)
    clone = pickle.loads(pickle.dumps(model))
    follow = [float(x) for x in _rhythm(30.0, 1, np.random.default_rng(9))]
    assert [clone.update(t + k, x) for k, x in enumerate(follow)] == [
        model.update(t + k, x) for k, x in enumerate(follow)
    ]


def test_skipped_windows_count_as_zeros() -> None:
    sparse, dense = SeasonalBaseline(period=PERIOD), SeasonalBaseline(period=PERIOD)
    for t in range(300):
        dense.update(t, 3.0 if t % 7 == 0 else 0.0)
        if t % 7 == 0:
            sparse.update(t, 3.0)
    assert sparse.update(300, 40.0) == dense.update(300, 40.0)
