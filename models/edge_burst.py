"""Constant-memory detection of sudden bursts in an actor -> target edge stream.

After MIDAS and MIDAS-R (Bhatia et al., "MIDAS: Microcluster-Based Detector of Anomalies
in Edge Streams", AAAI 2020): every event is one edge (source, destination) at an integer
tick t, counted in count-min sketches for edges, for sources and for destinations. An
event's score is the largest of three (edge, source, destination), so a single edge
hammered in one tick and many new sources all following one destination in one tick (a
follower burst) both stand out. The model gives two scores, each from its own sketches:

`score` / `score_many`: the edge stream score, against the all-time level. Each event is
judged on arrival by how far the count of its edge (source, destination) so far in the
current tick stands above that key's mean count over every tick since the first (ticks
without its events count as zeros), as MIDAS-R compares its current count with the total
over the ticks so far. A flood lasting many ticks stays anomalous for as long as it is a
small share of its key's whole history: on the DARPA 1998 stream, where 60% of the rows
are floods lasting hours, this is what a decayed history loses (benchmarks/darpa.py).
Where this departs from MIDAS-R, and why:

- Counts are compared on the Anscombe scale y = 2*sqrt(x + 3/8) (as in `count_baseline`),
  where a Poisson count's variance is about 1 at any level. MIDAS's chi-squared
  (a - s/t)^2 t^2 / (s(t-1)) rates a first-ever edge at about t, so on a long stream
  every new edge looks like a burst; here one event where none were expected is
  z ~ 1.1, while 3,000 in a minute where 5 are usual is z ~ 105.
- The variance is the Poisson one, not learned: a key whose traffic comes in floods has a
  large variance over its history, which would hide its next flood.
- The current count is this tick's, restarted at every tick (MIDAS-R decays it instead,
  which inflates the current count of any steady key by 1/(1 - decay) and so flags busy
  keys); and the score is one-sided: a drop in traffic is not a burst.
- The level never forgets: a key that settles at a higher rate for good keeps scoring
  until its mean over all ticks catches up. That is the point for floods; a caller who
  wants a new normal learned uses the burst score below.

`update` / `update_many`, `learn_*` and `destination_burst`: the burst score, against the
recent history, which is what the follower-burst stage reads. Count-min sketches hold the
count in the current tick and a decayed history of past ticks' counts; each event is
scored by how far its current-tick count stands above its own history:

- History is compared on the Anscombe scale, with a decayed mean and variance per sketch
  bucket and the variance floored at 1, the Poisson noise.
- The learned variance lets a popular, organically noisy destination (a high but steady
  rate that wobbles more than Poisson) stay quiet.
- The score is one-sided, as above.
- History decays by `decay` per tick (MIDAS-R decays the current counts instead).
  Decay is what lets a destination whose rate has settled at a new level become normal.
- A tick that is itself a burst teaches the history at most `clip_z` deviations above its
  mean, so a burst sustained over a few ticks keeps being flagged instead of becoming the
  new normal at once; a lasting level shift is absorbed over a few half-lives.

Memory is `3 * 3 * rows * buckets` float64 numbers for the burst score, and
`2 * 3 * rows * buckets` more for the stream score from its first `score` call, whatever
the number of distinct edges. The first event of each new tick folds the finished tick
into the history, O(rows * buckets); `score_many` does it for a whole batch at once.

    >>> m = EdgeBurst(rows=2, buckets=256, decay=0.9, seed=1)
    >>> quiet = [m.update(f"u{i % 40}", f"v{i % 7}", i // 40) for i in range(400)]
    >>> max(quiet) < 0.5
    True
    >>> burst = [m.update(f"bot{i}", "v3", 10) for i in range(300)]
    >>> burst[-1] > 0.9
    True
    >>> s, b = EdgeBurst(rows=2, buckets=256, seed=1), EdgeBurst(rows=2, buckets=256, seed=1)
    >>> ids = np.arange(2000)  # 50 ticks of steady traffic, then one edge flooded for 20
    >>> steady = (ids % 40, ids % 7, ids // 40)
    >>> float(s.score_many(*steady).max()) < 0.5 and float(b.update_many(*steady).max()) < 0.5
    True
    >>> flood = (np.full(6000, 5), np.full(6000, 6), 50 + np.arange(6000) // 300)
    >>> np.round(s.score_many(*flood).reshape(20, 300).max(axis=1)[::6], 2).tolist()
    [0.99, 0.98, 0.98, 0.97]
    >>> np.round(b.update_many(*flood).reshape(20, 300).max(axis=1)[::6], 2).tolist()
    [0.99, 0.9, 0.53, 0.22]
"""

from __future__ import annotations

import hashlib
import itertools
import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

_Y0 = 2.0 * math.sqrt(0.375)  # Anscombe transform of a zero count
_MASK64 = (1 << 64) - 1
_EDGE_MIX = 0x9E3779B97F4A7C15  # odd: (source, destination) -> one 64-bit edge key
_FAMILIES = ("edge", "source", "destination")
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64's finaliser
_CHUNK = 1 << 17  # sketch cells (events x 3 * rows) `score_many` works on at once

Names = Sequence[str] | Sequence[int] | np.ndarray


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


def _int_offset(seed: int) -> int:
    """The seed's offset for integer ids, from blake2b like the rows' parameters."""
    d = hashlib.blake2b(f"edge_burst:{seed}:int".encode(), digest_size=8).digest()
    return int.from_bytes(d, "little")


def _name_key(base: Any, name: str) -> int:
    """A name's 64-bit key: `base`, a keyed blake2b, copied and fed the name."""
    h = base.copy()
    h.update(name.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "little")


def _int_key(offset: int, x: int) -> int:
    """An integer id's 64-bit key: splitmix64's finaliser of (id + offset) mod 2**64, a
    bijection, so distinct ids (mod 2**64) never share a key."""
    z = (x + offset) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _int_keys(offset: int, ids: np.ndarray) -> np.ndarray:
    """`_int_key` of an array of integer ids (any integer dtype), with numpy."""
    z = ids.astype(np.uint64)  # a negative id wraps to two's complement, as `& _MASK64`
    z += np.uint64(offset)  # numpy's uint64 arithmetic wraps mod 2**64
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    return z


class _Level:
    """The stream score's sketches: this tick's counts and, per bucket, the sum over the
    finished ticks of y(count) - y(0) (0 for a tick without events, so idle ticks cost
    nothing); `past` is the number of finished ticks since the first."""

    __slots__ = ("cur", "past", "tick", "tot")

    def __init__(self, size: int) -> None:
        self.cur = np.zeros(size)
        self.tot = np.zeros(size)
        self.tick: int | None = None
        self.past = 0

    def __getstate__(self) -> tuple[Any, ...]:
        return self.cur, self.tot, self.tick, self.past

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.cur, self.tot, self.tick, self.past = state


class EdgeBurst:
    """Burst scores for each (source, destination, tick) event of an edge stream.

    `t` is an integer tick whose length the caller chooses (e.g. minutes of event time).
    Ticks only move forward, one clock for both scores: an event with a smaller t than the
    current tick is counted in the current tick. Skipped ticks count as ticks with no
    events. Sources and destinations are strings or integers (Python or numpy ints; pass
    numpy integer arrays to the batch methods for speed): a string is hashed with blake2b
    keyed by `seed` (deterministic across processes, unlike Python's `hash()` of a str),
    so with a secret seed an adversary cannot craft names that share buckets with a given
    account; an integer id is mixed with splitmix64 offset by the seed, which is fast and
    keeps distinct ids apart but is no defence against crafted ids, so use it for ids the
    caller assigns. The string "7" and the integer 7 are different keys.

    Stream score: `score(source, destination, t)` counts the event, then returns its
    score in [0, 1]; `score_many` does it for a batch in order, with the same numbers,
    vectorised over whole batches (integer ids: millions of events per second). The raw
    score (`score_raw`, `score_many(..., raw=True)`) is the largest, over edge, source and
    destination, of z^2, z = y(a) - mean, where a is the key's count in the current tick
    so far (this event included), y the Anscombe transform and mean the key's mean of y
    over the ticks before this one since the first (0 if a is at or below it); the
    variance is the Poisson 1, times 1 + 1/ticks for the uncertainty of the mean. Its
    sketches are allocated by the first call. Unlike other models' `score`, these count
    the event: an edge of a stream is judged once, when it arrives, against what came
    before it.

    Burst score: `update(source, destination, t)` counts the event into the burst
    sketches, then returns how anomalous its current-tick counts are against their recent
    history, in [0, 1]. The raw score (`last_raw`, `update_raw`, `update_many(...,
    raw=True)`) is the largest, over edge, source and destination, of z^2, where z is the
    upward deviation of the current-tick count from its history on the Anscombe scale, in
    standard deviations (0 if the count is at or below normal). Under steady Poisson
    traffic it is about chi-squared with one degree of freedom. `decay` is the per-tick
    factor on the history: its half-life is log(0.5) / log(decay) ticks (0.9: 6.6 ticks;
    0.95: 13.5). `clip_z` bounds what a burst tick teaches it.

    The two scores count into separate sketches: `score*` into the stream score's,
    `update*` and `learn_*` into the burst score's, which `destination_burst` reads. A
    caller uses one or the other (calling both is allowed: each score then sees the
    events given to it).

    Both map raw scores as score = 1 - 0.5 ** (sqrt(raw) / z_scale): 0 at or below normal,
    0.5 at z = z_scale, 0.9 at z = 3.32 * z_scale, approaching 1 as the burst grows (the
    same mapping as `CountBaseline`). Scores are 0 until `warmup` ticks of history exist.
    `last_raw` and `last_parts` hold the raw score, and those of (edge, source,
    destination), for the last event either scored, to say which burst.

    Each count-min estimate is the minimum over `rows` hash rows, taken separately for the
    current count and each statistic of the history, as MIDAS does: collisions only
    inflate a bucket, so the smallest is the least contaminated. `buckets` should exceed
    the number of keys active in one tick for per-edge resolution. Instances pickle as
    their arrays plus a few hundred bytes.
    """

    __slots__ = (
        "_adds",
        "_cur",
        "_int_offset",
        "_level",
        "_level_views",
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
        self._int_offset = _int_offset(seed)
        size = 3 * rows * buckets  # flat index: (family * rows + row) * buckets + bucket
        self._cur = np.zeros(size)  # counts in the current tick
        self._sum_y = np.zeros(size)  # decayed sum of past ticks' Anscombe-scale counts
        self._sum_yy = np.zeros(size)  # ... and of their squares
        self._weight = 0.0  # decayed number of past ticks: sum of decay**k
        self._weight_sq = 0.0  # sum of decay**(2k), for the uncertainty of the mean
        self._ticks_seen = 0
        self._tick: int | None = None  # the burst sketches' tick
        self._level: _Level | None = None  # the stream score's sketches, once used
        self.last_raw = 0.0
        self.last_parts = (0.0, 0.0, 0.0)  # raw score of (edge, source, destination)
        self._scratch: tuple[Any, memoryview, memoryview, memoryview] | None = None
        self._level_views: tuple[memoryview, memoryview] | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def tick(self) -> int | None:
        """The current tick (the latest any event was counted in), or None before the
        first event."""
        level = self._level.tick if self._level is not None else None
        if level is None or self._tick is None:
            return self._tick if level is None else level
        return max(self._tick, level)

    @property
    def nbytes(self) -> int:
        """Bytes held by the sketches: fixed at construction, and by the first `score`."""
        n = self._cur.nbytes + self._sum_y.nbytes + self._sum_yy.nbytes
        if self._level is not None:
            n += self._level.cur.nbytes + self._level.tot.nbytes
        return n

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if k not in _UNPICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {"_int_offset": _int_offset(state["seed"]), "_level": None, **state}
        for k, v in state.items():
            setattr(self, k, v)
        self._scratch = None
        self._level_views = None

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
        """Move the burst sketches to tick `t` (or the model's tick, if later)."""
        level = self._level
        if level is not None and level.tick is not None and t < level.tick:
            t = level.tick
        if self._tick is None:
            self._tick = t
        elif t > self._tick:
            self._advance(t)

    def _scale(self) -> tuple[float, float]:
        """(1 / history weight, variance inflation for the uncertainty of the mean)."""
        w = self._weight
        return 1.0 / w, 1.0 + self._weight_sq / (w * w)

    def _level_enter(self, t: int) -> _Level:
        """Move the stream score's sketches to tick `t` (or the model's tick, if later),
        allocating them on first use: the finished tick's counts join the totals."""
        level = self._level
        if level is None:
            level = self._level = _Level(self._cur.size)
        if self._tick is not None and t < self._tick:
            t = self._tick
        if level.tick is None:
            level.tick = t
        elif t > level.tick:
            y = np.sqrt(level.cur + 0.375)
            y *= 2.0
            y -= _Y0  # exactly 0 for a bucket without events
            level.tot += y
            level.cur.fill(0.0)
            level.past += t - level.tick
            level.tick = t
        return level

    # -- scoring -------------------------------------------------------------------------

    def unit(self, raw: float) -> float:
        """Map a raw score (z^2) to [0, 1]: 1 - 0.5 ** (z / z_scale)."""
        return 1.0 - 0.5 ** (math.sqrt(raw) / self.z_scale)

    def score(self, source: str | int, destination: str | int, t: int) -> float:
        """Count one event, then return its stream score in [0, 1] (against the all-time
        level of its edge, source and destination)."""
        return self.unit(self.score_raw(source, destination, t))

    def score_raw(self, source: str | int, destination: str | int, t: int) -> float:
        """Count one event, then return its raw stream score: max over edge, source and
        destination of the squared upward deviation z^2 (0 while warming up)."""
        t = int(t)
        level = self._level
        if level is None or t != level.tick or (self._tick is not None and self._tick > t):
            level = self._level_enter(t)
        views = self._level_views
        if views is None:
            views = self._level_views = (memoryview(level.cur), memoryview(level.tot))
        cur, tot = views
        offset = self._int_offset
        hs = _int_key(offset, source) if type(source) is int else self._key(source)
        hd = _int_key(offset, destination) if type(destination) is int else self._key(destination)
        past = level.past
        scoring = past >= self.warmup and past > 0
        inflate = 1.0 + 1.0 / past if scoring else 1.0
        rows, buckets, mults, adds = self.rows, self.buckets, self._mults, self._adds
        parts = [0.0, 0.0, 0.0]
        i = 0  # the sketch row, over the families' rows in turn: as in `_cells`
        for f, key in enumerate(((hs * _EDGE_MIX + hd) & _MASK64, hs, hd)):
            a = s = math.inf
            for _ in range(rows):
                j = i * buckets + (((((mults[i] * key + adds[i]) & _MASK64) >> 32) * buckets) >> 32)
                i += 1
                c = cur[j] + 1.0
                cur[j] = c
                if c < a:
                    a = c
                x = tot[j]
                if x < s:
                    s = x
            if scoring:
                d = 2.0 * math.sqrt(a + 0.375) - (_Y0 + s / past)
                if d > 0.0:
                    parts[f] = d * d / inflate
        self.last_parts = (parts[0], parts[1], parts[2])
        self.last_raw = max(parts)
        return self.last_raw

    def score_many(
        self,
        sources: Names,
        destinations: Names,
        ts: Sequence[int] | np.ndarray,
        *,
        raw: bool = False,
    ) -> np.ndarray:
        """Count and score a batch of events in order: the same numbers as calling `score`
        (or `score_raw` if raw=True) on each event in turn, computed with numpy over
        chunks of many ticks at once. Integer ids in numpy arrays skip Python hashing."""
        n = len(sources)
        if len(destinations) != n or len(ts) != n:
            raise ValueError("sources, destinations and ts must have the same length")
        out = np.zeros(n)
        if n == 0:
            return out
        hs, hd = self._hash_many(sources), self._hash_many(destinations)
        ticks = np.asarray(ts, dtype=np.int64)
        clock = self.tick
        if clock is not None:
            ticks = np.maximum(ticks, clock)
        ticks = np.maximum.accumulate(ticks)
        step = max(1, _CHUNK // (3 * self.rows))
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            edge = hs[lo:hi] * np.uint64(_EDGE_MIX) + hd[lo:hi]  # wraps mod 2**64
            keys = np.stack([edge, hs[lo:hi], hd[lo:hi]])
            out[lo:hi] = self._level_chunk(keys, ticks[lo:hi])
        if not raw:
            out = 1.0 - 0.5 ** (np.sqrt(out) / self.z_scale)
        return out

    def _level_chunk(self, keys: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        """Raw stream scores of a chunk of events (keys: families x m; ticks: m, not
        decreasing, none before the model's tick), updating the sketches as `score_raw`
        would one event at a time.

        Each sketch row's events are sorted by bucket (stably: within a bucket, in arrival
        order, so also by tick) and cut into groups of one bucket and one tick. An event's
        running count is its rank in its group (plus what the bucket held in the open
        tick); a bucket's total before a group is its total before the chunk plus the
        groups before it in the bucket (an exclusive cumulative sum)."""
        rows, buckets, m = self.rows, self.buckets, keys.shape[1]
        level = self._level_enter(int(ticks[0]))
        t0, past0, cur, tot = level.tick, level.past, level.cur, level.tot
        assert t0 is not None
        k = 3 * rows
        # numpy sorts 16-bit integers by radix: ~10x faster
        local = self._buckets_many(keys, range(3), np.uint16 if buckets <= 1 << 16 else None)
        order = np.argsort(local, axis=1, kind="stable")
        cell_type = np.int32 if k * buckets < 1 << 31 else np.int64
        offsets = np.arange(0, k * buckets, buckets, dtype=cell_type).reshape(-1, 1)
        cells = np.take_along_axis(local, order, axis=1).astype(cell_type)
        cells += offsets
        cells = cells.ravel()
        size = cells.size
        dense = np.empty(m, dtype=np.int32)  # each event's tick, as an index of the chunk's
        dense[0] = 0
        np.not_equal(ticks[1:], ticks[:-1], out=dense[1:])
        np.cumsum(dense, out=dense)
        distinct = ticks[np.flatnonzero(np.diff(dense, prepend=-1))]
        tick_of = dense[order].ravel()
        first = np.empty(size, dtype=bool)  # a new (bucket, tick) group starts here
        first[0] = True
        np.not_equal(cells[1:], cells[:-1], out=first[1:])
        first[1:] |= tick_of[1:] != tick_of[:-1]
        starts = np.flatnonzero(first)
        sizes = np.diff(starts, append=size)
        g_cell = cells[starts]
        g_tick = distinct[tick_of[starts]]
        at_open = g_tick == t0  # groups in the tick open before this chunk
        carry = np.where(at_open, cur[g_cell], 0.0)
        g_count = sizes + carry
        running = np.arange(size, dtype=np.float64)
        running -= np.repeat(starts - 1.0 - carry, sizes)
        g_y = np.sqrt(g_count + 0.375)
        g_y *= 2.0
        g_y -= _Y0
        cell_first = np.empty(starts.size, dtype=bool)
        cell_first[0] = True
        np.not_equal(g_cell[1:], g_cell[:-1], out=cell_first[1:])
        before = np.cumsum(g_y)
        before -= g_y
        before -= before[np.maximum.accumulate(np.where(cell_first, np.arange(starts.size), 0))]
        # a bucket counted in the open tick but not in this chunk's part of it: that tick
        # is finished before any of the bucket's events here
        unseen = cur > 0.0
        unseen[g_cell[at_open]] = False
        folded = np.where(unseen, 2.0 * np.sqrt(cur + 0.375) - _Y0, 0.0)
        g_tot = tot[g_cell] + folded[g_cell] + before
        back = order.astype(np.int64 if size >= 1 << 31 else np.int32)  # sorted -> arrival
        back += np.arange(0, size, m, dtype=back.dtype).reshape(-1, 1)
        back = back.ravel()
        counts = np.empty(size)
        counts[back] = running
        totals = np.empty(size)
        totals[back] = np.repeat(g_tot, sizes)
        a = counts.reshape(3, rows, m).min(axis=1)
        s = totals.reshape(3, rows, m).min(axis=1)
        past = (past0 + (ticks - t0)).astype(np.float64)
        scoring = (past >= self.warmup) & (past > 0.0)
        past[~scoring] = 1.0  # not used: keeps the arithmetic finite
        d = 2.0 * np.sqrt(a + 0.375) - (_Y0 + s / past)
        np.maximum(d, 0.0, out=d)
        parts = d * d / (1.0 + 1.0 / past)
        parts[:, ~scoring] = 0.0
        # the sketches after the chunk: each bucket's last group is its open tick if it is
        # the chunk's last tick, and otherwise joins the total like the groups before it
        t_end = int(ticks[-1])
        last = np.empty(starts.size, dtype=bool)
        last[-1] = True
        last[:-1] = cell_first[1:]
        last = np.flatnonzero(last)
        open_end = g_tick[last] == t_end
        if t_end > t0:
            tot += folded
            tot[g_cell[last]] = g_tot[last] + np.where(open_end, 0.0, g_y[last])
            cur.fill(0.0)
            level.past += t_end - t0
            level.tick = t_end
        cur[g_cell[last[open_end]]] = g_count[last[open_end]]
        self.last_parts = (float(parts[0, -1]), float(parts[1, -1]), float(parts[2, -1]))
        self.last_raw = max(self.last_parts)
        return parts.max(axis=0)

    def update(self, source: str | int, destination: str | int, t: int) -> float:
        """Count one event, then return its burst score in [0, 1]."""
        return self.unit(self.update_raw(source, destination, t))

    def update_raw(self, source: str | int, destination: str | int, t: int) -> float:
        """Count one event, then return its raw burst score: max over edge, source,
        destination of the squared upward deviation z^2 (0 while warming up)."""
        self._enter(int(t))
        _, cur, sy, syy = self._tools()
        hs, hd = self._key(source), self._key(destination)
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
        sources: Names,
        destinations: Names,
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
        clock = self.tick
        if clock is not None:
            ticks = np.maximum(ticks, clock)
        ticks = np.maximum.accumulate(ticks)
        cuts = [0, *(np.flatnonzero(ticks[1:] != ticks[:-1]) + 1).tolist(), n]
        for lo, hi in itertools.pairwise(cuts):
            self._enter(int(ticks[lo]))
            out[lo:hi] = self._score_segment(flat[:, lo:hi], local[:, lo:hi])
        if not raw:
            out = 1.0 - 0.5 ** (np.sqrt(out) / self.z_scale)
        return out

    def learn_many(self, sources: Names, destinations: Names, t: int) -> None:
        """Count a batch of events of tick `t` (an earlier tick counts as the current one)
        without scoring them: the sketches end as `update_many` would leave them, for a
        fraction of its cost. For callers that read scores per tick afterwards
        (`destination_burst`), where the order of a tick's events does not matter."""
        if len(destinations) != len(sources):
            raise ValueError("sources and destinations must have the same length")
        self._enter(int(t))
        if len(sources):
            self._count(self._keys_many(sources, destinations), range(len(_FAMILIES)))

    def learn_destinations(self, destinations: Names, t: int) -> None:
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

    def destination_burst(self, destination: str | int) -> tuple[float, float, float]:
        """(count this tick, count its history expects, raw score) of one destination,
        read from the burst sketches as they stand, without counting anything.

        Read once a tick's events are all counted, this depends only on what the tick
        holds, not on the order its events came in (counts are sums), and it judges the
        destination alone: a source that follows many accounts in the tick raises its own
        score, not the destinations'. The raw score is the destination's z^2, as in
        `last_parts` (0 while warming up or at or below normal); the expected count is its
        history's mean mapped back from the Anscombe scale (0 before any history). Both are
        count-min estimates: collisions only inflate them.
        """
        level = self._level
        if level is not None and level.tick is not None and self._tick is not None:
            self._enter(level.tick)  # the stream score moved the clock on: catch up
        _, cur, sy, syy = self._tools()
        key = self._key(destination)
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

    def _key(self, name: str | int) -> int:
        """A source's or destination's 64-bit key: blake2b of a string, splitmix64 of an
        integer (a Python or numpy int)."""
        if isinstance(name, str):
            return _name_key(self._tools()[0], name)
        return _int_key(self._int_offset, operator.index(name))

    def _cells(self, family: int, key: int) -> list[int]:
        """The flat sketch index of `key`'s bucket in each row of `family` (multiply-shift:
        the top 32 bits of the row's hash, scaled to `buckets`)."""
        rows, buckets, mults, adds = self.rows, self.buckets, self._mults, self._adds
        return [
            i * buckets + (((((mults[i] * key + adds[i]) & _MASK64) >> 32) * buckets) >> 32)
            for i in range(family * rows, family * rows + rows)
        ]

    def _hash_many(self, names: Names) -> np.ndarray:
        """`_key` of each name: of integer ids at once, with numpy; otherwise each distinct
        name hashed once."""
        if not isinstance(names, np.ndarray) and len(names) and type(names[0]) is int:
            ids = np.asarray(names)  # a list of Python ints (if they all fit in 64 bits)
            if ids.dtype.kind in "iu":
                names = ids
        if isinstance(names, np.ndarray) and names.dtype.kind in "iu":
            return _int_keys(self._int_offset, names)
        table = {name: self._key(name) for name in dict.fromkeys(names)}
        return np.fromiter(map(table.__getitem__, names), dtype=np.uint64, count=len(names))

    def _keys_many(self, sources: Names, destinations: Names) -> np.ndarray:
        """The keys of a batch's events, one row per family: edge, source, destination."""
        hs, hd = self._hash_many(sources), self._hash_many(destinations)
        return np.stack([hs * np.uint64(_EDGE_MIX) + hd, hs, hd])  # wraps mod 2**64

    def _buckets_many(
        self, keys: np.ndarray, families: range, dtype: type | None = None
    ) -> np.ndarray:
        """`_cells` for a batch, as buckets within their rows: of each key (shape:
        families x events), in every row of its family (shape: family rows x events),
        as uint64 or `dtype`."""
        rows = self.rows
        span = slice(families.start * rows, families.stop * rows)
        mults = np.array(self._mults[span], dtype=np.uint64).reshape(len(families), rows, 1)
        adds = np.array(self._adds[span], dtype=np.uint64).reshape(len(families), rows, 1)
        hashed = mults * keys[:, None, :]  # wraps mod 2**64
        hashed += adds
        hashed >>= np.uint64(32)
        hashed *= np.uint64(self.buckets)
        hashed >>= np.uint64(32)
        hashed = hashed.reshape(len(families) * rows, -1)
        return hashed if dtype is None else hashed.astype(dtype)

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


_UNPICKLED = frozenset({"_scratch", "_level_views", "_int_offset"})
