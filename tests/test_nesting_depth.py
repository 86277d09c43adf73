"""`nests_too_deep` (pipeline/contract/events.py) against the plainest reading of its rule:
walk the text a byte at a time, count the brackets outside strings (a backslash escapes the
byte after it), and say whether the count ever passes MAX_DEPTH. Texts near the bound,
balanced or not, with brackets, quotes and backslashes in their strings or out of them,
valid JSON or not: both say the same."""

from __future__ import annotations

import random

import pytest

from pipeline.contract.events import MAX_DEPTH, nests_too_deep

# strings with brackets, quotes and backslashes in them, numbers, pairs
PIECES = [b'"[[]"', b'"]]]"', b'"a\\"["', b'"\\\\"', b'"{"', b"1,", b"[]", b"{}"]
STRAYS = [b'"x', b"\\", b'"', b'"\\']  # a string left open, a backslash outside one
ANY = [*PIECES, *STRAYS, b"[", b"]", b"{", b"}"]


def _plainly_too_deep(raw: bytes) -> bool:
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif byte in b"]}":
            depth -= 1
    return False


def _near_the_bound(rng: random.Random) -> bytes:
    """Brackets climbing to about MAX_DEPTH with strings and pairs among them, then closed
    to some depth; with or without backslashes."""
    target, depth, out = rng.randint(MAX_DEPTH - 12, MAX_DEPTH + 12), 0, []
    while depth < target:
        r = rng.random()
        if r < 0.7:
            out.append(rng.choice([b"[", b"{"]))
            depth += 1
        elif r < 0.85 and depth:
            out.append(rng.choice([b"]", b"}"]))
            depth -= 1
        else:
            out.append(rng.choice(PIECES))
    out += [rng.choice([b"]", b"}"]) for _ in range(rng.randint(0, target + 3))]
    if rng.random() < 0.2:
        out.insert(rng.randrange(len(out)), rng.choice(STRAYS))
    if rng.random() < 0.5:
        out = [p for p in out if b"\\" not in p]
    return b"".join(out)


@pytest.mark.parametrize("seed", range(4))
def test_nests_too_deep_says_what_counting_byte_by_byte_says(seed: int) -> None:
    rng = random.Random(seed)
    texts = [_near_the_bound(rng) for _ in range(150)]
    texts += [b"".join(rng.choices(ANY, k=rng.randint(300, 900))) for _ in range(50)]
    said = [(nests_too_deep(t), _plainly_too_deep(t)) for t in texts]
    assert all(fast == plain for fast, plain in said)
    assert 20 < sum(plain for _, plain in said) < len(said) - 20  # both answers are tried
