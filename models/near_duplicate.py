"""Near-duplicate texts: normalisation, MinHash signatures, LSH clusters, and how common a
text already is on the platform.

Copy-paste spam is one message posted again and again with small edits (punctuation,
full-width letters, emoji, a digit or two, a swapped pair of characters) so that exact
matching misses it. `normalise` undoes those edits; what is left is compared on character
3-shingles (Chinese has no spaces between words, so words cannot be the unit). MinHash
estimates the Jaccard similarity of two shingle sets from their signatures, and LSH bands
put texts with similar signatures in a shared bucket: each text meets only the texts of
its buckets, never all the others.

A text shared by many accounts is not enough. "+1" or "哈哈哈" carry too little to be a
copy (`information`), and a template the whole platform types all day ("my mom would love
this") is ordinary however many people type it: `Commonness` remembers each bucket's
recent share of the platform's texts, so only a message that is suddenly far more common
than it used to be stands out.

    >>> normalise("家人们！！面膜只要９９元🔥 ")
    '家人们面膜只要0元'
    >>> hasher = MinHasher(permutations=16, bands=4, seed=7)
    >>> texts = ["buy 5 now at our shop!", "Buy 7 now at our shop", "hello there"]
    >>> sigs = hasher.signatures([normalise(t) for t in texts])
    >>> similarity(sigs[0], sigs[1]), similarity(sigs[0], sigs[2]) < 0.5
    (1.0, True)
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from operator import itemgetter

import numpy as np

from models.scales import decay_factor

SHINGLE = 3  # characters per shingle
_DIGITS = re.compile(r"\d+")
_NOT_WORD = re.compile(r"[\W_]+")
_NOT_WORD_NOR_SEP = re.compile(r"(?:[^\w\x00]|_)+")  # (keeps NUL: `normalise_long`'s separator)
_WIDE = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


def normalise(text: str) -> str:
    """The letters and numbers of `text`, compatibility-folded (full-width to ASCII),
    case-folded, every run of digits as one "0"; punctuation, spaces, emoji and
    invisible characters dropped.

    >>> normalise("Ｃｏｎｇｒａｔｓ 🎉, WIN 500$") == normalise("congrats win 7$!!")
    True
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NOT_WORD.sub("", _DIGITS.sub("0", folded))


def normalise_long(texts: list[str], min_length: int) -> tuple[list[int], list[str]]:
    """The positions and `normalise`d forms of the texts whose normalised form has at
    least `min_length` characters, in a few calls over all of them joined (a window holds
    hundreds of thousands of texts, most of them short: a call per text and step is the
    cost that matters; a text already too short once folded skips the costlier steps).

    >>> normalise_long(["+1", "Buy NOW: only 5 left!", "哈哈😂"], min_length=5)
    ([1], ['buynowonly0left'])
    >>> normalise_long(["Ｈｉ ５!", "哈哈😂"], 0)[1] == [normalise("Ｈｉ ５!"), normalise("哈哈😂")]
    True
    """
    # A short text ("+1", "哈哈哈") without a character that folding lengthens can only
    # get shorter: it is dropped untouched.
    n = len(texts)
    short = np.flatnonzero(np.fromiter(map(len, texts), np.int64, n) < min_length)
    keep = np.ones(n, bool)
    if len(short):
        shorts = [texts[i] for i in short.tolist()]
        keep[short] = np.fromiter(map(bool, map(_expands().search, shorts)), bool, len(short))
    candidates = np.flatnonzero(keep)
    if not len(candidates):
        return [], []
    picked = [texts[i] for i in candidates.tolist()]
    folded = unicodedata.normalize("NFKC", "\x00".join(picked)).casefold().split("\x00")
    if len(folded) != len(picked):  # a text held the separator itself
        every = [normalise(t) for t in picked]
        at = np.asarray([i for i, t in enumerate(every) if len(t) >= min_length], np.int64)
        return candidates[at].tolist(), [every[i] for i in at.tolist()]
    at = _at_least(folded, min_length)
    if not len(at):
        return [], []
    joined = "\x00".join(itemgetter(*at)(folded)) if len(at) > 1 else folded[at[0]]
    cleaned = _NOT_WORD_NOR_SEP.sub("", _DIGITS.sub("0", joined)).split("\x00")
    still = _at_least(cleaned, min_length)
    return candidates[at[still]].tolist(), [cleaned[i] for i in still.tolist()]


@cache
def _expands() -> re.Pattern[str]:
    """Characters that NFKC and case folding make longer ("ﬃ", "㍻", "ß"), found by
    trying every character of the first plane once (some 30 ms); characters beyond it are
    all taken as lengthening."""
    lengthening = (
        re.escape(c)
        for c in map(chr, range(0x10000))
        if not 0xD800 <= ord(c) <= 0xDFFF and len(unicodedata.normalize("NFKC", c).casefold()) > 1
    )
    return re.compile("[" + "".join(lengthening) + "\U00010000-\U0010ffff]")


def _at_least(texts: list[str], length: int) -> np.ndarray:
    """Positions of the texts with at least `length` characters (lengths counted in C)."""
    return np.flatnonzero(np.fromiter(map(len, texts), np.int64, len(texts)) >= length)


def information(normalised: str, wide_weight: float) -> float:
    """How much a normalised text says: its distinct shingles, each counting
    `wide_weight` times as much when the text is in a script of wide characters (a
    Chinese character carries about as much as two or three Latin letters). Repeats
    carry nothing: "哈哈哈哈哈哈" has one distinct shingle.

    >>> information("哈哈哈哈哈哈", 2.0), information("congratulations", 2.0)
    (2.0, 13.0)
    """
    n = len(normalised)
    if n < SHINGLE:
        return float(n > 0)
    distinct = len(set(zip(normalised, normalised[1:], normalised[2:], strict=False)))
    wide = len(_WIDE.findall(normalised)) / n
    return distinct * (1.0 + (wide_weight - 1.0) * wide)


class MinHasher:
    """MinHash signatures of texts' 3-shingles (`permutations` values each) and their
    LSH band keys (`bands` bands of `permutations // bands` values). Seeded, so the same
    text gets the same signature and keys in every process."""

    def __init__(self, permutations: int, bands: int, seed: int) -> None:
        if permutations % bands:
            raise ValueError("permutations must be a multiple of bands")
        rng = np.random.default_rng(seed)
        # a * x + b (mod 2 ** 32) with an odd a: a permutation of the 32-bit shingle hashes
        self.a = rng.integers(0, 2**32, permutations, dtype=np.uint32) | np.uint32(1)
        self.b = rng.integers(0, 2**32, permutations, dtype=np.uint32)
        self.band_salt = rng.integers(0, 2**63, bands, dtype=np.uint64)
        self.bands = bands
        self.rows = permutations // bands

    def signatures(self, normalised: list[str]) -> np.ndarray:
        """(texts, permutations) 32-bit minimum hashes of each text's shingles; a text
        shorter than a shingle is one shingle, padded."""
        n = len(normalised)
        if not n:
            return np.empty((0, len(self.a)), np.uint32)
        padded = [t if len(t) >= SHINGLE else t.ljust(SHINGLE, "\x00") for t in normalised]
        lengths = np.fromiter(map(len, padded), np.int64, n)
        points = np.frombuffer("".join(padded).encode("utf-32-le"), np.uint32).astype(np.uint64)
        counts = lengths - (SHINGLE - 1)  # shingles per text
        offsets = np.cumsum(counts) - counts  # where each text's shingles begin
        starts = np.cumsum(lengths) - lengths  # where each text's characters begin
        at = np.repeat(starts - offsets, counts) + np.arange(counts.sum())  # first character
        packed = (points[at] << np.uint64(42)) | (points[at + 1] << np.uint64(21)) | points[at + 2]
        shingles = (_mix(packed) >> np.uint64(32)).astype(np.uint32)
        out = np.empty((n, len(self.a)), np.uint32)
        for j, (a, b) in enumerate(zip(self.a, self.b, strict=True)):  # a column at a time:
            out[:, j] = np.minimum.reduceat(shingles * a + b, offsets)  # 4x a 2-D reduceat
        return out

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(texts, bands) int64 keys: two texts share a band's key when their signatures
        agree on all of that band's values (Jaccard s: probability s ** rows)."""
        keys = np.empty((len(signatures), self.bands), np.uint64)
        for band in range(self.bands):
            key = np.full(len(signatures), self.band_salt[band], np.uint64)
            for value in signatures[:, band * self.rows : (band + 1) * self.rows].T:
                key = _mix(key ^ value.astype(np.uint64))
            keys[:, band] = key
        return keys.view(np.int64)


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64's): every input bit moves every output bit."""
    x = (x ^ (x >> np.uint64(31))) * _MIX2
    x = (x ^ (x >> np.uint64(29))) * _MIX
    return x ^ (x >> np.uint64(32))


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two texts' shingles from their signatures."""
    return float(np.mean(a == b))


def components(keys: np.ndarray) -> np.ndarray:
    """Connected components of texts linked by a shared band key: per text, the lowest
    index of its component. Each text is compared only with its buckets (a sort per band
    and a few passes), never with every other text.

    >>> components(np.array([[1, 9], [2, 9], [2, 8], [3, 7]])).tolist()
    [0, 0, 0, 3]
    """
    n = len(keys)
    labels = np.arange(n)
    if n < 2:
        return labels
    orders = [np.argsort(keys[:, b], kind="stable") for b in range(keys.shape[1])]
    starts = []
    for b, order in enumerate(orders):
        ordered = keys[order, b]
        change = np.empty(n, bool)
        change[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=change[1:])
        starts.append(np.flatnonzero(change))
    while True:
        before = labels.copy()
        for order, start in zip(orders, starts, strict=True):
            lowest = np.minimum.reduceat(labels[order], start)
            sizes = np.diff(np.append(start, n))
            labels[order] = np.minimum(labels[order], np.repeat(lowest, sizes))
        labels = labels[labels]  # jump towards the root
        if np.array_equal(labels, before):
            return labels


class Commonness:
    """How common each LSH bucket has recently been: its share of a window's texts,
    once it is a habit (seen again at most `habit` windows after the last sighting: a
    template typed all day comes back again and again, a campaign's message is new; its
    windows once flagged teach nothing, so its first, partial one never becomes a habit),
    remembered as a maximum that halves every `half_life` windows. At most
    `max_keys` buckets are kept (the least common go first), so memory is bounded on an
    endless stream.

    >>> c = Commonness(half_life=4.0, habit=2, max_keys=10)
    >>> c.learn({7: 0.02, 8: 0.03}, t=0)
    >>> c.share([7], t=0)  # once is not yet common
    0.0
    >>> c.learn({7: 0.03}, t=2)
    >>> round(c.share([7], t=6), 4)  # a habit at 0.03, halved after four windows
    0.015
    """

    __slots__ = ("habit", "half_life", "max_keys", "shares")

    def __init__(self, half_life: float, habit: int, max_keys: int) -> None:
        self.half_life = half_life
        self.habit = habit
        self.max_keys = max_keys
        # key -> (sustained share, window it was set, last window's share, that window)
        self.shares: dict[int, tuple[float, int, float, int]] = {}

    def _now(self, key: int, t: int) -> float:
        found = self.shares.get(key)
        if found is None:
            return 0.0
        return found[0] * decay_factor(t - found[1], self.half_life)

    def share(self, keys: list[int], t: int) -> float:
        """The bucket share of a text with these band keys: the median over its bands (one
        band shared with an unrelated common text by chance does not make it common)."""
        return self.family_share([keys], t) if keys else 0.0

    def family_share(self, variants: list[list[int]], t: int) -> float:
        """The bucket share of a family of texts (each variant's band keys): per band, the
        shares of the distinct buckets its variants fall in, summed, and the median over
        bands. Variants that share a band's bucket count it once; a template typed in
        many wordings ("I tried this recipe / route / workout") is as common as all of
        them together, not as its most common wording.

        >>> c = Commonness(half_life=4.0, habit=2, max_keys=10)
        >>> c.learn({1: 0.01, 2: 0.01, 3: 0.01, 4: 0.01}, t=0)
        >>> c.learn({1: 0.01, 2: 0.01, 3: 0.01, 4: 0.01}, t=1)
        >>> round(c.family_share([[1, 2], [3, 4]], t=1), 4)  # two wordings, apart
        0.02
        >>> round(c.family_share([[1, 2], [1, 2]], t=1), 4)  # one wording, twice
        0.01
        """
        if not variants:
            return 0.0
        per_band = [sum(self._now(k, t) for k in set(band)) for band in zip(*variants, strict=True)]
        return float(np.median(per_band))

    def learn(self, shares: dict[int, float], t: int) -> None:
        """Take window `t`'s shares of the buckets that hold texts of two accounts or more."""
        table = self.shares
        for key, share in shares.items():
            found = table.get(key)
            if found is None:
                table[key] = (0.0, t, share, t)
                continue
            level = found[0] * decay_factor(t - found[1], self.half_life)
            sustained = max(share, found[2]) if t - found[3] <= self.habit else 0.0
            if sustained >= level:
                table[key] = (sustained, t, share, t)
            else:
                table[key] = (found[0], found[1], share, t)
        if len(table) > self.max_keys:
            ranked = sorted(table, key=lambda k: (-self._now(k, t), -table[k][3], k))
            for key in ranked[self.max_keys * 4 // 5 :]:
                del table[key]
