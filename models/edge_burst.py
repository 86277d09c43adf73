"""Constant-memory detection of sudden bursts in an actor -> target edge stream.

In the spirit of MIDAS-R (Bhatia et al., "MIDAS: Microcluster-Based Detector of Anomalies
in Edge Streams", AAAI 2020): every event is one edge (source, destination) at an integer
tick t. Count-min sketches hold, for edges, for sources and for destinations, the count in
the current tick and a decayed history of past ticks' counts. Each event is scored by how
far its current-tick count stands above its own history; the score is the largest of the
three (edge, source, destination), so a single edge hammered in one tick and many new
sources all following one destination in one tick (a follower burst) both stand out.

Where this departs from MIDAS-R, and why:

- History is compared on the Anscombe scale y = 2*sqrt(x + 3/8) (as in `count_baseline`),
  with a decayed mean and variance per sketch bucket and the variance floored at 1, the
  Poisson noise. MIDAS's (a - s/t)^2 t^2 / (s(t-1)) rates a first-ever edge at about t, so
  on a long stream every new edge looks like a burst; on the stabilised scale one event
  where none were expected is z ~ 1.1, while 300 where 5 were expected is z ~ 30.
- The learned variance lets a popular, organically noisy destination (a high but steady
  rate that wobbles more than Poisson) stay quiet.
- The score is one-sided: a drop in traffic is not a burst.
- History decays by `decay` per tick (MIDAS-R decays the current counts instead, which
  inflates the "current" count of any steady key by 1/(1-decay) and so flags busy keys).
  Decay is what lets a destination whose rate has settled at a new level become normal.
- A tick that is itself a burst teaches the history at most `clip_z` deviations above its
  mean, so a burst sustained over a few ticks keeps being flagged instead of becoming the
  new normal at once; a lasting level shift is absorbed over a few half-lives.

Memory is `3 * 3 * rows * buckets` float64 numbers whatever the number of distinct edges;
the first event of each new tick folds the finished tick into the history, O(rows * buckets).

    >>> m = EdgeBurst(rows=2, buckets=256, decay=0.9, seed=1)
    >>> quiet = [m.update(f"u{i % 40}", f"v{i % 7}", i // 40) for i in range(400)]
    >>> max(quiet) < 0.5
    True
    >>> burst = [m.update(f"bot{i}", "v3", 10) for i in range(300)]
    >>> burst[-1] > 0.9
    True
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

_Y0 = 2.0 * math.sqrt(0.375)  # Anscombe transform of a zero count
_MASK64 = (1 << 64) - 1
_EDGE_MIX = 0x9E3779B97F4A7C15  # odd: (source, destination) -> one 64-bit edge key
_FAMILIES = ("edge", "source", "destination")


def _rows_params(seed: int, rows: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Multipliers (odd) and offsets for multiply-shift hashing, one per (family, row).

    Derived from blake2b of the seed, not from a random generator, so they are the same in
    every process, platform and library version.
    """
    mults, adds = [], []
    for f in range(len(_FAMILIES)):
        for r in range(rows):
            d = hashlib.blake2b(f"edge_burst:{seed}:{f}:{r}".encode(), digest_size=16).digest()
            mults.append(int.from_bytes(d[:8], "little") | 1)
            adds.append(int.from_bytes(d[8:], "little"))
    return tuple(mults), tuple(adds)


def _name_key(base: Any, name: str) -> int:
    """A name's 64-bit key: `base`, a keyed blake2b, copied and fed the name."""
    h = base.copy()
    h.update(name.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "little")


class EdgeBurst:
    """Burst score for each (source, destination, tick) event of an edge stream.

    `update(source, destination, t)` counts the event, then returns how anomalous its
    current-tick counts are, in [0, 1]. `t` is an integer tick whose length the caller
    chooses (e.g. minutes of event time). Ticks only move forward: an event with a smaller
    t than the current tick is counted in the current tick. Skipped ticks count as ticks
    with no events.

    The raw score (`last_raw`, `update_raw`, `update_many(..., raw=True)`) is the largest,
    over edge, source and destination, of z^2, where z is the upward deviation of the
    current-tick count from its history on the Anscombe scale, in standard deviations
    (0 if the count is at or below normal). Under steady Poisson traffic it is about
    chi-squared with one degree of freedom. The score maps it as
    score = 1 - 0.5 ** (sqrt(raw) / z_scale): 0 at or below normal, 0.5 at z = z_scale,
    0.9 at z = 3.32 * z_scale, approaching 1 as the burst grows (the same mapping as
    `CountBaseline`). Scores are 0 until `warmup` ticks of history exist. `last_parts` holds
    the raw scores of (edge, source, destination) for the last event, to say which burst.

    `decay` is the per-tick factor on the history: its half-life is log(0.5) / log(decay)
    ticks (0.9: 6.6 ticks; 0.95: 13.5). `clip_z` bounds what a burst tick teaches it.

    Each count-min estimate is the minimum over `rows` hash rows, taken separately for the
    current count, the historical mean and the variance, as MIDAS does: collisions only
    inflate a bucket, so the smallest is the least contaminated. `buckets` should exceed the
    number of keys active in one tick for per-edge resolution. Keys are hashed with blake2b
    keyed by `seed` (deterministic across processes; Python's `hash()` of a str is not), so
    with a secret seed an adversary cannot craft names that share buckets with a given
    account. Instances pickle as their three arrays plus a few hundred bytes.
    """

    __slots__ = (
        "_adds",
        "_cur",
        "_mults",
        "_scratch",
        "_sum_y",
        "_sum_yy",
        "_tick",
        "_ticks_seen",
        "_weight",
        "_weight_sq",
        "buckets",
        "clip_z",
        "decay",
        "last_parts",
        "last_raw",
        "rows",
        "seed",
        "warmup",
        "z_scale",
    )

    def __init__(
        self,
        rows: int = 4,
        buckets: int = 1024,
        decay: float = 0.95,
        seed: int = 0,
        *,
        z_scale: float = 5.0,
        clip_z: float = 3.0,
        warmup: int = 3,
    ) -> None:
        if rows < 1 or not 1 <= buckets < 2**31 // (3 * rows):
            raise ValueError("rows must be >= 1 and buckets in [1, 2**31 / (3 * rows))")
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        if z_scale <= 0.0 or clip_z <= 0.0 or warmup < 0:
            raise ValueError("z_scale and clip_z must be > 0 and warmup >= 0")
        self.rows, self.buckets, self.decay, self.seed = rows, buckets, decay, seed
        self.z_scale, self.clip_z, self.warmup = z_scale, clip_z, warmup
        self._mults, self._adds = _rows_params(seed, rows)
        size = 3 * rows * buckets  # flat index: (family * rows + row) * buckets + bucket
        self._cur = np.zeros(size)  # counts in the current tick
        self._sum_y = np.zeros(size)  # decayed sum of past ticks' Anscombe-scale counts
        self._sum_yy = np.zeros(size)  # ... and of their squares
        self._weight = 0.0  # decayed number of past ticks: sum of decay**k
        self._weight_sq = 0.0  # sum of decay**(2k), for the uncertainty of the mean
        self._ticks_seen = 0
        self._tick: int | None = None
        self.last_raw = 0.0
        self.last_parts = (0.0, 0.0, 0.0)  # raw score of (edge, source, destination)
        self._scratch: tuple[Any, memoryview, memoryview, memoryview] | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def tick(self) -> int | None:
        """The current tick, or None before the first event."""
        return self._tick

    @property
    def nbytes(self) -> int:
        """Bytes held by the sketches; fixed at construction."""
        return self._cur.nbytes + self._sum_y.nbytes + self._sum_yy.nbytes

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if k != "_scratch"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._scratch = None

    def _tools(self) -> tuple[Any, memoryview, memoryview, memoryview]:
        """A keyed blake2b to copy per key, and memoryviews of the sketches, which read and
        write single floats several times faster than numpy indexing. Rebuilt after
        unpickling (neither can be pickled)."""
        if self._scratch is None:
            key = hashlib.blake2b(f"edge_burst:{self.seed}".encode(), digest_size=16).digest()
            self._scratch = (
                hashlib.blake2b(digest_size=8, key=key),
                memoryview(self._cur),
                memoryview(self._sum_y),
                memoryview(self._sum_yy),
            )
        return self._scratch

    # -- ticks ---------------------------------------------------------------------------

    def _advance(self, t: int) -> None:
        """Fold the current tick into the history, then any skipped (empty) ticks."""
        assert self._tick is not None
        g = self.decay
        cur, sy, syy = self._cur, self._sum_y, self._sum_yy
        y = np.sqrt(cur + 0.375)
        y *= 2.0
        if self._weight > 0.0:  # teach at most clip_z deviations above the mean
            inv_w = 1.0 / self._weight
            mean = sy * inv_w
            var = syy * inv_w - mean * mean
            np.maximum(var, 1.0, out=var)
            np.sqrt(var, out=var)
            var *= self.clip_z
            var += mean
            np.minimum(y, var, out=y)
        sy *= g
        sy += y
        y *= y
        syy *= g
        syy += y
        self._weight = g * self._weight + 1.0
        self._weight_sq = g * g * self._weight_sq + 1.0
        empty = t - self._tick - 1
        if empty > 0:  # closed form of `empty` ticks of zero counts; zeros are never clipped
            gk = g**empty
            fill = (1.0 - gk) / (1.0 - g)
            sy *= gk
            sy += _Y0 * fill
            syy *= gk
            syy += _Y0 * _Y0 * fill
            self._weight = gk * self._weight + fill
            self._weight_sq = gk * gk * self._weight_sq + (1.0 - gk * gk) / (1.0 - g * g)
        self._ticks_seen += empty + 1
        cur.fill(0.0)
        self._tick = t

    def _enter(self, t: int) -> None:
        if self._tick is None:
            self._tick = t
        elif t > self._tick:
            self._advance(t)

    def _scale(self) -> tuple[float, float]:
        """(1 / history weight, variance inflation for the uncertainty of the mean)."""
        w = self._weight
        return 1.0 / w, 1.0 + self._weight_sq / (w * w)

    # -- scoring -------------------------------------------------------------------------

    def unit(self, raw: float) -> float:
        """Map a raw score (z^2) to [0, 1]: 1 - 0.5 ** (z / z_scale)."""
        return 1.0 - 0.5 ** (math.sqrt(raw) / self.z_scale)

    def update(self, source: str, destination: str, t: int) -> float:
        """Count one event, then return its burst score in [0, 1]."""
        return self.unit(self.update_raw(source, destination, t))

    def update_raw(self, source: str, destination: str, t: int) -> float:
        """Count one event, then return its raw score: max over edge, source, destination
        of the squared upward deviation z^2 (0 while warming up)."""
        self._enter(int(t))
        base, cur, sy, syy = self._tools()
        hs, hd = _name_key(base, source), _name_key(base, destination)
        keys = ((hs * _EDGE_MIX + hd) & _MASK64, hs, hd)  # edge, source, destination
        scoring = self._ticks_seen >= self.warmup and self._weight > 0.0
        inv_w, inflate = self._scale() if scoring else (0.0, 1.0)
        parts = [0.0, 0.0, 0.0]
        for f in range(3):
            a = m = v = math.inf
            for j in self._cells(f, keys[f]):
                c = cur[j] + 1.0
                cur[j] = c
                if c < a:
                    a = c
                if scoring:
                    mean = sy[j] * inv_w
                    if mean < m:
                        m = mean
                    var = syy[j] * inv_w - mean * mean
                    if var < v:
                        v = var
            if scoring:
                d = 2.0 * math.sqrt(a + 0.375) - m
                if d > 0.0:
                    parts[f] = d * d / ((v if v > 1.0 else 1.0) * inflate)
        self.last_parts = (parts[0], parts[1], parts[2])
        self.last_raw = max(parts)
        return self.last_raw

    def update_many(
        self,
        sources: Sequence[str],
        destinations: Sequence[str],
        ts: Sequence[int] | np.ndarray,
        *,
        raw: bool = False,
    ) -> np.ndarray:
        """Count and score a batch of events in order; the same numbers as calling `update`
        (or `update_raw` if raw=True) on each event in turn, computed with numpy."""
        n = len(sources)
        if len(destinations) != n or len(ts) != n:
            raise ValueError("sources, destinations and ts must have the same length")
        out = np.zeros(n)
        if n == 0:
            return out
        families = range(len(_FAMILIES))
        local = self._buckets_many(self._keys_many(sources, destinations), families)
        flat = self._flat(local, families)
        if self.buckets <= 1 << 16:  # numpy sorts 16-bit integers by radix: ~10x faster
            local = local.astype(np.uint16)
        ticks = np.asarray(ts, dtype=np.int64)
        if self._tick is not None:
            ticks = np.maximum(ticks, self._tick)
        ticks = np.maximum.accumulate(ticks)
        cuts = [0, *(np.flatnonzero(ticks[1:] != ticks[:-1]) + 1).tolist(), n]
        for lo, hi in itertools.pairwise(cuts):
            self._enter(int(ticks[lo]))
            out[lo:hi] = self._score_segment(flat[:, lo:hi], local[:, lo:hi])
        if not raw:
            out = 1.0 - 0.5 ** (np.sqrt(out) / self.z_scale)
        return out

    def learn_many(self, sources: Sequence[str], destinations: Sequence[str], t: int) -> None:
        """Count a batch of events of tick `t` (an earlier tick counts as the current one)
        without scoring them: the sketches end as `update_many` would leave them, for a
        fraction of its cost. For callers that read scores per tick afterwards
        (`destination_burst`), where the order of a tick's events does not matter."""
        if len(destinations) != len(sources):
            raise ValueError("sources and destinations must have the same length")
        self._enter(int(t))
        if len(sources):
            self._count(self._keys_many(sources, destinations), range(len(_FAMILIES)))

    def learn_destinations(self, destinations: Sequence[str], t: int) -> None:
        """`learn_many` for a caller that only reads `destination_burst`: only the
        destination sketch counts (the edge and source sketches keep what they had), so
        the sources need not even be hashed."""
        self._enter(int(t))
        if len(destinations):
            family = _FAMILIES.index("destination")
            self._count(self._hash_many(destinations)[None, :], range(family, family + 1))

    def _count(self, keys: np.ndarray, families: range) -> None:
        """Add one to the current tick's bucket of each key (shape: families x events) in
        every row of its family."""
        flat = self._flat(self._buckets_many(keys, families), families)
        self._cur += np.bincount(flat.ravel(), minlength=self._cur.size)

    def destination_burst(self, destination: str) -> tuple[float, float, float]:
        """(count this tick, count its history expects, raw score) of one destination,
        read from the sketches as they stand, without counting anything.

        Read once a tick's events are all counted, this depends only on what the tick
        holds, not on the order its events came in (counts are sums), and it judges the
        destination alone: a source that follows many accounts in the tick raises its own
        score, not the destinations'. The raw score is the destination's z^2, as in
        `last_parts` (0 while warming up or at or below normal); the expected count is its
        history's mean mapped back from the Anscombe scale (0 before any history). Both are
        count-min estimates: collisions only inflate them.
        """
        base, cur, sy, syy = self._tools()
        key = _name_key(base, destination)
        a = m = v = math.inf
        weighted = self._weight > 0.0
        inv_w, inflate = self._scale() if weighted else (0.0, 1.0)
        for j in self._cells(_FAMILIES.index("destination"), key):
            a = min(a, cur[j])
            mean = sy[j] * inv_w
            m = min(m, mean)
            v = min(v, syy[j] * inv_w - mean * mean)
        if not weighted:
            return a, 0.0, 0.0
        expected = max(0.25 * m * m - 0.375, 0.0)
        raw = 0.0
        d = 2.0 * math.sqrt(a + 0.375) - m
        if d > 0.0 and self._ticks_seen >= self.warmup:
            raw = d * d / (max(v, 1.0) * inflate)
        return a, expected, raw

    # -- hashing: the same keys and buckets per event and per batch ----------------------

    def _cells(self, family: int, key: int) -> list[int]:
        """The flat sketch index of `key`'s bucket in each row of `family` (multiply-shift:
        the top 32 bits of the row's hash, scaled to `buckets`)."""
        rows, buckets, mults, adds = self.rows, self.buckets, self._mults, self._adds
        return [
            i * buckets + (((((mults[i] * key + adds[i]) & _MASK64) >> 32) * buckets) >> 32)
            for i in range(family * rows, family * rows + rows)
        ]

    def _hash_many(self, names: Sequence[str]) -> np.ndarray:
        """`_name_key` of each name, each distinct name hashed once."""
        base = self._tools()[0]
        table = {name: _name_key(base, name) for name in dict.fromkeys(names)}
        return np.fromiter(map(table.__getitem__, names), dtype=np.uint64, count=len(names))

    def _keys_many(self, sources: Sequence[str], destinations: Sequence[str]) -> np.ndarray:
        """The keys of a batch's events, one row per family: edge, source, destination."""
        hs, hd = self._hash_many(sources), self._hash_many(destinations)
        return np.stack([hs * np.uint64(_EDGE_MIX) + hd, hs, hd])  # wraps mod 2**64

    def _buckets_many(self, keys: np.ndarray, families: range) -> np.ndarray:
        """`_cells` for a batch, as buckets within their rows: of each key (shape:
        families x events), in every row of its family (shape: family rows x events)."""
        rows = self.rows
        span = slice(families.start * rows, families.stop * rows)
        mults = np.array(self._mults[span], dtype=np.uint64).reshape(len(families), rows, 1)
        adds = np.array(self._adds[span], dtype=np.uint64).reshape(len(families), rows, 1)
        hashed = (mults * keys[:, None, :] + adds) >> np.uint64(32)  # wraps mod 2**64
        hashed *= np.uint64(self.buckets)
        hashed >>= np.uint64(32)
        return hashed.reshape(len(families) * rows, -1)

    def _flat(self, buckets: np.ndarray, families: range) -> np.ndarray:
        """`_buckets_many`'s buckets as flat sketch indexes."""
        first_row = families.start * self.rows
        rows = np.arange(first_row, first_row + len(buckets), dtype=np.int64)
        return buckets.astype(np.int64) + rows.reshape(-1, 1) * self.buckets

    def _score_segment(self, flat: np.ndarray, local: np.ndarray) -> np.ndarray:
        """Raw scores of consecutive events within one tick. `flat` holds each event's flat
        sketch index per (family, row), shape (3 * rows, m); `local` the bucket in its row."""
        k, m = flat.shape
        # An event's running count in a bucket is the count before this batch, plus the
        # earlier events of this tick in that bucket (its rank among them), plus itself.
        order = np.argsort(local, axis=1, kind="stable")
        ordered = np.take_along_axis(flat, order, axis=1)
        first = np.ones((k, m), dtype=bool)
        np.not_equal(ordered[:, 1:], ordered[:, :-1], out=first[:, 1:])
        pos = np.broadcast_to(np.arange(m), (k, m))
        running = self._cur[ordered] + (pos - np.maximum.accumulate(np.where(first, pos, 0), 1))
        running += 1.0
        last = np.ones((k, m), dtype=bool)
        last[:, :-1] = first[:, 1:]
        self._cur[ordered[last]] = running[last]
        counts = np.empty((k, m))
        np.put_along_axis(counts, order, running, axis=1)
        a = counts.reshape(3, self.rows, m).min(axis=1)
        parts = np.zeros((3, m))
        if self._ticks_seen >= self.warmup and self._weight > 0.0:
            idx = flat.reshape(3, self.rows, m)
            inv_w, inflate = self._scale()
            mean_r = self._sum_y[idx] * inv_w
            var = (self._sum_yy[idx] * inv_w - mean_r * mean_r).min(axis=1)
            d = 2.0 * np.sqrt(a + 0.375) - mean_r.min(axis=1)
            np.maximum(d, 0.0, out=d)
            parts = d * d / (np.maximum(var, 1.0) * inflate)
        self.last_parts = (float(parts[0, -1]), float(parts[1, -1]), float(parts[2, -1]))
        self.last_raw = max(self.last_parts)
        return parts.max(axis=0)
