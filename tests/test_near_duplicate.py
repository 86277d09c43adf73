"""`models.near_duplicate`: normalisation undoes the edits spam makes, MinHash/LSH finds
near-copies without comparing all pairs, short phrases carry too little to be copies, and
the memory of common texts is bounded."""

from __future__ import annotations

import random

import numpy as np

from models.near_duplicate import (
    Commonness,
    MinHasher,
    components,
    information,
    normalise,
    normalise_long,
    similarity,
)
from pipeline.lab.simulation.text import COMMON_PHRASES

HASHER = MinHasher(permutations=32, bands=8, seed=0)
SPAM = "家人们谁懂啊，这款精华液今天直播间只要99元，手慢无！加我V：k2231"


def _edit(r: random.Random, text: str) -> str:
    """A copy as spam operators make them: width, punctuation, emoji, digits, spaces."""
    out = []
    for c in text:
        roll = r.random()
        if roll < 0.1 and "!" <= c <= "~":
            c = chr(ord(c) + 0xFEE0)  # full width
        elif roll < 0.15 and c.isdigit():
            c = str(r.randrange(10))
        elif roll < 0.18:
            c += r.choice((" ", "\u200b", "　"))
        out.append(c)
    return "".join(out) + r.choice(("", "🔥🔥", "!!", "～", "👍"))


def test_normalise_undoes_width_case_punctuation_emoji_digits_and_spaces() -> None:
    assert normalise("ＢＵＹ  now！！ 🔥") == normalise("buy\u200bnow!") == "buynow"
    assert normalise("only 5 left") == normalise("Only 1234 left!!") == "only0left"
    assert normalise("这个面膜，只要９９元～") == "这个面膜只要0元"


def test_edited_copies_are_near_duplicates_and_different_texts_are_not() -> None:
    r = random.Random(1)
    copies = [normalise(_edit(r, SPAM)) for _ in range(20)]
    others = [
        normalise(t)
        for t in (
            "这个视频说得太对了，已经转给我妈了",
            "I tried this recipe and it actually worked",
            "关注我每天分享考研资料干货，互关必回～",
        )
    ]
    sigs = HASHER.signatures([*copies, *others])
    assert min(similarity(sigs[0], s) for s in sigs[1:20]) >= 0.75
    assert max(similarity(sigs[0], s) for s in sigs[20:]) < 0.3
    labels = components(HASHER.band_keys(sigs))
    assert len(set(labels[:20].tolist())) == 1  # all copies meet in one component
    assert not set(labels[20:].tolist()) & set(labels[:20].tolist())


def test_signatures_are_the_same_in_every_process_and_order() -> None:
    texts = [normalise(t) for t in (SPAM, "my mom would love this", "求教程")]
    again = MinHasher(permutations=32, bands=8, seed=0)
    forward = HASHER.band_keys(HASHER.signatures(texts))
    backward = again.band_keys(again.signatures(texts[::-1]))[::-1]
    assert np.array_equal(forward, backward)
    assert not np.array_equal(forward, MinHasher(32, 8, seed=1).band_keys(
        MinHasher(32, 8, seed=1).signatures(texts)))  # fmt: skip


def test_common_short_phrases_carry_too_little_to_be_copies() -> None:
    for variants in COMMON_PHRASES.values():
        for phrase in variants:
            assert information(normalise(phrase), wide_weight=2.0) < 20, phrase
    assert information(normalise(SPAM), wide_weight=2.0) >= 20
    assert information(normalise("This serum changed my life, DM me for a discount"), 2.0) >= 20
    # a Chinese character says more than a Latin letter; repeats say nothing new
    assert information("求原图求原图求原图", 2.0) < information("求原图和这首歌的名字", 2.0)


def test_components_link_through_shared_buckets_only() -> None:
    keys = np.array([[1, 10], [2, 10], [2, 11], [3, 12], [4, 12], [5, 13]])
    assert components(keys).tolist() == [0, 0, 0, 3, 3, 5]
    assert components(keys[::-1]).tolist() == [0, 1, 1, 3, 3, 3]


def test_a_habit_is_common_a_first_sighting_is_not_and_memory_is_bounded() -> None:
    c = Commonness(half_life=8.0, habit=4, max_keys=100)
    c.learn({1: 0.05}, t=0)
    assert c.share([1], t=1) == 0.0  # seen once: a campaign's first window teaches nothing
    c.learn({1: 0.04}, t=3)
    assert c.share([1], t=3) == 0.05
    assert c.share([1], t=11) == 0.025  # fades with its half-life
    c.learn({2: 0.1}, t=3)
    c.learn({2: 0.1}, t=9)  # too long after: still not a habit
    assert c.share([2], t=9) == 0.0
    for t in range(20):
        c.learn({1000 * t + k: 0.001 * (k + 1) for k in range(30)}, t=t)
        assert len(c.shares) <= 100


def test_normalising_a_window_at_once_matches_one_text_at_a_time() -> None:
    r = random.Random(2)
    texts = [
        "+1", "哈哈哈", "Congrats 🎉", "㍻㍻㍻", "ﬃﬃﬃﬃ", "Straße", "½ off", "ＳＡＬＥ　９９％",
        "a\x00b joined text", "", "🔥" * 9, SPAM, *(_edit(r, SPAM) for _ in range(5)),
    ]  # fmt: skip
    for min_length in (0, 5, 12):
        at, normalised = normalise_long(texts, min_length)
        expected = [(i, normalise(t)) for i, t in enumerate(texts)]
        assert list(zip(at, normalised, strict=True)) == [
            (i, t) for i, t in expected if len(t) >= min_length
        ]
    without_separator = [t for t in texts if "\x00" not in t]
    at, normalised = normalise_long(without_separator, 5)
    assert normalised == [normalise(without_separator[i]) for i in at]
    assert "平成平成平成" in normalised and "ffiffiffiffi" in normalised  # short, but expand
