"""Cold worlds and the simulator's wide draws: a cold world begins every campaign and hard
negative within its first ten minutes on the same population as the warm one, and over
several seeds each campaign's drawn parameters stay inside the ranges its docstring
promises (labels.params records them). One-hour worlds at small scale, so it is quick."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.lab.labels import Labels
from pipeline.lab.simulation import simulate

MINUTE = 60_000
DAY = 24 * 60 * MINUTE
SEEDS = (1, 2, 3, 4, 5)
WHOLE_RUN = {"carrier_nat", "new_users_follow_popular"}  # no window: they span the run


def _world(tmp: Path, seed: int, cold: bool, scale: float = 0.2) -> Labels:
    name = f"{seed}-{'cold' if cold else 'warm'}"
    return simulate(
        60,
        seed,
        out=tmp / f"{name}.jsonl",
        labels_out=tmp / f"{name}.json",
        scale=scale,
        cold=cold,
    )


@pytest.fixture(scope="module")
def cold_worlds(tmp_path_factory: pytest.TempPathFactory) -> list[Labels]:
    tmp = tmp_path_factory.mktemp("cold")
    return [_world(tmp, seed, cold=True) for seed in SEEDS]


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_a_cold_world_starts_everything_within_ten_minutes(
    cold_worlds: list[Labels], tmp_path: Path, seed: int
) -> None:
    cold = cold_worlds[SEEDS.index(seed)]
    warm = _world(tmp_path, seed, cold=False)
    assert cold.params["cold"] == 1 and warm.params["cold"] == 0
    for key in ("users", "creators", "newcomers"):
        assert cold.params[key] == warm.params[key], "the same population, cold or warm"
    assert {c.kind for c in cold.campaigns} == {c.kind for c in warm.campaigns}
    for label in [*cold.campaigns, *cold.hard_negatives]:
        if label.kind not in WHOLE_RUN:
            assert label.start - cold.start < 10 * MINUTE, label.id
    warm_end = int(warm.params["warmup_end"])
    assert all(c.start >= warm_end for c in warm.campaigns), "warm worlds wait as before"


def test_cold_campaigns_all_start_within_ten_minutes_over_several_seeds(
    cold_worlds: list[Labels],
) -> None:
    late = [
        (w.seed, label.id, (label.start - w.start) / MINUTE)
        for w in cold_worlds
        for label in [*w.campaigns, *w.hard_negatives]
        if label.kind not in WHOLE_RUN and label.start - w.start >= 10 * MINUTE
    ]
    assert not late


def _plans(world: Labels, kind: str) -> list[dict[str, float]]:
    """The recorded parameters of each planted campaign of `kind`."""
    out: dict[str, dict[str, float]] = {}
    for key, value in world.params.items():
        plan, _, name = key.partition(".")
        if plan.rsplit("-", 1)[0] == kind and name and not isinstance(value, str):
            out.setdefault(plan, {})[name] = float(value)
    assert out, f"no {kind} planted on seed {world.seed}"
    return list(out.values())


def _within(value: float, lo: float, hi: float) -> bool:
    return lo <= value <= hi


def test_draws_stay_within_their_documented_ranges(cold_worlds: list[Labels]) -> None:
    for w in cold_worlds:
        for p in _plans(w, "follower_burst"):
            assert _within(p["size"], 60, max(1_000, 10 * p["usual"] + 1)), p
            assert p["size"] >= 10 * p["usual"], "ten times the target's usual follows"
            assert _within(p["span_s"], 60, 15 * 60), p
            assert p["youngest_s"] >= 600 and p["oldest_s"] <= 7 * DAY / 1000, p
            assert _within(p["devices"], 3, p["size"]) and p["ips"] <= p["size"], p
        for p in _plans(w, "slow_drip"):
            assert p["factor"] >= 3 - 0.01, "a clear multiple of the target's own rate"
            assert p["factor"] <= 10 + 0.01 or p["per_hour"] == 10.0, p
            assert _within(p["devices"], p["size"] // 4, p["size"]), p
            assert _within(p["ips"], p["size"] // 4, p["size"]), p
        for p in _plans(w, "click_farm"):
            assert _within(p["size"], 20, 300) and _within(p["ips"], 1, 10), p
            assert _within(p["devices"], 2, p["size"]), p
            assert p["per_hour"] >= 5 * p["owner_per_hour"] - 0.1, p
        for p in _plans(w, "repost_ring"):
            assert _within(p["size"], 15, 400) and _within(p["posts"], 3, 10), p
            assert _within(p["join"], 0.6, 0.95) and _within(p["median_delay_s"], 30, 480), p
            assert _within(p["devices"], max(2, p["size"] // 8), p["size"]), p
        for p in _plans(w, "copy_paste"):
            assert _within(p["size"], 20, 400) and _within(p["items"], 1, 120), p
            assert _within(p["devices"], 3, p["size"]) and p["ips"] <= p["size"], p
        for p in _plans(w, "churn"):
            assert _within(p["size"], 8, 150) and _within(p["rounds"], 3, 10), p
            assert _within(p["devices"], max(2, p["size"] // 5), p["size"]), p
        for p in _plans(w, "forced_follow"):
            assert _within(p["share"], 0.4, 1.0), p
        for p in _plans(w, "batch_registration"):
            assert _within(p["size"], 40, 800) and _within(p["span_s"], 60, 20 * 60), p
            assert _within(p["ips"], 1, 200) and _within(p["devices"], 1, p["size"]), p
            assert p["ips"] == 1 if p["one_ip"] else True, p


def test_draws_are_wide_not_a_typical_size(cold_worlds: list[Labels]) -> None:
    """Over the seeds the sizes spread over much of their range, small and large alike."""
    for kind in ("follower_burst", "click_farm", "repost_ring", "copy_paste", "churn"):
        sizes = [p["size"] for w in cold_worlds for p in _plans(w, kind)]
        assert max(sizes) >= 2 * min(sizes), (kind, sizes)
