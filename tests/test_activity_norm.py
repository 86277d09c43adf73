"""models.ActivityNorm keeps its median and low share incrementally: they must equal the
plain figures over the followers it holds, however they come and go."""

from __future__ import annotations

import pickle
import random
import statistics

from models.activity_norm import ActivityNorm


def test_the_kept_median_and_low_share_are_those_of_the_followers_held() -> None:
    rng = random.Random(7)
    norm = ActivityNorm(size=50, per_account=3)
    for _ in range(400):
        batch = [
            (f"acct{rng.randrange(30)}", float(rng.choice([0, 1, 2, 5, 8, 13])), rng.random() < 0.3)
            for _ in range(rng.randrange(1, 9))
        ]
        norm.learn(batch)
        held = list(norm.judged)
        assert len(held) <= 50
        assert max(norm.taken.values()) <= 3 and sum(norm.taken.values()) == len(held)
        assert norm.rate == statistics.median(r[1] for r in held)
        assert norm.low_share == sum(r[2] for r in held) / len(held)
    again = pickle.loads(pickle.dumps(norm))
    assert (again.rate, again.low_share, list(again.judged)) == (
        norm.rate,
        norm.low_share,
        list(norm.judged),
    )
