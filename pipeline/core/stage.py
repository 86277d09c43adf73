"""Keyed, windowed stages: the unit that both runtimes run unchanged.

A stage says which events it wants, which field keys them (so a partitioner can route
them), what it accumulates per window pane, and how it judges a closed window against the
key's own model. The runner owns everything generic: the state store (a dict here, a Faust
table in the distributed runtime), pane assignment, watermark-driven window closing, and
eviction of idle keys. A stage never sees another key's state, so any key can live on any
worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from operator import attrgetter
from typing import Any, ClassVar, NamedTuple

import numpy as np

from pipeline.contract.events import NO_TIME
from pipeline.contract.findings import Finding


class WindowSpec(NamedTuple):
    """Windows of `size_ms`, one starting every `hop_ms` (tumbling when they are equal).

    Events are summed into panes of `hop_ms`; a window is the panes in [end - size, end).
    """

    size_ms: int
    hop_ms: int

    @classmethod
    def tumbling(cls, size_ms: int) -> WindowSpec:
        return cls(size_ms, size_ms)


class KeyState:
    """What a runner keeps per key: open panes, the stage's model, when it last closed a
    window, and (distributed runtime only) the highest input offset applied to this key
    per input partition, which tells a redelivered event from a new one."""

    __slots__ = ("applied", "last_ts", "model", "panes")

    def __init__(self, model: Any) -> None:
        self.panes: dict[int, Any] = {}
        self.model = model
        self.last_ts = 0
        self.applied: dict[str, int] | None = None

    def __getstate__(self) -> tuple[dict[int, Any], Any, int, dict[str, int] | None]:
        return self.panes, self.model, self.last_ts, self.applied

    def __setstate__(self, state: tuple[dict[int, Any], Any, int, dict[str, int] | None]) -> None:
        self.panes, self.model, self.last_ts, self.applied = state


class Stage(ABC):
    """A detector's per-key logic. Subclasses set the class attributes and four methods
    (or derive from `pipeline.core.window_runner.WholeWindowStage`, for a stage that
    judges a window's events of every key at once)."""

    detector: ClassVar[str]
    key_field: ClassVar[str]
    event_types: ClassVar[frozenset[str]]
    # Event types the stage only counts per key and pane (`add_count`): the embedded
    # runtime tallies them in C, a pane update per key and batch, not a call per event.
    # `add` must still take them (the distributed runtime adds event by event).
    counted_types: ClassVar[frozenset[str]] = frozenset()
    # Derived streams (`pipeline.core.derived`) the stage consumes, besides its event types,
    # and those its `evaluate` produces for stages after it (set per instance: a stage
    # emits a stream only when a stage consuming it is enabled).
    streams: ClassVar[frozenset[str]] = frozenset()
    emits: frozenset[str] = frozenset()
    # True while a runner closes the last windows of an input that has ended (`flush`):
    # a stage that waits to see more of a key before judging it judges on what it saw.
    # A live stream never ends, so the distributed runtime judges such keys once their
    # wait is over, on more evidence.
    ending: bool = False

    def __init__(self, window: WindowSpec, idle_ttl_ms: int) -> None:
        self.window = window
        self.idle_ttl_ms = idle_ttl_ms

    def key_of(self, event: Any) -> str:
        """The key an event's state lives under: its `key_field`, unless a stage overrides
        this to key otherwise (e.g. by a shard of many accounts, for constant memory).
        Runners read `key_field` directly for stages that do not override it (see
        `custom_key_of`): an attribute read is the hot path's cheapest step."""
        return getattr(event, self.key_field)

    def admits(self, event: Any) -> bool:
        """Whether an event can matter to this stage at all. The distributed runtime
        routes only admitted events to the stage's topic (less to repartition); a stage
        that overrides this must ignore the others itself, so the embedded runtime, which
        hands it every event of its types, finds the same."""
        return True

    @abstractmethod
    def new_model(self) -> Any:
        """Fresh per-key model state (the key's history), created on its first event."""

    @abstractmethod
    def new_pane(self) -> Any:
        """An empty per-pane accumulator."""

    @abstractmethod
    def add(self, pane: Any, event: Any) -> None:
        """Fold one event into a pane. This is the hot path: keep it to a few operations."""

    def add_count(self, pane: Any, events: int) -> None:
        """Fold `events` events of a counted type into a pane, as `add` would one by one."""
        raise NotImplementedError(f"{self.detector} counts no event type")

    def wake_at(self, model: Any) -> int | None:
        """When a key's model next needs a window closed even if no event comes (a
        deadline), or None. Runners keep a window open at that time for the key, and at
        its close call `on_wake` for it: both runtimes act at the same window."""
        return None

    def on_wake(self, key: str, model: Any, end: int) -> list[Any]:
        """What a key does at the close of the window its deadline fell in, after the
        window's events were judged (findings or derived records)."""
        return []

    @abstractmethod
    def evaluate(
        self, key: str, model: Any, panes: list[Any], start: int, end: int
    ) -> Finding | list[Finding] | None:
        """Judge the closed window [start, end) of one key, update its model, maybe find
        (one finding, or several when a key stands for many subjects)."""


def custom_key_of(stage: Stage) -> Callable[[Any], str] | None:
    """The stage's own `key_of` if it overrides the default, else None. Asked once per
    batch, so a stage keyed by a plain field reads it with `operator.attrgetter` mapped
    over the batch in C, not with a call through `key_of` per event."""
    if type(stage).key_of is Stage.key_of:
        return None
    return stage.key_of


def custom_admits(stage: Stage) -> Callable[[Any], bool] | None:
    """The stage's own `admits` if it overrides the default (which admits everything),
    else None: routing then skips a call per event."""
    if type(stage).admits is Stage.admits:
        return None
    return stage.admits


def _outputs(found: Any) -> list[Any]:
    """`evaluate`'s return as a list."""
    if found is None:
        return []
    return list(found) if isinstance(found, list) else [found]


@contextmanager
def ending(stage: Stage) -> Iterator[None]:
    """The input has ended: `stage.ending` while its last windows close."""
    stage.ending = True
    try:
        yield
    finally:
        stage.ending = False


def wakes(stage: Stage) -> bool:
    """Whether the stage has deadlines (`wake_at`): runners ask only then."""
    return type(stage).wake_at is not Stage.wake_at


def wake_pane(stage: Stage, model: Any, after: int) -> int | None:
    """The start of the pane whose first window ends at the first window end at or
    after the model's deadline, if that is later than `after`."""
    t = stage.wake_at(model)
    if t is None:
        return None
    hop = stage.window.hop_ms
    end = -(-t // hop) * hop
    return end - hop if end > after else None


def flush_end(stage: Stage, last_pane: int, until: int | None) -> int:
    """Where closing ends when the input does: past the last pane with events, but not
    past the window of `until` (the latest event time the stream reached)."""
    end = last_pane + stage.window.size_ms
    if until is None:
        return end
    return min(end, until - until % stage.window.hop_ms + stage.window.size_ms)


def split_by_pane(
    events: list[Any], hop: int, span: tuple[int, int] | None = None
) -> dict[int, list[Any]]:
    """A batch's events by the pane (of `hop` ms) they fall in. Usually one pane: told
    from the batch's earliest and latest stamps (`span`, when the gate knows them for the
    whole batch), not a step per event."""
    if span is not None:
        first = span[0] - span[0] % hop
        if span[1] < first + hop:
            return {first: events}
    stamps = np.fromiter(map(_ts, events), np.int64, len(events))
    panes = stamps - stamps % hop
    first, last = int(panes.min()), int(panes.max())
    if first == last:
        return {first: events}
    pick = events.__getitem__  # each pane's events in batch order, picked in C
    return {
        int(pane): list(map(pick, np.flatnonzero(panes == pane).tolist()))
        for pane in np.unique(panes)
    }


_ts = attrgetter("ts")


class KeyedRunner:
    """Runs one stage over batches of events: state per key, windows closed by watermark."""

    def __init__(self, stage: Stage, store: MutableMapping[str, KeyState] | None = None) -> None:
        self.stage = stage
        self.store: MutableMapping[str, KeyState] = {} if store is None else store
        self._due: dict[int, set[str]] = {}  # window end -> keys with panes in that window
        self._counts: dict[int, Counter[str]] = {}  # pane start -> counted events per key
        self._last_pane = NO_TIME  # the latest pane that got events
        # pane start -> key -> that key's open pane: a key seen in an earlier batch finds
        # its pane with one lookup, not through its state (entries go with their panes)
        self._open: dict[int, dict[str, Any]] = {}
        self._wakes = wakes(stage)

    def __len__(self) -> int:
        return len(self.store)

    def add_batch(
        self,
        events: Iterable[Any],
        span: tuple[int, int] | None = None,
        kind: str | None = None,
    ) -> None:
        """Fold a batch of events into their keys' panes, a pane of the batch at a time
        (`span`: see `split_by_pane`), so each key's pane is looked up once per batch.
        (`kind`, the batch's one event type when known, is for `WindowRunner`'s folds.)"""
        events = events if isinstance(events, list) else list(events)
        if not events:
            return
        key_of = custom_key_of(self.stage) or attrgetter(self.stage.key_field)
        for pane_start, pane_events in split_by_pane(
            events, self.stage.window.hop_ms, span
        ).items():
            self._add_to_pane(pane_events, pane_start, key_of)

    def _add_to_pane(
        self, events: list[Any], pane_start: int, key_of: Callable[[Any], str]
    ) -> None:
        if pane_start > self._last_pane:
            self._last_pane = pane_start
        add, pane_of = self.stage.add, self._pane
        panes = self._open.get(pane_start)
        if panes is None:
            panes = self._open[pane_start] = {}
        for key, event in zip(map(key_of, events), events, strict=True):
            pane = panes.get(key)
            if pane is None:
                pane = panes[key] = pane_of(key, pane_start)
            add(pane, event)

    def _pane(self, key: str, pane_start: int) -> Any:
        """A key's pane starting at `pane_start`, made (with its window timer) if new."""
        state = self.store.get(key)
        if state is None:
            state = self.store[key] = KeyState(self.stage.new_model())
        pane = state.panes.get(pane_start)
        if pane is None:
            pane = state.panes[pane_start] = self.stage.new_pane()
            self._due.setdefault(pane_start + self.stage.window.hop_ms, set()).add(key)
        return pane

    def count_batch(self, events: list[Any], span: tuple[int, int] | None = None) -> None:
        """`add_batch` for a type the stage only counts (`Stage.counted_types`): events
        are tallied per pane and key in C, into one `Counter` per pane; each key's pane
        takes its count when the pane's first window is about to close (`_settle_counts`),
        so a key costs a step per pane, not one per batch."""
        if not events:
            return
        key_of = custom_key_of(self.stage) or attrgetter(self.stage.key_field)
        counts = self._counts
        for pane_start, pane_events in split_by_pane(
            events, self.stage.window.hop_ms, span
        ).items():
            tally = counts.get(pane_start)
            if tally is None:
                tally = counts[pane_start] = Counter()
                self._last_pane = max(self._last_pane, pane_start)
            tally.update(map(key_of, pane_events))

    def _settle_counts(self, watermark: int) -> None:
        """Hand the tallied counts of every pane whose first window ends by `watermark` to
        their keys' panes (a window holds a pane from the window ending at its end)."""
        hop = self.stage.window.hop_ms
        add_count = self.stage.add_count
        for pane_start in [p for p in self._counts if p + hop <= watermark]:
            for key, n in self._counts.pop(pane_start).items():
                add_count(self._pane(key, pane_start), n)

    def advance(self, watermark: int) -> list[Finding]:
        """Close, in order, every window whose end the watermark has passed."""
        findings: list[Finding] = []
        if self._counts:
            self._settle_counts(watermark)
        due = self._due
        while due:
            end = min(due)
            if end > watermark:
                break
            for key in due.pop(end):
                found = self._close(key, end)
                if found is None:
                    continue
                if isinstance(found, Finding):
                    findings.append(found)
                else:
                    findings.extend(found)
        return findings

    def _close(self, key: str, end: int) -> Finding | list[Finding] | None:
        size, hop = self.stage.window
        state = self.store.get(key)
        if state is None:
            return None
        start = end - size
        panes = state.panes
        in_window = [panes[p] for p in sorted(panes) if start <= p < end]
        finding = self.stage.evaluate(key, state.model, in_window, start, end)
        keep_from = end + hop - size
        for p in [p for p in panes if p < keep_from]:
            del panes[p]
            opened = self._open.get(p)
            if opened is not None:
                opened.pop(key, None)
                if not opened:
                    del self._open[p]
        if self._wakes:
            due = self.stage.wake_at(state.model)
            if due is not None and due <= end:
                woken = self.stage.on_wake(key, state.model, end)
                if woken:
                    finding = _outputs(finding) + woken
            wake = wake_pane(self.stage, state.model, end)
            if wake is not None:
                self._pane(key, wake)  # an empty pane: its window closes, events or not
        if any(p < end for p in panes):  # sliding: these panes belong to the next window too
            self._due.setdefault(end + hop, set()).add(key)
        state.last_ts = end
        if not isinstance(self.store, dict):
            self.store[key] = state  # a table-backed store persists the change
        return finding

    def flush(self, until: int | None = None) -> list[Finding]:
        """Close every window holding events: the input has ended, nothing more can
        arrive (a deadline beyond the last event is not reached: no time passes). With
        `until`, the latest event time the stream reached, windows past its own are left
        open: what they hold is an outlier's, far ahead of the stream."""
        if self._last_pane == NO_TIME:
            return []
        with ending(self.stage):
            return self.advance(flush_end(self.stage, self._last_pane, until))

    def evict_idle(self, watermark: int) -> int:
        """Forget keys with no open panes (nor counts waiting for one) that have been idle
        for the stage's ttl."""
        cutoff = watermark - self.stage.idle_ttl_ms
        pending = set().union(*self._counts.values())
        idle = [
            k
            for k, s in self.store.items()
            if not s.panes and s.last_ts < cutoff and k not in pending
        ]
        for key in idle:
            del self.store[key]
        return len(idle)
