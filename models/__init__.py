"""Online statistical models: pure, synchronous, on plain numbers and strings.

A model is the state a stage keeps per key and the arithmetic on it; the stage decides
what to feed it and what a result means. So that any model reads like any other, they
share a few verbs:

- `learn(...)` takes in what happened (a window's count, an account's activity) and
  returns nothing; `learn_<what>` where a model learns more than one thing;
- `score(...)` judges an observation against what was learned, changing nothing (but for
  `EdgeBurst.score`: an edge of a stream is judged once, on arrival, so it counts it too);
- `update(...)` is `score` then `learn`: the observation is judged against the history
  before it, then becomes part of it (the baselines: one call per window);
- `<verb>_many` does the same for a batch of rows, with the same numbers as one by one;
- a read named for what it returns (`share`, `rarity`, `active`, `ready`) changes nothing.

Bookkeeping keeps the verbs of what it keeps: a `Credit` is `charge`d, a `DormancyWatch`
`watch`es accounts and says which are `due`, a `PriorCountBaseline` can `forget_last`
what a window taught or `adopt` a normal outright, on evidence only its caller has.

What a model may not do, so that the embedded and distributed runtimes get the same
answers and a replay repeats them: no I/O (files, network, logging, printing), no clock
(time is an argument: event time in epoch ms, or a window or tick index), no asyncio or
threads, no randomness but a generator seeded by its caller; its state pickles (the
distributed runtime keeps a key's model as one changelog record). A heavy library
(river, scikit-learn) is imported where it is used, so importing a model costs nothing.
The arithmetic models share (the Anscombe scale, the 0..1 score, half-lives) is in
`models.scales`.
"""

from models.activity import ActivityCounts
from models.activity_norm import ActivityNorm
from models.actor_features import actor_features
from models.bot_score import BotScorer
from models.churn import quick_undos
from models.count_baseline import CountBaseline
from models.credit import Credit, level_of
from models.dormancy import DormancyWatch, Watched
from models.edge_burst import EdgeBurst
from models.follow_support import FollowSupport
from models.follower_composition import FollowerComposition
from models.lockstep import lockstep_groups, rounds
from models.near_duplicate import MinHasher, normalise
from models.network import network_of
from models.registration_burst import source_of
from models.seasonal_baseline import SeasonalBaseline

__all__ = [
    "ActivityCounts",
    "ActivityNorm",
    "BotScorer",
    "CountBaseline",
    "Credit",
    "DormancyWatch",
    "EdgeBurst",
    "FollowSupport",
    "FollowerComposition",
    "MinHasher",
    "SeasonalBaseline",
    "Watched",
    "actor_features",
    "level_of",
    "lockstep_groups",
    "network_of",
    "normalise",
    "quick_undos",
    "rounds",
    "source_of",
]
