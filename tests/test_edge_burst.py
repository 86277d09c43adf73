"""`models.EdgeBurst` on plain values, without the pipeline."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import EdgeBurst

ROOT = Path(__file__).resolve().parent.parent


def _background(
    rng: np.random.Generator, ticks: range, per_tick: float, n_src: int = 3000, n_dst: int = 300
) -> tuple[list[str], list[str], list[int]]:
    """Steady traffic: random sources following destinations of Zipf-like popularity, plus
    200 recurring edges with their own steady rates of 0.5 to 4 events per tick."""
    weights = 1.0 / np.arange(1, n_dst + 1) ** 1.1
    weights /= weights.sum()
    pairs = [(f"regular{i}", f"d{i % n_dst}") for i in range(200)]
    rates = np.linspace(0.5, 4.0, len(pairs))
    src: list[str] = []
    dst: list[str] = []
    ts: list[int] = []
    for t in ticks:
        k = int(rng.poisson(per_tick))
        src += [f"s{x}" for x in rng.integers(0, n_src, k)]
        dst += [f"d{x}" for x in rng.choice(n_dst, k, p=weights)]
        for (s, d), n in zip(pairs, rng.poisson(rates), strict=True):
            src += [s] * int(n)
            dst += [d] * int(n)
        ts += [t] * (len(src) - len(ts))
    return src, dst, ts


def test_steady_stream_of_many_edges_scores_low() -> None:
    rng = np.random.default_rng(0)
    model = EdgeBurst(rows=4, buckets=2048, decay=0.9, seed=1)
    src, dst, ts = _background(rng, range(60), 800)
    scores = model.update_many(src, dst, ts)
    assert len(set(zip(src, dst, strict=True))) > 20_000
    assert scores.max() < 0.6  # z < 6.6: Poisson tails, over 50,000 (key, tick) pairs
    assert np.quantile(scores, 0.99) < 0.3  # a first-ever event scores 0.14 (z = 1.1)
    assert np.all((scores >= 0.0) & (scores <= 1.0))


def test_one_edge_hammered_in_one_tick_scores_high_on_the_edge() -> None:
    rng = np.random.default_rng(1)
    model = EdgeBurst(rows=4, buckets=2048, decay=0.9, seed=2)
    for t in range(31):  # two busy accounts, and the edge between them once per tick
        src, dst, ts = _background(rng, range(t, t + 1), 300)
        src += ["hub_src"] * 400 + [f"x{i}" for i in range(400)] + ["hub_src"]
        dst += [f"y{i}" for i in range(400)] + ["hub_dst"] * 400 + ["hub_dst"]
        model.update_many(src, dst, ts + [t] * 801)
    scores = [model.update("hub_src", "hub_dst", 30) for _ in range(150)]  # on top of tick 30
    assert max(scores) == scores[-1] > 0.9
    edge, source, destination = model.last_parts
    assert edge == model.last_raw > 5 * max(source, destination)  # the nodes grew by a third


def test_follower_burst_scores_high_within_the_tick() -> None:
    rng = np.random.default_rng(2)
    model = EdgeBurst(rows=4, buckets=2048, decay=0.9, seed=3)
    for t in range(30):
        src, dst, ts = _background(rng, range(t, t + 1), 500)
        fans = [f"fan{t}_{i}" for i in range(int(rng.poisson(5)))]
        model.update_many(src + fans, dst + ["victim"] * len(fans), ts + [t] * len(fans))
    burst = [model.update(f"bot{i}", "victim", 30) for i in range(300)]  # all new sources
    assert burst[-1] > 0.9 and sum(s > 0.9 for s in burst) > 100
    assert model.last_parts[2] == model.last_raw  # the destination is what stands out
    assert max(model.last_parts[:2]) < 2.0  # each new edge and new source is unremarkable


def test_an_organic_destination_with_a_high_steady_rate_is_not_flagged() -> None:
    # Hard negative: ~1000 new followers every tick, wobbling 20% more than Poisson,
    # next to a small account that gets a genuine follower burst of the same kind.
    rng = np.random.default_rng(3)
    model = EdgeBurst(rows=4, buckets=2048, decay=0.95, seed=4)
    celeb_max = []
    for t in range(80):
        src, dst, ts = _background(rng, range(t, t + 1), 300)
        n = int(rng.poisson(rng.gamma(25.0, 1000.0 / 25.0)))
        src += [f"new{t}_{i}" for i in range(n)]
        dst += ["celebrity"] * n
        scores = model.update_many(src, dst, ts + [t] * n)
        if t >= 5:
            celeb_max.append(scores[-n:].max())
        model.update(f"fan{t}", "small", t)
    assert max(celeb_max) < 0.5
    burst = model.update_many([f"bot{i}" for i in range(300)], ["small"] * 300, [80] * 300)
    assert burst[-1] > 0.9


def _step_scores(decay: float) -> list[float]:
    """Per-tick maximum score of a destination whose rate steps from 5 to 300 at tick 30."""
    rng = np.random.default_rng(4)
    model = EdgeBurst(rows=4, buckets=1024, decay=decay, seed=5)
    out = []
    for t in range(60):
        src, dst, ts = _background(rng, range(t, t + 1), 100)
        n = int(rng.poisson(5 if t < 30 else 300))
        src += [f"f{t}_{i}" for i in range(n)]
        scores = model.update_many(src, dst + ["star"] * n, ts + [t] * n)
        out.append(float(scores[-n:].max()))
    return out


def test_decay_lets_a_destination_at_a_new_steady_rate_return_to_low_scores() -> None:
    fast, slow = _step_scores(0.8), _step_scores(0.99)
    assert fast[30] > 0.9 and slow[30] > 0.9  # the step itself is a burst
    assert max(fast[45:]) < 0.4  # forgotten within a few half-lives (3.1 ticks)
    assert min(slow[30:42]) > 0.5  # a long memory keeps flagging the new rate for longer


def test_after_an_isolated_burst_steady_traffic_is_quiet_and_a_new_burst_is_flagged() -> None:
    rng = np.random.default_rng(5)
    model = EdgeBurst(rows=4, buckets=1024, decay=0.9, seed=6)
    after = []
    for t in range(60):
        src, dst, ts = _background(rng, range(t, t + 1), 100)
        n = 400 if t in (20, 50) else int(rng.poisson(5))
        src += [f"f{t}_{i}" for i in range(n)]
        scores = model.update_many(src, dst + ["victim"] * n, ts + [t] * n)
        if t in (20, 50):
            assert scores[-1] > 0.9
        elif t > 20 and n:
            after.append(scores[-n:].max())
    assert max(after) < 0.4


def test_memory_is_constant_in_the_number_of_distinct_edges() -> None:
    model = EdgeBurst(rows=3, buckets=512, decay=0.9, seed=7)
    model.update("a", "b", 0)
    nbytes, pickled = model.nbytes, len(pickle.dumps(model))
    assert nbytes == 3 * 3 * 3 * 512 * 8
    n = 50_000
    model.update_many(
        [f"s{i}" for i in range(n)], [f"d{i}" for i in range(n)], np.arange(n) // 5000
    )
    assert model.nbytes == nbytes
    assert len(pickle.dumps(model)) == pickled
    assert pickled < nbytes + 2048  # the pickle is the arrays plus a few hundred bytes


def test_pickle_round_trip_mid_tick_gives_identical_scores() -> None:
    rng = np.random.default_rng(8)
    model = EdgeBurst(rows=4, buckets=256, decay=0.9, seed=8)
    src, dst, ts = _background(rng, range(12), 60, n_src=200, n_dst=30)
    half = len(src) - 40  # stop in the middle of the last tick
    model.update_many(src[:half], dst[:half], ts[:half])
    clone = pickle.loads(pickle.dumps(model))
    rest = [*zip(src[half:], dst[half:], ts[half:], strict=True), ("x", "y", 15)]
    assert [model.update(*e) for e in rest] == [clone.update(*e) for e in rest]
    assert model.last_parts == clone.last_parts and model.tick == clone.tick == 15


_SCRIPT = """
import json, sys
from models import EdgeBurst
m = EdgeBurst(rows=3, buckets=64, decay=0.9, seed=11, warmup=1)
events = [(f"s{i % 13}", f"d{i % 5}", i // 20) for i in range(100)] + [("s1", "d2", 5)] * 200
print(json.dumps([m.update(*e) for e in events]))
"""


def test_scores_are_identical_across_processes_and_hash_seeds() -> None:
    runs = []
    for hash_seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env, capture_output=True, check=True
        )
        runs.append(json.loads(done.stdout))
    here: dict[str, str] = {}
    exec(_SCRIPT.replace("print(", "out = ("), here)
    assert runs[0] == runs[1] == json.loads(here["out"])
    assert max(runs[0]) > 0.9  # the check covers real scores, not only zeros


def test_update_many_equals_updating_one_event_at_a_time() -> None:
    rng = np.random.default_rng(9)
    src, dst, ts = _background(rng, range(15), 50, n_src=100, n_dst=20)
    ts = [t if i % 17 else max(t - 3, 0) for i, t in enumerate(ts)]  # some late events
    ts[-50:] = [t + 4 for t in ts[-50:]]  # and a gap of empty ticks
    src += ["p"] * 150
    dst += ["q"] * 150
    ts += [ts[-1]] * 150
    one, many = EdgeBurst(seed=10, buckets=128), EdgeBurst(seed=10, buckets=128)
    singles = np.array([one.update(s, d, t) for s, d, t in zip(src, dst, ts, strict=True)])
    k = len(src) // 3  # in two batches, to cover carrying state between them
    batched = np.concatenate(
        [
            many.update_many(src[:k], dst[:k], ts[:k]),
            many.update_many(src[k:], dst[k:], np.asarray(ts[k:])),
        ]
    )
    np.testing.assert_allclose(batched, singles, rtol=1e-12, atol=1e-15)
    assert singles.max() > 0.9 and one.tick == many.tick == ts[-1]
    assert one.last_raw == pytest.approx(many.last_raw, rel=1e-12)
    raw = EdgeBurst(seed=10, buckets=128).update_many(src, dst, ts, raw=True)
    np.testing.assert_allclose([many.unit(r) for r in raw], singles, rtol=1e-12, atol=1e-15)


def test_learn_many_leaves_the_sketches_as_updating_does() -> None:
    rng = np.random.default_rng(11)
    src, dst, ts = _background(rng, range(12), 40, n_src=80, n_dst=15)
    ts[-40:] = [t + 3 for t in ts[-40:]]  # a gap of empty ticks
    scored, counted = EdgeBurst(seed=4, buckets=64), EdgeBurst(seed=4, buckets=64)
    scored.update_many(src, dst, ts)
    for tick in sorted(set(ts)):
        at = [i for i, t in enumerate(ts) if t == tick]
        counted.learn_many([src[i] for i in at], [dst[i] for i in at], tick)
    assert counted.tick == scored.tick
    for name in ("victim", *dst[:5]):
        assert counted.destination_burst(name) == pytest.approx(scored.destination_burst(name))
    with pytest.raises(ValueError, match="same length"):
        counted.learn_many(["a"], [], 99)
    by_destination = EdgeBurst(seed=4, buckets=64)
    for tick in sorted(set(ts)):
        by_destination.learn_destinations(
            [d for d, t in zip(dst, ts, strict=True) if t == tick], tick
        )
    for name in ("victim", *dst[:5]):
        assert by_destination.destination_burst(name) == pytest.approx(
            scored.destination_burst(name)
        )


def test_late_events_count_in_the_current_tick_and_warmup_scores_zero() -> None:
    model = EdgeBurst(rows=2, buckets=64, decay=0.9, seed=12, warmup=2)
    assert [model.update("a", "b", t) for t in (0, 1)] == [0.0, 0.0]
    assert model.update("a", "b", 0) == 0.0 and model.tick == 1  # late: counted in tick 1
    for t in range(2, 10):
        model.update("a", "b", t)
    late = [model.update("a", "b", 3) for _ in range(200)]  # all land in tick 9
    assert model.tick == 9 and late[-1] > 0.9


@pytest.mark.parametrize(
    "kwargs", [{"rows": 0}, {"buckets": 0}, {"decay": 1.0}, {"decay": 0.0}, {"warmup": -1}]
)
def test_invalid_parameters_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EdgeBurst(**kwargs)  # type: ignore[arg-type]


# -- the stream score: `score` / `score_many`, against the all-time level ----------------


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC: the chance a positive outscores a negative (ties count half)."""
    neg = np.sort(scores[~positive])
    pos = scores[positive]
    below = np.searchsorted(neg, pos, side="left")
    upto = np.searchsorted(neg, pos, side="right")
    return float((below + upto).sum() / (2.0 * len(pos) * len(neg)))


def _int_stream(
    rng: np.random.Generator, ticks: range, per_tick: float, n_src: int = 2000, n_dst: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steady integer-id traffic: random sources, destinations of Zipf-like popularity."""
    weights = 1.0 / np.arange(1, n_dst + 1) ** 1.1
    weights /= weights.sum()
    k = rng.poisson(per_tick, len(ticks))
    ts = np.repeat(np.asarray(ticks), k)
    return rng.integers(0, n_src, ts.size), rng.choice(n_dst, ts.size, p=weights), ts


def test_score_many_equals_scoring_one_event_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(20)
    src, dst, ts = _int_stream(rng, range(40), 60, n_src=150, n_dst=25)
    ts[::11] = np.maximum(ts[::11] - 3, 0)  # some late events
    ts[-100:] += 5  # a gap of empty ticks
    src = np.concatenate([src, np.full(300, 7), src[:200]])  # a flood within one tick, then
    dst = np.concatenate([dst, np.full(300, 8), dst[:200]])  # more traffic in the next
    ts = np.concatenate([ts, np.full(300, ts[-1]), np.full(200, ts[-1] + 1)])
    one = EdgeBurst(rows=3, buckets=64, seed=21)
    events = zip(src.tolist(), dst.tolist(), ts.tolist(), strict=True)
    singles = np.array([one.score(s, d, t) for s, d, t in events])
    # Small chunks, so that `score_many` carries its state across many chunks within one
    # call, across calls, and across per-call events in the middle of a tick.
    monkeypatch.setattr("models.edge_burst._CHUNK", 9 * 37)
    many = EdgeBurst(rows=3, buckets=64, seed=21)
    k1, k2 = len(src) // 3, len(src) // 3 + 5
    batched = np.concatenate(
        [
            many.score_many(src[:k1], dst[:k1], ts[:k1]),
            [many.score(int(src[i]), int(dst[i]), int(ts[i])) for i in range(k1, k2)],
            many.score_many(list(src[k2:]), list(dst[k2:]), ts[k2:].tolist()),
        ]
    )
    np.testing.assert_allclose(batched, singles, rtol=1e-9, atol=1e-12)
    assert singles.max() > 0.9 and np.median(singles) < 0.3  # real scores, not only zeros
    assert one.tick == many.tick == ts[-1]
    assert one.last_parts == pytest.approx(many.last_parts, rel=1e-9)
    raw = EdgeBurst(rows=3, buckets=64, seed=21).score_many(src, dst, ts, raw=True)
    np.testing.assert_allclose([one.unit(r) for r in raw], singles, rtol=1e-9, atol=1e-12)
    strings = EdgeBurst(rows=3, buckets=64, seed=21)
    events = zip(src, dst, ts.tolist(), strict=True)
    by_name = [strings.score(f"s{s}", f"d{d}", t) for s, d, t in events]
    np.testing.assert_allclose(
        EdgeBurst(rows=3, buckets=64, seed=21).score_many(
            [f"s{s}" for s in src], [f"d{d}" for d in dst], ts
        ),
        by_name,
        rtol=1e-9,
        atol=1e-12,
    )


def test_a_sustained_flood_stays_scored_high_over_many_ticks() -> None:
    rng = np.random.default_rng(22)
    stream, burst = (EdgeBurst(rows=4, buckets=1024, seed=23) for _ in range(2))
    background = _int_stream(rng, range(200), 300)
    stream.score_many(*background)
    burst.update_many(*background)
    stream_max, burst_max, quiet = [], [], []
    for t in range(200, 260):  # one edge hammered 500 times a tick for 60 ticks
        src, dst, ts = _int_stream(rng, range(t, t + 1), 300)
        src, dst = np.append(src, [9999] * 500), np.append(dst, [3] * 500)
        ts = np.append(ts, [t] * 500)
        scores = stream.score_many(src, dst, ts)
        stream_max.append(scores[-500:].max())
        quiet.append(np.quantile(scores[:-500], 0.99))
        burst_max.append(burst.update_many(src, dst, ts)[-500:].max())
    assert min(stream_max) > 0.95  # the flood's last tick as much as its first
    assert max(quiet) < 0.5  # while the steady traffic around it stays low
    assert burst_max[0] > 0.95 and burst_max[-1] < 0.5  # what a decayed history does instead
    after = [stream.score(9999, 3, 260 + i) for i in range(3)]  # the edge back to normal
    assert max(after) < 0.3


def test_integer_ids_score_as_their_names_do_when_nothing_collides() -> None:
    rng = np.random.default_rng(24)
    src, dst, ts = _int_stream(rng, range(30), 40, n_src=40, n_dst=12)
    src = np.append(src, [5] * 200)
    dst = np.append(dst, [6] * 200)
    ts = np.append(ts, [30] * 200)
    kwargs = {"rows": 4, "buckets": 1 << 14, "seed": 25}  # no key shares all its buckets
    names = ([f"{s}" for s in src], [f"{d}" for d in dst], ts)
    by_name = EdgeBurst(**kwargs).score_many(*names)
    assert by_name.max() > 0.9
    by_id = EdgeBurst(**kwargs).score_many(src, dst, ts)  # exact counts: the same scores,
    np.testing.assert_allclose(by_id, by_name, rtol=1e-12, atol=1e-15)  # to rounding
    np.testing.assert_array_equal(
        EdgeBurst(**kwargs).score_many(src.astype(np.uint16), dst.astype(np.int32), ts), by_id
    )
    np.testing.assert_array_equal(
        EdgeBurst(**kwargs).score_many(src.tolist(), list(dst), ts.tolist()), by_id
    )
    np.testing.assert_array_equal(
        EdgeBurst(**kwargs).update_many(src, dst, ts), EdgeBurst(**kwargs).update_many(*names)
    )
    per_call = EdgeBurst(**kwargs)
    events = zip(src, dst, ts, strict=True)  # numpy integer scalars, one by one
    assert [per_call.score(s, d, t) for s, d, t in events] == pytest.approx(by_name)
    sources = []  # the string "7" and the integer 7 are different keys
    for seven in (7, "7"):
        m = EdgeBurst(**kwargs, warmup=1)
        m.score_many([7] * 50, [1] * 50, [0] * 50)
        m.score(seven, 2, 1)
        sources.append(m.last_parts[1])
    assert sources[0] == 0.0 and sources[1] > 0.5  # below 7's level; a new source: z^2 ~ 1.2 / 2


def test_bursts_outrank_steady_traffic_in_a_synthetic_stream() -> None:
    rng = np.random.default_rng(26)
    src, dst, ts = _int_stream(rng, range(120), 200)
    positive = np.zeros(src.size, dtype=bool)
    parts = [(src, dst, ts, positive)]
    for t in range(60, 120, 3):  # an edge flooded every third tick
        parts.append((np.full(150, 5000), np.full(150, 7), np.full(150, t), np.ones(150, bool)))
    parts.append((np.arange(6000, 6200), np.full(200, 150), np.full(200, 90), np.ones(200, bool)))
    parts.append((np.full(200, 7000), np.arange(200) + 300, np.full(200, 100), np.ones(200, bool)))
    src, dst, ts, positive = (np.concatenate(x) for x in zip(*parts, strict=True))
    order = np.argsort(ts, kind="stable")  # each attack lands at the end of its tick
    src, dst, ts, positive = src[order], dst[order], ts[order], positive[order]
    scores = EdgeBurst(rows=4, buckets=1024, seed=27).score_many(src, dst, ts)
    assert _auc(scores, positive) > 0.95  # a flood, a follower burst, a source's spree
    assert np.quantile(scores[~positive], 0.99) < 0.4


def test_stream_score_state_is_constant_and_pickles_mid_tick() -> None:
    rng = np.random.default_rng(28)
    src, dst, ts = _int_stream(rng, range(20), 100, n_src=300, n_dst=40)
    model = EdgeBurst(rows=3, buckets=512, seed=29)
    before = model.nbytes
    model.score(1, 2, 0)
    nbytes, pickled = model.nbytes, len(pickle.dumps(model))
    assert nbytes == before + 2 * 3 * 3 * 512 * 8  # allocated once, by the first call
    half = len(src) - 60  # stop in the middle of the last tick
    model.score_many(src[:half], dst[:half], ts[:half])
    assert model.nbytes == nbytes and len(pickle.dumps(model)) == pickled < nbytes + 2048
    clone = pickle.loads(pickle.dumps(model))
    rest = (src[half:], dst[half:], ts[half:])
    np.testing.assert_array_equal(model.score_many(*rest), clone.score_many(*rest))
    assert [model.score("x", "y", 25), model.score(3, 4, 25)] == [
        clone.score("x", "y", 25),
        clone.score(3, 4, 25),
    ]
    assert model.last_parts == clone.last_parts and model.tick == clone.tick == 25


def test_both_scores_share_one_clock() -> None:
    model = EdgeBurst(rows=2, buckets=64, seed=30, warmup=1)
    model.score_many([1, 2, 3], [4, 5, 6], [0, 1, 9])
    model.update("a", "b", 3)  # late for the model's clock: counted in tick 9
    assert model.tick == 9 and model.destination_burst("b")[0] == 1.0
    model.update("a", "b", 12)
    assert model.score(1, 4, 10) >= 0.0 and model.tick == 12  # late: counted in tick 12
    assert model._level is not None and model._level.tick == 12
