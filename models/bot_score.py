"""How bot-like an account's window behaviour is, next to the accounts seen so far.

The score RANKS and SUPPORTS; it never punishes alone. Unusual behaviour is not fake
behaviour: a night-shift worker, a power user or a scheduled news account all look
unusual. A detector that has already found a group (lockstep, duplicate content, churn)
uses the score to order the group's members and to add evidence, never to act on an
account that no other evidence implicates.

Two unsupervised detectors of the unusual, on the features of `models.actor_features`
mapped to [0, 1] (`to_unit`):

- river's Half-Space Trees learn online, a capped random sample of each window's rows (a
  Python step per row, so at most `learn_cap` per window); they follow drift and score
  from their second mass window on (`hst_window` rows learned);
- a scikit-learn Isolation Forest is refit every `refit_every` windows on a reservoir
  sample of every row ever learned (Algorithm R, fixed size): a slower, steadier view of
  the whole history, fit once the reservoir holds `min_fit` rows.

Neither detector's raw score is calibrated (Half-Space Trees' mass-based score sits near
0.9 for ordinary rows in five dimensions; the forest's near 0.5), so each is turned into
a rank: the share of reference rows it exceeds (for the trees, a rolling set of recent
rows' scores, `calibration_size` of them; for the forest, the reservoir's scores at the
refit). The score is the mean of the two ranks once both are ready, whichever is ready
before, and 0 before either is (nothing to compare with): 0.99 reads "more unusual than
99% of the accounts seen".

Memory is bounded whatever the stream: the reservoir (`reservoir_size` rows), the trees
(`n_trees` of 2 ** (height + 1) - 1 nodes), the forest (`forest_trees` trees of at most
2 * 256 nodes) and the calibration ring; about 1.7 MB with the defaults. Cost per window:
the reservoir step is vectorised, the trees take about 30 µs per learned row (so
`learn_cap` bounds it), a refit about 0.15 s every `refit_every` windows. Given a seed, the
same rows learned in the same order give the same scores.

Ordinary accounts (irregular gaps, a few kinds, a human pace) against a metronome that
follows round the clock:

    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> people = np.column_stack([
    ...     rng.uniform(0.05, 0.4, 3000),   # rate
    ...     rng.uniform(0.2, 0.5, 3000),    # gap CV
    ...     rng.uniform(0.3, 1.0, 3000),    # breadth
    ...     rng.uniform(0.0, 0.5, 3000),    # time-of-day spread
    ...     rng.uniform(0.4, 1.0, 3000),    # share of the main kind
    ... ])
    >>> scorer = BotScorer(seed=1, learn_cap=1000, refit_every=2, min_fit=500)
    >>> for window in np.split(people, 3):
    ...     scorer.learn_many(window)
    >>> scorer.refits, scorer.reservoir.shape
    (2, (3000, 5))
    >>> bot, person = scorer.score_many(np.array([[0.6, 0.0, 1.0, 0.95, 1.0], people[0]]))
    >>> bool(bot > person + 0.2)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from models.actor_features import N_FEATURES

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest


class BotScorer:
    """Half-Space Trees learning online plus an Isolation Forest refit on a reservoir:
    `learn_many` once per window with the window's feature rows, `score_many` for the
    rows a caller asks about (a finding's members). Rows are features in [0, 1] (values
    outside are clipped)."""

    def __init__(
        self,
        n_features: int = N_FEATURES,
        seed: int = 0,
        learn_cap: int = 1000,
        reservoir_size: int = 5000,
        refit_every: int = 12,
        min_fit: int = 256,
        n_trees: int = 10,
        height: int = 8,
        hst_window: int = 250,
        forest_trees: int = 50,
        calibration_size: int = 2000,
        calibrate_per_window: int = 100,
    ) -> None:
        if min(n_features, learn_cap, reservoir_size, refit_every, min_fit) < 1:
            raise ValueError("sizes and periods must be positive")
        from river.anomaly import HalfSpaceTrees  # (river takes seconds to import)

        self.n_features = n_features
        self.seed = seed
        self.learn_cap = learn_cap
        self.refit_every = refit_every
        self.min_fit = min(min_fit, reservoir_size)
        self.forest_trees = forest_trees
        self._names = [f"f{i}" for i in range(n_features)]
        self._hst = HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=hst_window, seed=seed
        )
        self._hst_learned = 0
        self._hst_window = hst_window
        self._rng = np.random.default_rng(seed)
        self._reservoir = np.zeros((reservoir_size, n_features))
        self.seen = 0  # rows offered to the reservoir so far
        self.windows = 0  # learn_many calls so far
        self.refits = 0
        self._forest: IsolationForest | None = None
        self._fit_rows: np.ndarray | None = None  # what the forest was last fit on
        self._fit_window = 0
        self._forest_reference = np.zeros(0)  # the forest's sorted scores of the reservoir
        self._hst_reference = np.zeros(calibration_size)  # ring of recent rows' tree scores
        self._hst_scored = 0
        self.calibrate_per_window = calibrate_per_window

    @property
    def reservoir(self) -> np.ndarray:
        """The sampled rows held (a view): at most `reservoir_size`, uniform over all seen."""
        return self._reservoir[: min(self.seen, len(self._reservoir))]

    @property
    def ready(self) -> bool:
        """Whether anything scores yet (before, every score is 0)."""
        return self._forest is not None or self._hst_ready

    def learn_many(self, rows: np.ndarray) -> None:
        """Learn one window's rows: all go through the reservoir, a sample of at most
        `learn_cap` into the trees; the forest is (re)fit when it is due."""
        rows = self._check(rows)
        self.windows += 1
        self._sample(rows)
        if len(rows) > self.learn_cap:
            rows = rows[self.sample_indices(len(rows), self.learn_cap)]
        names, learn = self._names, self._hst.learn_one
        for row in rows.tolist():
            learn(dict(zip(names, row, strict=True)))
        self._hst_learned += len(rows)
        if self._hst_learned >= self._hst_window:
            step = max(1, -(-len(rows) // self.calibrate_per_window))
            self._calibrate(rows[::step])  # evenly spread over the sample
        due = self._forest is None or self.windows - self._fit_window >= self.refit_every
        if due and len(self.reservoir) >= self.min_fit:
            self._refit()

    def sample_indices(self, n: int, k: int) -> np.ndarray:
        """`k` distinct positions out of `n`, sorted, from the scorer's seeded generator
        (all of them when k >= n): how a caller samples rows to learn, reproducibly."""
        if k >= n:
            return np.arange(n)
        return np.sort(self._rng.choice(n, k, replace=False))

    def score_many(self, rows: np.ndarray) -> np.ndarray:
        """Bot-likeness of each row in [0, 1]: the mean rank of its unusualness among
        the rows seen (higher: more unusual). Costs about 25 µs per row: score the
        accounts in question, not a whole window."""
        rows = self._check(rows)
        parts = []
        if self._hst_ready and len(rows):
            held = self._hst_reference[: min(self._hst_scored, len(self._hst_reference))]
            parts.append(_rank(np.sort(held), self._hst_scores(rows)))
        if self._forest is not None and len(rows):
            parts.append(_rank(self._forest_reference, -self._forest.score_samples(rows)))
        if not parts:
            return np.zeros(len(rows))
        return np.mean(parts, axis=0)

    def rarity(self, rows: np.ndarray) -> np.ndarray:
        """Per row and feature, how far out the value sits among the reservoir's, in
        [0, 1]: |2F - 1| with F its mid-rank share (0: the median, 1: beyond every row
        seen). Says which features make a row unusual; 0 everywhere while empty."""
        rows = self._check(rows)
        held = self.reservoir
        if not len(held):
            return np.zeros(rows.shape)
        ordered = np.sort(held, axis=0)
        share = np.empty(rows.shape)
        for f in range(self.n_features):
            share[:, f] = _rank(ordered[:, f], rows[:, f])
        return np.abs(2.0 * share - 1.0)

    @property
    def _hst_ready(self) -> bool:
        return self._hst_scored > 0

    def _hst_scores(self, rows: np.ndarray) -> np.ndarray:
        names, score = self._names, self._hst.score_one
        return np.fromiter(
            (score(dict(zip(names, row, strict=True))) for row in rows.tolist()),
            np.float64,
            len(rows),
        )

    def _calibrate(self, rows: np.ndarray) -> None:
        """Add the trees' current scores of a few of this window's rows to the ring."""
        ring = self._hst_reference
        at = (self._hst_scored + np.arange(len(rows))) % len(ring)
        ring[at] = self._hst_scores(rows)
        self._hst_scored += len(rows)

    def _check(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"rows must be an (n, {self.n_features}) array")
        return np.clip(rows, 0.0, 1.0)

    def _sample(self, rows: np.ndarray) -> None:
        """Algorithm R over the rows in order, vectorised: row number i (0-based over the
        stream) fills slot i while the reservoir is not full, then replaces a uniformly
        drawn slot j in [0, i] when j falls inside the reservoir."""
        size, start, m = len(self._reservoir), self.seen, len(rows)
        self.seen += m
        fill = max(0, min(m, size - start))
        if fill:
            self._reservoir[start : start + fill] = rows[:fill]
        if fill == m:
            return
        index = np.arange(start + fill, start + m)  # stream positions past the fill
        slots = self._rng.integers(0, index + 1)
        hit = np.flatnonzero(slots < size)
        if not len(hit):
            return
        # several rows may land on one slot: the last one (in stream order) stays
        order = np.argsort(slots[hit], kind="stable")
        ordered_slots = slots[hit][order]
        last = np.ones(len(order), bool)
        np.not_equal(ordered_slots[1:], ordered_slots[:-1], out=last[:-1])
        keep = hit[order][last]
        self._reservoir[slots[keep]] = rows[fill + keep]

    def _refit(self) -> None:
        self._fit_rows = self.reservoir.copy()
        self._forest = self._fit(self._fit_rows, self.seed + self.refits)
        self._forest_reference = np.sort(-self._forest.score_samples(self._fit_rows))
        self.refits += 1
        self._fit_window = self.windows

    def _fit(self, rows: np.ndarray, seed: int) -> IsolationForest:
        from sklearn.ensemble import IsolationForest  # (as river: only a scorer needs it)

        return IsolationForest(
            n_estimators=self.forest_trees, max_samples=min(256, len(rows)), random_state=seed
        ).fit(rows)

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the fitted forest (most of the bytes): the rows it was fit on
        and its seed rebuild the very same forest when the state is loaded (a key's
        state is one changelog record in the distributed runtime)."""
        state = self.__dict__.copy()
        state["_forest"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._fit_rows is not None:
            self._forest = self._fit(self._fit_rows, self.seed + self.refits - 1)


def _rank(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The mid-rank share of the sorted `reference` each value exceeds, in [0, 1]."""
    below = np.searchsorted(reference, values, side="left")
    upto = np.searchsorted(reference, values, side="right")
    return (below + upto) / (2.0 * max(len(reference), 1))
