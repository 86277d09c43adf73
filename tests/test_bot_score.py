"""Bot-like behaviour: window features per account, the online scorer, member evidence."""

from __future__ import annotations

import doctest
import math
import pickle
import statistics
import subprocess
import sys
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

import pipeline.detectors.bot_evidence
from models.actor_features import (
    DAY_MS,
    FEATURES,
    N_FEATURES,
    NEUTRAL_CV,
    actor_features,
    to_unit,
)
from models.bot_score import BotScorer
from pipeline.contract.events import Click, Comment, Follow
from pipeline.detectors.bot_evidence import (
    bot_evidence,
    learn_window,
    member_bots,
    rank_members,
    window_features,
)

MINUTE = 60_000
HOUR = 3_600_000


def plain_features(
    actors: list[int], ts: list[int], targets: list[int], kinds: list[int], n: int, window: int
) -> list[list[float]]:
    """The features, one account at a time, in plain Python."""
    rows = []
    for a in range(n):
        mine = [i for i, x in enumerate(actors) if x == a]
        times = sorted(ts[i] for i in mine)
        count = len(mine)
        gaps = [b - t for t, b in pairwise(times)]
        if len(gaps) < 2:
            cv = NEUTRAL_CV
        elif statistics.fmean(gaps) == 0:
            cv = 0.0
        else:
            cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
        breadth = len({targets[i] for i in mine}) / count if count else 1.0
        if count:
            angles = [2 * math.pi * (t % DAY_MS) / DAY_MS for t in times]
            c = sum(map(math.cos, angles)) / count
            s = sum(map(math.sin, angles)) / count
            spread = 1 - math.hypot(c, s)
            share = max(Counter(kinds[i] for i in mine).values()) / count
        else:
            spread, share = 0.0, 1.0
        rows.append([count * 60_000 / window, cv, breadth, spread, share])
    return rows


@pytest.mark.parametrize("span", [6 * HOUR, 1 << 42])  # the packed sort, and the lexsort
def test_features_agree_with_plain_python(span: int) -> None:
    rng = np.random.default_rng(3)
    n = 40
    actors = rng.integers(0, n - 3, 400)  # the last three accounts have no events
    actors[:6] = [0, 0, 0, 1, 1, 2]  # accounts with 3, 2 and 1 events at fixed times...
    actors[6:] = np.where(np.isin(actors[6:], [0, 1, 2]), 5, actors[6:])
    ts = rng.integers(0, span, 400)
    ts[:3] = 1_000  # ...account 0: three events at one instant
    targets = rng.integers(0, 12, 400) * 7919 - 40_000
    kinds = rng.integers(0, 4, 400)
    got = actor_features(actors, ts, targets, kinds, n_actors=n, window_ms=span)
    want = plain_features(actors.tolist(), ts.tolist(), targets.tolist(), kinds.tolist(), n, span)
    assert got.shape == (n, N_FEATURES)
    np.testing.assert_allclose(got, np.array(want), rtol=1e-9, atol=1e-9)
    assert got[0, 1] == 0.0 and got[1, 1] == NEUTRAL_CV  # an instant burst; too few gaps
    assert got[n - 1].tolist() == [0.0, NEUTRAL_CV, 1.0, 0.0, 1.0]  # no events


def test_features_reject_bad_input() -> None:
    one = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="one value per event"):
        actor_features(one, one[:2], one, one, n_actors=1, window_ms=MINUTE)
    with pytest.raises(ValueError, match="event kinds"):
        actor_features(one, one, one, one + 99, n_actors=1, window_ms=MINUTE)


def test_unit_scaling_is_fixed_and_clipped() -> None:
    raw = np.array([[0.0, 0.0, 1.0, 0.5, 1.0], [1e6, 50.0, 0.2, 0.0, 0.3]])
    unit = to_unit(raw)
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    assert unit[0, 0] == 0.0 and unit[1, 0] == 1.0 and unit[1, 1] == 1.0
    assert unit[:, 2:].tolist() == raw[:, 2:].tolist()
    assert raw[1, 0] == 1e6  # the input is left alone


# ---- a simulated day: people, power users and scripts ------------------------------------


def people(rng: np.random.Generator, n: int, first: int, heavy: bool = False) -> list[np.ndarray]:
    """Accounts acting like people over a day: sessions at their own waking hours,
    events within a session at irregular gaps, a personal mix of kinds and a few
    favourite targets among many. `heavy`: power users, as busy as the scripts."""
    actors, times, targets, kinds = [], [], [], []
    for a in range(first, first + n):
        per_day = rng.poisson(900) if heavy else max(1, int(rng.lognormal(3.0, 1.0)))
        peak = rng.uniform(9, 23) * HOUR
        sessions = 1 + rng.poisson(per_day / 8)
        centres = (peak + rng.normal(0, 3 * HOUR, sessions)) % DAY_MS
        which = rng.integers(0, sessions, per_day)
        offsets = rng.exponential(40_000 if not heavy else 20_000, per_day).cumsum()
        t = (centres[which] + offsets % (20 * MINUTE)).astype(np.int64) % DAY_MS
        mix = rng.dirichlet(np.ones(4))
        favourites = rng.integers(0, 50_000, 8)
        own = rng.random(per_day) < 0.5
        target = np.where(own, favourites[rng.integers(0, 8, per_day)], rng.zipf(1.6, per_day))
        actors.append(np.full(per_day, a))
        times.append(t)
        targets.append(target)
        kinds.append(rng.choice(4, per_day, p=mix))
    return [np.concatenate(x) for x in (actors, times, targets, kinds)]


def scripts(rng: np.random.Generator, n: int, first: int) -> list[np.ndarray]:
    """Scripted accounts: one follow every `period` (a small jitter), round the clock,
    a new target each time."""
    actors, times, targets, kinds = [], [], [], []
    for a in range(first, first + n):
        period = rng.uniform(60_000, 300_000)
        count = int(DAY_MS // period)
        t = rng.uniform(0, period) + period * np.arange(count)
        t += rng.uniform(-0.02, 0.02, count) * period
        actors.append(np.full(count, a))
        times.append(np.clip(t, 0, DAY_MS - 1).astype(np.int64))
        targets.append(rng.integers(0, 1 << 40, count))
        kinds.append(np.zeros(count, np.int64))
    return [np.concatenate(x) for x in (actors, times, targets, kinds)]


def day(rng: np.random.Generator, *groups: tuple[str, int]) -> tuple[np.ndarray, list[int]]:
    """One day's unit feature rows for the groups asked for, and where each group starts."""
    parts, starts, first = [], [], 0
    for kind, n in groups:
        starts.append(first)
        if kind == "scripts":
            parts.append(scripts(rng, n, first))
        else:
            parts.append(people(rng, n, first, heavy=kind == "heavy"))
        first += n
    columns = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return to_unit(actor_features(*columns, n_actors=first, window_ms=DAY_MS)), starts


def test_a_scripted_bot_scores_well_above_people_and_power_users() -> None:
    rng = np.random.default_rng(11)
    scorer = BotScorer(seed=5, refit_every=2)
    for _ in range(3):  # three ordinary days to learn from
        rows, _ = day(rng, ("people", 1500))
        scorer.learn_many(rows)
    rows, (_, heavy_at, bots_at) = day(rng, ("people", 1500), ("heavy", 30), ("scripts", 20))
    scorer.learn_many(rows)  # the day itself is learned too, as a stage would
    scores = scorer.score_many(rows)
    humans, heavy, bots = scores[:heavy_at], scores[heavy_at:bots_at], scores[bots_at:]
    assert bots.min() > 0.95
    assert np.median(humans) < 0.7
    assert bots.min() > np.quantile(humans, 0.97)
    assert bots.min() > heavy.max()  # busy people are not scripts
    # the reasons: a bot's regularity sits beyond almost every account seen
    assert (scorer.rarity(rows[bots_at:])[:, FEATURES.index("gap_cv")] > 0.95).all()


def test_the_same_seed_gives_the_same_scores() -> None:
    rng = np.random.default_rng(2)
    windows = [rng.random((3000, N_FEATURES)) for _ in range(4)]
    probe = rng.random((50, N_FEATURES))
    results = []
    for seed in (1, 1, 2):
        scorer = BotScorer(seed=seed, reservoir_size=2000, refit_every=2)
        for window in windows:
            scorer.learn_many(window)
        results.append((scorer.score_many(probe), scorer.reservoir.copy()))
    (a, res_a), (b, res_b), (c, res_c) = results
    assert np.array_equal(a, b) and np.array_equal(res_a, res_b)
    assert not np.array_equal(a, c) and not np.array_equal(res_a, res_c)


def test_reservoir_is_bounded_and_uniform_over_the_stream() -> None:
    scorer = BotScorer(seed=4, reservoir_size=500, learn_cap=10, min_fit=10_000)
    windows = 60
    for w in range(windows):
        rows = np.zeros((300, N_FEATURES))
        rows[:, 0] = (w + 0.5) / windows  # which window a row came from
        scorer.learn_many(rows)
        assert len(scorer.reservoir) == min(300 * (w + 1), 500)
    assert scorer.seen == 300 * windows and scorer.reservoir.shape == (500, N_FEATURES)
    sampled = np.floor(scorer.reservoir[:, 0] * windows).astype(int)
    thirds = np.bincount(sampled * 3 // windows, minlength=3)  # early, middle, late windows
    assert thirds.min() > 130  # ~167 each when uniform; not just the first or last rows
    assert scorer.refits == 5  # min_fit is capped at the reservoir: fit at 600 rows, then each 12th


def test_forest_is_refit_every_n_windows_on_the_reservoir() -> None:
    rng = np.random.default_rng(9)
    scorer = BotScorer(seed=3, refit_every=3, min_fit=200, reservoir_size=1000)
    assert not scorer.ready and scorer.score_many(rng.random((2, N_FEATURES))).tolist() == [0, 0]
    probe = np.full((1, N_FEATURES), 0.5)
    fits, scores = [], []
    for w in range(10):
        scorer.learn_many(rng.random((150, N_FEATURES)) * (0.5 + w / 20))  # a drift
        fits.append(scorer.refits)
        scores.append(float(scorer.score_many(probe)[0]))
    # first fit once 200 rows are held (window 2), then every third window
    assert fits == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert scorer.ready and len(set(scores)) > 3  # the model follows the drift


def test_rows_must_have_the_feature_count() -> None:
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        BotScorer().learn_many(np.zeros((3, 4)))


def test_a_loaded_scorer_scores_as_the_one_saved() -> None:
    rng = np.random.default_rng(6)
    scorer = BotScorer(seed=2, refit_every=2, min_fit=200)
    for _ in range(3):
        scorer.learn_many(rng.random((300, N_FEATURES)))
    loaded = pickle.loads(pickle.dumps(scorer))  # the forest is refit from its rows
    probe = rng.random((40, N_FEATURES))
    assert loaded.refits == scorer.refits == 2
    assert np.array_equal(loaded.score_many(probe), scorer.score_many(probe))


def test_importing_the_models_loads_no_heavy_library() -> None:
    """river and scikit-learn (and scipy under both) cost seconds to import: a model
    imports them where it uses them, not when the CLI starts."""
    heavy = ("river", "sklearn", "scipy")
    code = f"import sys, models; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- member evidence from events ---------------------------------------------------------


def window_events(rng: np.random.Generator, start: int, bots: int, humans: int) -> list:
    """A 15-minute window: scripted followers (one follow every 20 s) and people clicking
    and commenting at irregular times."""
    events: list = []
    for b in range(bots):
        offset = int(rng.uniform(0, 20_000))
        for i in range(45):
            events.append(
                Follow(
                    event_id=f"b{b}-{start}-{i}",
                    ts=start + offset + 20_000 * i,
                    actor=f"bot{b}",
                    target=f"t{start}-{b}-{i}",
                )
            )
    for h in range(humans):
        count = 1 + rng.poisson(6)
        times = np.sort(rng.uniform(0, 15 * MINUTE, count)).astype(int)
        for i, t in enumerate(times.tolist()):
            item = f"c{rng.integers(0, 30)}"
            kind = Click if rng.random() < 0.7 else Comment
            extra = {"text": "nice"} if kind is Comment else {}
            events.append(
                kind(
                    event_id=f"h{h}-{start}-{i}",
                    ts=start + t,
                    actor=f"user{h}",
                    target="owner",
                    content_id=item,
                    **extra,
                )
            )
    events.sort(key=lambda e: e.ts)
    return events


def test_member_evidence_ranks_the_scripts_first() -> None:
    rng = np.random.default_rng(21)
    scorer = BotScorer(seed=8, refit_every=2)
    window = 15 * MINUTE
    assert member_bots(["bot0"], window_events(rng, 0, 2, 20), scorer, window) == {}
    for w in range(4):
        learned = learn_window(scorer, window_events(rng, w * window, 0, 900), window)
        assert learned == 900
    events = window_events(rng, 4 * window, 6, 600)
    assert learn_window(scorer, events, window, max_actors=300) == 300  # a capped sample
    members = ["user1", "bot2", "user7", "bot0", "user3", "bot5", "nobody"]
    bots = member_bots(members, events, scorer, window)
    assert set(bots) == set(members) - {"nobody"}  # no events, no score
    ranked = rank_members(members, bots)
    assert set(ranked[:3]) == {"bot0", "bot2", "bot5"} and ranked[-1] == "nobody"
    assert all(bots[b].score > 0.9 for b in ("bot0", "bot2", "bot5"))
    assert "gap_cv" in bots["bot0"].top and bots["bot0"].features["gap_cv"] < 0.05
    evidence = bot_evidence(bots, limit=4)
    assert list(evidence["bot_scores"])[:3] == ranked[:3] and len(evidence["bot_scores"]) == 4
    assert evidence["bot_scored_members"] == 6
    assert bot_evidence({}) == {}


def test_window_features_follow_first_seen_order() -> None:
    events = [
        Follow(event_id="1", ts=5, actor="zed", target="a"),
        Follow(event_id="2", ts=6, actor="amy", target="a"),
        Follow(event_id="3", ts=7, actor="zed", target="b"),
    ]
    names, rows = window_features(events, MINUTE)
    assert names == ["zed", "amy"]
    assert rows[:, 0].tolist() == [2.0, 1.0] and rows[:, 2].tolist() == [1.0, 1.0]
    assert window_features([], MINUTE)[1].shape == (0, N_FEATURES)


def test_bot_evidence_docstring_example() -> None:
    failures, tried = doctest.testmod(pipeline.detectors.bot_evidence)
    assert tried > 0 and failures == 0


def test_learn_window_samples_the_same_accounts_on_a_replay() -> None:
    events = window_events(np.random.default_rng(5), 0, 3, 400)
    reservoirs = []
    for seed in (4, 4, 6):
        scorer = BotScorer(seed=seed)
        assert learn_window(scorer, events, 15 * MINUTE, max_actors=100) == 100
        reservoirs.append(scorer.reservoir.copy())
    assert np.array_equal(reservoirs[0], reservoirs[1])
    assert not np.array_equal(reservoirs[0], reservoirs[2])  # another seed, another sample
