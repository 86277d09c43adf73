"""`EventColumns`: grouping, picking and distinct counts on hashed columns agree with
plain Python over the events, with and without groups, on subsets of subsets."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import NamedTuple

import numpy as np
import pytest

from pipeline.core.event_columns import (
    EventColumns,
    Groups,
    count_lookup,
    group_hashes,
    isin_hashes,
    sorted_unique,
)


class Ev(NamedTuple):
    item: str
    owner: str
    actor: str
    device: str | None


def _events(n: int, seed: int = 1) -> list[Ev]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        item = f"i{rng.randrange(60)}"
        out.append(
            Ev(
                item,
                f"o{int(item[1:]) % 7}",
                f"a{rng.randrange(40)}",
                rng.choice(["d1", "d2", None]),
            )
        )
    return out


def _distinct(events: list[Ev], field: str, value: str) -> dict[str, int]:
    seen: dict[str, set] = defaultdict(set)
    for e in events:
        seen[getattr(e, field)].add(getattr(e, value))
    return {k: len(v) for k, v in seen.items()}


@pytest.mark.parametrize("n", [0, 1, 2, 17, 1000])
def test_group_hashes_and_sorted_unique_match_numpy_unique(n: int) -> None:
    values = np.random.default_rng(n).integers(-6, 6, n).astype(np.int64)
    expected = np.unique(values, return_index=True, return_inverse=True, return_counts=True)
    for got, want in zip(group_hashes(values), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(sorted_unique(values), np.unique(values))


def test_tally_counts_and_first_events() -> None:
    events = _events(500)
    window = EventColumns(events)
    tally = window.tally("item")
    firsts = window.events_at(tally.first)
    counts = {e.item: 0 for e in events}
    for e in events:
        counts[e.item] += 1
    assert {f.item: int(c) for f, c in zip(firsts, tally.counts, strict=True)} == counts
    assert [events.index(f) for f in firsts] == tally.first.tolist()  # the first of each
    assert count_lookup(tally.keys, tally.counts, ["i3", "nope"]) == {"i3": counts["i3"], "nope": 0}


def test_of_and_distinct_agree_with_and_without_groups_on_nested_subsets() -> None:
    events = _events(2000, seed=2)
    grouped, plain = EventColumns(events), EventColumns(events)
    grouped.tally("item")
    wanted = {f"i{k}" for k in range(0, 60, 3)}
    for window in (grouped, plain):
        chosen = window.of("item", wanted)
        assert chosen.events == [e for e in events if e.item in wanted]
        narrower = chosen.where(chosen.hashes("actor") != hash("a5")).of("item", {"i3", "i9"})
        mine = [e for e in events if e.item in {"i3", "i9"} and e.actor != "a5"]
        assert narrower.events == mine
        for value in ("actor", "device"):
            assert narrower.distinct("item", value, ["i3", "i9", "i4"]) == _distinct(
                mine, "item", value
            )
            assert chosen.distinct("item", value, wanted) == _distinct(chosen.events, "item", value)


def test_derived_groups_stand_for_a_field_never_read() -> None:
    events = _events(800, seed=3)
    window = EventColumns(events)
    tally = window.tally("item")
    codes = window.groups("item").codes
    owners = [e.owner for e in window.events_at(tally.first)]
    keys, _, owner_of_item, _ = group_hashes(np.array([hash(o) for o in owners], np.int64))
    window.derive("owner", Groups(keys, owner_of_item[codes]))
    np.testing.assert_array_equal(window.hashes("owner"), [hash(e.owner) for e in events])
    assert window.of("owner", {"o2"}).events == [e for e in events if e.owner == "o2"]
    assert window.distinct("owner", "actor", ["o2", "o5"]) == {
        k: v for k, v in _distinct(events, "owner", "actor").items() if k in {"o2", "o5"}
    }
    assert isin_hashes(window.hashes("owner"), ["o1"]).sum() == sum(e.owner == "o1" for e in events)
