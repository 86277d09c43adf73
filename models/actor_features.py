"""How an account acts within a window, as a few numbers per account: what sets a script
apart from a person.

A person acts in bursts and pauses (inter-event gaps vary as much as they average, or
more), at a human pace, on a few things and then a few others, and sleeps. A script acts
on a timer (gaps nearly equal), can keep a pace no person keeps, repeats one kind of
action, and runs round the clock. Per account and window:

- `rate`: events per minute of the window;
- `gap_cv`: coefficient of variation of the gaps between successive events (std / mean);
  near 0 is a metronome, about 1 a Poisson process, above 1 bursty. Accounts with fewer
  than 3 events have no measurable regularity and get 1.0, the neutral value;
- `breadth`: distinct targets per event (1: every event on a new target);
- `hour_spread`: how evenly the events spread over the hours of the day, 1 - the length of
  the mean of their time-of-day angles (0: all at one time of day, near 1: round the
  clock); only informative on windows of several hours or more;
- `kind_share`: the share of the account's most frequent event kind (1: one kind only).

Everything is computed for all accounts of a window at once, on sorts and `bincount`s
(no Python step per account nor per event), from plain numbers: an account code per event
(0 .. n_actors - 1), event times in epoch ms, a 64-bit hash per event's target and a small
integer per event's kind. `to_unit` maps the features to [0, 1] on fixed ranges (what
Half-Space Trees expect), the same for every window so scores stay comparable.

Two accounts over a 10-minute window: account 0 follows a new target every 30 s sharp,
account 1 clicks twice on one item, comments on another and clicks again, irregularly:

    >>> import numpy as np
    >>> actors = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> ts = np.array([0, 30_000, 60_000, 90_000, 5_000, 9_000, 200_000, 560_000])
    >>> targets = np.array([11, 12, 13, 14, 21, 21, 22, 21])
    >>> kinds = np.array([0, 0, 0, 0, 2, 2, 4, 2])
    >>> f = actor_features(actors, ts, targets, kinds, n_actors=2, window_ms=600_000)
    >>> dict(zip(FEATURES, f[0].round(3).tolist()))
    {'rate': 0.4, 'gap_cv': 0.0, 'breadth': 1.0, 'hour_spread': 0.0, 'kind_share': 1.0}
    >>> dict(zip(FEATURES, f[1].round(3).tolist()))
    {'rate': 0.4, 'gap_cv': 0.786, 'breadth': 0.5, 'hour_spread': 0.0, 'kind_share': 0.75}
    >>> to_unit(f).round(2).tolist()[0]
    [0.08, 0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

import numpy as np

FEATURES: tuple[str, ...] = ("rate", "gap_cv", "breadth", "hour_spread", "kind_share")
N_FEATURES = len(FEATURES)

NEUTRAL_CV = 1.0  # gaps of a Poisson process: what an account with < 3 events is taken to have
RATE_CAP = 60.0  # events per minute mapped to 1 by `to_unit` (one a second, beyond any person)
CV_CAP = 3.0  # a gap CV mapped to 1 by `to_unit`: burstier than this is all the same
MAX_KINDS = 16  # event kinds are small integers below this
DAY_MS = 86_400_000

_ACTOR_SHIFT = 40  # an (actor, target) pair packs the actor code above 40 bits of the hash
_HASH_BITS = np.int64((1 << _ACTOR_SHIFT) - 1)
_MAX_ACTORS = 1 << 23  # codes that fit above the hash bits of a signed int64
_TIME_BITS = 40  # an (actor, time) pair packs the actor above 40 bits of ms (~35 years)


def actor_features(
    actors: np.ndarray,
    ts: np.ndarray,
    targets: np.ndarray,
    kinds: np.ndarray,
    n_actors: int,
    window_ms: int,
) -> np.ndarray:
    """The (n_actors, N_FEATURES) features of a window's events: row `a` describes the
    events whose code in `actors` is `a` (a row of an account without events is rate 0,
    neutral regularity, breadth 1, spread 0, kind share 1). `actors` are codes in
    [0, n_actors); `ts` epoch ms; `targets` int64 hashes (equal hashes: same target);
    `kinds` integers in [0, MAX_KINDS)."""
    actors = np.asarray(actors, np.int64)
    ts = np.asarray(ts, np.int64)
    targets = np.asarray(targets, np.int64)
    kinds = np.asarray(kinds, np.int64)
    if not len(actors) == len(ts) == len(targets) == len(kinds):
        raise ValueError("actors, ts, targets and kinds must have one value per event")
    if n_actors > _MAX_ACTORS:
        raise ValueError(f"at most {_MAX_ACTORS} actors per call")
    out = np.empty((n_actors, N_FEATURES), np.float64)
    counts = np.bincount(actors, minlength=n_actors).astype(np.float64)
    present = counts > 0
    safe_counts = np.maximum(counts, 1.0)
    out[:, 0] = counts * 60_000.0 / max(window_ms, 1)
    out[:, 1] = _gap_cv(actors, ts, n_actors, counts)
    out[:, 2] = np.where(present, _distinct_targets(actors, targets, n_actors) / safe_counts, 1.0)
    out[:, 3] = np.where(present, _hour_spread(actors, ts, n_actors, safe_counts), 0.0)
    out[:, 4] = np.where(present, _top_kind(actors, kinds, n_actors) / safe_counts, 1.0)
    return out


def to_unit(features: np.ndarray) -> np.ndarray:
    """Features mapped to [0, 1] on fixed ranges: the rate on a log scale up to RATE_CAP
    per minute, the gap CV up to CV_CAP; the others are already shares."""
    unit = np.array(features, np.float64, copy=True, ndmin=2)
    unit[:, 0] = np.log1p(np.maximum(unit[:, 0], 0.0)) / np.log1p(RATE_CAP)
    unit[:, 1] /= CV_CAP
    return np.clip(unit, 0.0, 1.0)


def _gap_cv(actors: np.ndarray, ts: np.ndarray, n_actors: int, counts: np.ndarray) -> np.ndarray:
    """Per actor, std / mean of the gaps between its successive events (two passes, so a
    near-constant gap keeps its precision); NEUTRAL_CV below 3 events."""
    cv = np.full(n_actors, NEUTRAL_CV)
    if len(ts) < 3:
        return cv
    low = int(ts.min())
    span = int(ts.max()) - low
    if span < (1 << _TIME_BITS) and n_actors <= (1 << (63 - _TIME_BITS)):
        ordered = np.sort((actors << _TIME_BITS) | (ts - low))  # by actor, then time
        by_actor = ordered >> _TIME_BITS
        times = ordered & ((1 << _TIME_BITS) - 1)
    else:  # a span too long to pack: a (slower) lexicographic sort
        order = np.lexsort((ts, actors))
        by_actor, times = actors[order], ts[order]
    same = by_actor[1:] == by_actor[:-1]
    owner = by_actor[1:][same]
    gaps = np.diff(times)[same].astype(np.float64)
    n_gaps = np.bincount(owner, minlength=n_actors).astype(np.float64)
    measured = n_gaps >= 2
    mean = np.bincount(owner, gaps, minlength=n_actors) / np.maximum(n_gaps, 1.0)
    var = np.bincount(owner, (gaps - mean[owner]) ** 2, minlength=n_actors) / np.maximum(
        n_gaps, 1.0
    )
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mean > 0, std / mean, 0.0)  # all at one instant: as regular as can be
    cv[measured] = ratio[measured]
    return cv


def _distinct_targets(actors: np.ndarray, targets: np.ndarray, n_actors: int) -> np.ndarray:
    """Per actor, how many distinct target hashes its events have (a plain sort of packed
    (actor, hash) pairs; a collision of 40 hash bits within one actor is negligible)."""
    if not len(actors):
        return np.zeros(n_actors)
    pairs = np.sort((actors << _ACTOR_SHIFT) | (targets & _HASH_BITS))
    keep = np.empty(len(pairs), bool)
    keep[0] = True
    np.not_equal(pairs[1:], pairs[:-1], out=keep[1:])
    return np.bincount(pairs[keep] >> _ACTOR_SHIFT, minlength=n_actors).astype(np.float64)


def _hour_spread(
    actors: np.ndarray, ts: np.ndarray, n_actors: int, safe_counts: np.ndarray
) -> np.ndarray:
    """Per actor, 1 - |mean unit vector of its events' times of day| (circular spread)."""
    angle = (ts % DAY_MS).astype(np.float64) * (2.0 * np.pi / DAY_MS)
    cos = np.bincount(actors, np.cos(angle), minlength=n_actors) / safe_counts
    sin = np.bincount(actors, np.sin(angle), minlength=n_actors) / safe_counts
    return np.clip(1.0 - np.hypot(cos, sin), 0.0, 1.0)


def _top_kind(actors: np.ndarray, kinds: np.ndarray, n_actors: int) -> np.ndarray:
    """Per actor, the count of its most frequent event kind."""
    if len(kinds) and (kinds.min() < 0 or kinds.max() >= MAX_KINDS):
        raise ValueError(f"event kinds must be integers in [0, {MAX_KINDS})")
    table = np.bincount(actors * MAX_KINDS + kinds, minlength=n_actors * MAX_KINDS)
    return table.reshape(n_actors, MAX_KINDS).max(axis=1).astype(np.float64)
