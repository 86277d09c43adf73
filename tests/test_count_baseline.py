"""`models.CountBaseline` on plain numbers, without the pipeline."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest

from models import CountBaseline


def _poisson(rng: np.random.Generator, lam: float, n: int) -> list[int]:
    return [int(x) for x in rng.poisson(lam, n)]


@pytest.mark.parametrize("lam", [0.05, 0.5, 3.0, 40.0, 900.0])
def test_poisson_noise_at_any_level_does_not_alert(lam: float) -> None:
    rng = np.random.default_rng(int(lam * 100))
    model = CountBaseline(alpha=0.05, warmup=6, z_scale=5.0)
    scores = [model.update(t, x) for t, x in enumerate(_poisson(rng, lam, 3000))]
    assert max(scores) < 0.5


@pytest.mark.parametrize("lam", [0.05, 2.0, 50.0])
def test_a_jump_well_above_the_level_alerts(lam: float) -> None:
    rng = np.random.default_rng(7)
    model = CountBaseline(alpha=0.05, warmup=6, z_scale=5.0)
    for t, x in enumerate(_poisson(rng, lam, 500)):
        model.update(t, x)
    jump = int(lam * 10 + 8 * math.sqrt(lam) + 60)
    assert model.update(500, jump) > 0.5
    assert model.expected == pytest.approx(lam, abs=0.5 + lam * 0.3)
    assert model.z > 5


def test_score_is_in_unit_interval_and_grows_with_the_jump() -> None:
    model = CountBaseline(alpha=0.05, warmup=3)
    for t in range(50):
        model.update(t, 2)
    scores = []
    for size in (0, 2, 20, 100, 1000, 10**6):
        probe = copy.copy(model)
        scores.append(probe.update(50, size))
    assert scores[0] == 0.0 and scores[1] == 0.0
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores) and scores[-1] > 0.99


def test_no_alert_during_warmup() -> None:
    model = CountBaseline(alpha=0.1, warmup=5)
    scores = [model.update(t, x) for t, x in enumerate([1, 0, 2, 500, 1])]
    assert scores == [0.0] * 5


def test_skipped_windows_equal_explicit_zero_windows() -> None:
    rng = random.Random(3)
    sparse, dense = CountBaseline(alpha=0.07), CountBaseline(alpha=0.07)
    t = 0
    for _ in range(200):
        t += rng.choice([1, 1, 2, 5, 40])
        value = rng.randrange(0, 30)
        for gap_t in range(dense.last_t + 1 if dense.last_t is not None else t, t):
            dense.update(gap_t, 0)
        assert sparse.update(t, value) == pytest.approx(dense.update(t, value), abs=1e-9)
        assert sparse.mean == pytest.approx(dense.mean) and sparse.var == pytest.approx(dense.var)
        assert sparse.n == dense.n


def test_a_sustained_attack_keeps_alerting() -> None:
    model = CountBaseline(alpha=0.05, warmup=6)
    for t in range(100):
        model.update(t, 3)
    assert all(model.update(t, 400) > 0.5 for t in range(100, 112))


def test_half_life_constructor() -> None:
    model = CountBaseline.for_half_life(10)
    assert (1 - model.alpha) ** 10 == pytest.approx(0.5)
    with pytest.raises(ValueError):
        CountBaseline(alpha=1.5)
