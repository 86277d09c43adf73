"""Lockstep groups (CopyCatch-like): accounts that act on the same items in the same minutes,
again and again.

Two steps, neither comparing accounts pairwise:

* `rounds`: one item's actions split into rounds, runs of actions with no gap longer than
  `gap_ms` and no longer than `max_span_ms` in all. A round is an *event slot*: who acted
  on this item within these few minutes. A viral post is one (big) round; a ring is one
  round per item it works.
* `lockstep_groups`: rounds are linked when they share many of their actors (counted
  through an index of each actor's rounds, so the cost is the sum over actors of their
  rounds squared, not accounts squared); linked rounds on at least `min_items` distinct
  items make a candidate, and its members are the actors that joined at least
  `member_share` of its items' rounds. Organic popularity does not link rounds: a crowd
  on one viral post is one round, and the fans of a busy account who come back to each
  post do so at scattered times, in rounds of many other people.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple


class Round(NamedTuple):
    """Who acted on one item within a few minutes (an event slot)."""

    item: str
    start: int  # ms of its first action
    end: int  # ms of its last action
    actors: frozenset[str]


class Group(NamedTuple):
    """Accounts acting in lockstep: the rounds they share and how many items each joined."""

    rounds: list[Round]  # the linked rounds, by start
    joined: dict[str, int]  # member -> distinct items of the group it acted on in round


def rounds(
    item: str, actions: Iterable[tuple[int, str]], gap_ms: int, max_span_ms: int
) -> list[Round]:
    """Split one item's (ts, actor) actions into rounds. Depends only on the set of actions
    (they are sorted here), so arrival order changes nothing.

    >>> [sorted(r.actors) for r in rounds("p1", [(0, "a"), (5, "b"), (100, "c")], 10, 60)]
    [['a', 'b'], ['c']]
    """
    out: list[Round] = []
    start = last = -1
    actors: set[str] = set()
    for ts, actor in sorted(actions):
        if actors and (ts - last > gap_ms or ts - start > max_span_ms):
            out.append(Round(item, start, last, frozenset(actors)))
            actors = set()
        if not actors:
            start = ts
        actors.add(actor)
        last = ts
    if actors:
        out.append(Round(item, start, last, frozenset(actors)))
    return out


def lockstep_groups(
    slots: Sequence[Round],
    *,
    min_items: int,
    min_shared: int,
    link_share: float,
    member_share: float,
    min_members: int,
) -> list[Group]:
    """Groups of actors who share rounds on at least `min_items` distinct items.

    Two rounds of different items are linked when they share at least `min_shared` actors
    and at least `link_share` of the smaller one's. Linked rounds form a candidate (its
    connected component); its members are the actors who acted in rounds of at least
    `member_share` of its items (and at least two); a candidate with fewer than
    `min_members` members is no group.

    >>> ring = {f"r{i}" for i in range(12)}
    >>> slots = [Round(f"p{k}", k * 100, k * 100 + 5, frozenset(ring | {f"x{k}"}))
    ...          for k in range(3)]
    >>> g, = lockstep_groups(slots, min_items=3, min_shared=5, link_share=0.5,
    ...                      member_share=0.5, min_members=10)
    >>> sorted(g.joined) == sorted(ring), len(g.rounds)
    (True, 3)
    """
    if len({r.item for r in slots}) < min_items:
        return []
    rounds_of: dict[str, list[int]] = {}
    for i, r in enumerate(slots):
        for actor in r.actors:
            rounds_of.setdefault(actor, []).append(i)
    shared: dict[tuple[int, int], int] = {}
    for mine in rounds_of.values():
        if len(mine) < 2:
            continue
        for a in range(len(mine)):
            for b in range(a + 1, len(mine)):
                pair = (mine[a], mine[b])
                shared[pair] = shared.get(pair, 0) + 1
    parent = list(range(len(slots)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (a, b), n in shared.items():
        ra, rb = slots[a], slots[b]
        if ra.item == rb.item or n < min_shared:
            continue
        if n < link_share * min(len(ra.actors), len(rb.actors)):
            continue
        parent[root(a)] = root(b)
    components: dict[int, list[int]] = {}
    for i in range(len(slots)):
        components.setdefault(root(i), []).append(i)
    groups: list[Group] = []
    for members in components.values():
        linked = sorted((slots[i] for i in members), key=lambda r: (r.start, r.item))
        items = {r.item for r in linked}
        if len(items) < min_items:
            continue
        items_of: dict[str, set[str]] = {}
        for r in linked:
            for actor in r.actors:
                items_of.setdefault(actor, set()).add(r.item)
        need = max(2, math.ceil(member_share * len(items)))
        joined = {a: len(s) for a, s in items_of.items() if len(s) >= need}
        if len(joined) >= min_members:
            groups.append(Group(linked, dict(sorted(joined.items()))))
    groups.sort(key=lambda g: (g.rounds[0].start, g.rounds[0].item))
    return groups


def round_signature(actors: Iterable[str], bands: int) -> list[str]:
    """MinHash keys of a round's actors, one per band: `band/actor`, the actor with the
    smallest hash under that band's hash function. Two rounds share a band's key with
    probability their actors' Jaccard similarity, so a ring's rounds (mostly the same
    accounts) meet under one key in some band, wherever their items are, without any
    round being compared with another. Stable across processes (CRC-32, no salt).

    >>> round_signature(["a", "b", "c"], 2) == round_signature(["c", "b", "a"], 2)
    True
    >>> len(round_signature(["a", "b"], 3))
    3
    """
    actors = list(actors)
    keys = []
    for band in range(bands):
        seed = f"{band}\x00".encode()
        best = min(actors, key=lambda a: (zlib.crc32(seed + a.encode("utf-8", "surrogatepass")), a))
        keys.append(f"{band}/{best}")
    return keys
