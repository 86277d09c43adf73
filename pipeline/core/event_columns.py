"""A window's events with their fields hashed into numpy arrays, each at most once.

Whole-window stages (`pipeline.core.window_runner`) count and group hundreds of thousands of
events per window. A Python step per event and field is the cost that matters there, so
each field an analysis needs is read once, as a column of 64-bit string hashes, and
everything after that (counting per subject, distinct values per subject, picking the
events of a few subjects) runs on the columns in C. A field whose values are grouped
(`tally`, `derive`) also has a small integer code per event, the position of its value
among the distinct ones: picking subjects and counting their distinct values then needs
no search and no stable sort.

Grouping sorts: numpy's `np.unique` hashes int64 values (numpy 2.3+), several times
slower than a sort on these columns of mostly distinct values, and its `return_index`
needs a stable sort; `group_hashes` and `sorted_unique` do the same with a plain sort.

Hashes only group, within one process; a collision of two 64-bit hashes is unlikely
enough to ignore, and can only merge two values (a distinct count is never above the
true one). Results are keyed by the names the caller gives, never recovered from hashes.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np

_SPREAD = np.int64(1_000_003)  # mixes a subject's hash into a value's: one key per pair
_CODE_SHIFT = 40  # a (code, value) pair packs the code above 40 bits of the value's hash
_VALUE_BITS = np.int64((1 << _CODE_SHIFT) - 1)
_PARENT_SHARE = 2  # a subset at least 1/_PARENT_SHARE of its parent reads fields through it


class Groups(NamedTuple):
    """A field's distinct values and, per event, the position of its value among them."""

    keys: np.ndarray  # the distinct hashes, sorted
    codes: np.ndarray  # per event: index into `keys`


class Tally(NamedTuple):
    """A field's distinct values, how many events have each, and the first that does."""

    keys: np.ndarray  # the distinct hashes, sorted
    counts: np.ndarray
    first: np.ndarray  # position of the first event with each value


class EventColumns:
    """Events and, per field asked for, the column of its values' hashes. A subset
    (`where`, `of`) shares its parent's columns and groups: it reads a field itself when
    the parent has not read that field and the subset is under half of it (reading the
    parent's whole column then costs more than the subset's own, even if another subset
    of the same parent later needs the field too)."""

    __slots__ = ("_columns", "_events", "_groups", "_index", "_parent")

    def __init__(self, events: list[Any]) -> None:
        self._events: list[Any] | None = events
        self._columns: dict[str, np.ndarray] = {}
        self._groups: dict[str, Groups] = {}
        self._parent: EventColumns | None = None
        self._index: np.ndarray | None = None  # positions in the parent

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else len(self.events)

    @property
    def events(self) -> list[Any]:
        if self._events is None:
            assert self._parent is not None and self._index is not None
            self._events = list(map(self._parent.events.__getitem__, self._index.tolist()))
        return self._events

    def events_at(self, positions: np.ndarray) -> list[Any]:
        """The events at `positions`, without listing a subset's other events."""
        if self._parent is None or self._index is None:
            return list(map(self.events.__getitem__, positions.tolist()))
        return self._parent.events_at(self._index[positions])

    def hashes(self, field: str) -> np.ndarray:
        """The hash of each event's `field` (a missing value hashes as None)."""
        column = self._columns.get(field)
        if column is not None:
            return column
        parent, index = self._parent, self._index
        if (
            parent is not None
            and index is not None
            and (field in parent._columns or _PARENT_SHARE * len(index) >= len(parent))
        ):
            column = self._columns[field] = parent.hashes(field)[index]
            return column
        events = self.events
        column = np.fromiter(map(hash, map(attrgetter(field), events)), np.int64, len(events))
        self._columns[field] = column
        return column

    def groups(self, field: str) -> Groups | None:
        """The field's groups, if it (or the window this is a subset of) has them."""
        found = self._groups.get(field)
        if found is None and self._parent is not None and self._index is not None:
            inherited = self._parent.groups(field)
            if inherited is not None:
                found = self._groups[field] = Groups(inherited.keys, inherited.codes[self._index])
        return found

    def tally(self, field: str) -> Tally:
        """Group the events by `field`: its distinct values, their counts and first events."""
        keys, first, codes, counts = group_hashes(self.hashes(field))
        self._groups[field] = Groups(keys, codes)
        return Tally(keys, counts, first)

    def derive(self, field: str, groups: Groups) -> None:
        """Give `field` groups worked out from another field's (a content item's owner
        from its item's): its hashes follow without reading a single event."""
        self._groups[field] = groups
        self._columns[field] = groups.keys[groups.codes]

    def where(self, mask: np.ndarray) -> EventColumns:
        """The events where `mask` holds."""
        subset = EventColumns.__new__(EventColumns)
        subset._events = None
        subset._columns = {}
        subset._groups = {}
        subset._parent = self
        subset._index = np.flatnonzero(mask)
        return subset

    def of(self, field: str, names: Iterable[str]) -> EventColumns:
        """The events whose `field` is one of `names`."""
        wanted = sorted_unique(np.fromiter(map(hash, names), np.int64))
        groups = self.groups(field)
        if groups is None:
            return self.where(isin_sorted(self.hashes(field), wanted))
        chosen = np.zeros(len(groups.keys), bool)
        chosen[positions_of(groups.keys, wanted)] = True
        return self.where(chosen[groups.codes])

    def distinct(self, field: str, value: str, names: Iterable[str]) -> dict[str, int]:
        """How many distinct `value`s the events of each of `names` (values of `field`)
        have; subjects without events are left out."""
        names = list(names)
        if not len(self) or not names:
            return {}
        groups = self.groups(field)
        if groups is not None:  # pack (code, value) into one int: a plain sort, no argsort
            pairs = sorted_unique(
                (groups.codes << _CODE_SHIFT) | (self.hashes(value) & _VALUE_BITS)
            )
            per_code = np.bincount(pairs >> _CODE_SHIFT, minlength=len(groups.keys))
            wanted = np.fromiter(map(hash, names), np.int64, len(names))
            at = np.minimum(np.searchsorted(groups.keys, wanted), len(groups.keys) - 1)
            found = np.where(groups.keys[at] == wanted, per_code[at], 0)
            return {n: c for n, c in zip(names, found.tolist(), strict=True) if c}
        subjects = self.hashes(field)
        with np.errstate(over="ignore"):
            pairs = subjects * _SPREAD ^ self.hashes(value)
        order = np.argsort(pairs)
        one_per_pair = order[_starts(pairs[order])]  # an event of each distinct pair
        keys, _, _, counts = group_hashes(subjects[one_per_pair])
        by_hash = dict(zip(keys.tolist(), counts.tolist(), strict=True))
        return {n: by_hash[hash(n)] for n in names if hash(n) in by_hash}


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted."""
    ordered = np.sort(values)
    return ordered[_starts(ordered)]


def group_hashes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(distinct values sorted, position of each one's first occurrence, each value's
    index among the distinct ones, how often each occurs): `np.unique` with
    `return_index`, `return_inverse` and `return_counts`, on one unstable sort."""
    if not len(values):
        empty = np.zeros(0, np.int64)
        return values[:0], empty, empty, empty
    order = np.argsort(values)
    ordered = values[order]
    starts = _starts(ordered)
    is_start = np.zeros(len(values), np.int64)
    is_start[starts] = 1
    codes = np.empty(len(values), np.int64)
    codes[order] = np.cumsum(is_start) - 1
    first = np.minimum.reduceat(order, starts)
    counts = np.diff(np.append(starts, len(values)))
    return ordered[starts], first, codes, counts


def _starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values in a sorted array begins."""
    if not len(ordered):
        return np.zeros(0, np.int64)
    change = np.empty(len(ordered), bool)
    change[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=change[1:])
    return np.flatnonzero(change)


def positions_of(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where the values of `wanted` that `keys` (sorted) holds sit in `keys`."""
    if not len(keys):
        return np.zeros(0, np.int64)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return at[keys[at] == wanted]


def isin_hashes(column: np.ndarray, names: Iterable[str]) -> np.ndarray:
    """Where `column` holds the hash of one of `names`."""
    return isin_sorted(column, sorted_unique(np.fromiter(map(hash, names), np.int64)))


def isin_sorted(column: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where `column` holds one of the sorted hashes `wanted`: a binary search per event
    over `wanted`, which is small next to the column (and so stays in cache)."""
    if not len(wanted):
        return np.zeros(len(column), bool)
    at = np.minimum(np.searchsorted(wanted, column), len(wanted) - 1)
    return wanted[at] == column


def count_lookup(hashes: np.ndarray, counts: np.ndarray, names: Iterable[str]) -> dict[str, int]:
    """The counts of `names` from `counts` (what `EventColumns.counts` returns), 0 for a
    name without events."""
    names = list(names)
    if not names or not len(hashes):
        return dict.fromkeys(names, 0)
    wanted = np.fromiter(map(hash, names), np.int64, len(names))
    at = np.minimum(np.searchsorted(hashes, wanted), len(hashes) - 1)
    found = np.where(hashes[at] == wanted, counts[at], 0)
    return dict(zip(names, found.tolist(), strict=True))
