"""Whole-window stages, and the embedded runtime's runner for them: one event list per pane.

A stage that sees most events (every click, on a long tail of items and owners) pays,
under `KeyedRunner`, a key lookup, a pane lookup and a call per event. A whole-window
stage (`WholeWindowStage`) instead has the embedded runtime keep, per pane, the batches of
events as they came (an append per batch, no work per event), and judges each closed
window's events at once with `judge`, where counting and grouping run in C
(`collections.Counter`, `itertools.compress`) and per-key work is left for the few keys
that need a look. The per-key models live in the same kind of store as `KeyedRunner`'s
(`KeyState` by key, without panes), so eviction and introspection are the same.

The distributed runtime runs the same stage under `TableRunner`, a pane per key (its
state must go to a table per key); `evaluate` then judges one key's events with the same
`judge`, so both runtimes find the same things.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, MutableMapping, Sequence
from itertools import chain
from typing import Any, ClassVar, Protocol

from pipeline.contract.findings import Finding
from pipeline.core.derived import Derived
from pipeline.core.stage import (
    KeyState,
    Stage,
    ending,
    flush_end,
    split_by_pane,
    wake_pane,
    wakes,
)


class Models(Protocol):
    """Where `judge` finds a key's model."""

    def get(self, key: str, create: bool) -> Any:
        """The key's model; a new one if it has none and `create`, else None."""
        ...


class StoreModels:
    """Models from a runner's store, created on demand, stamped with the window's end so
    idle keys can be evicted."""

    __slots__ = ("end", "new_model", "store")

    def __init__(self, store: MutableMapping[str, KeyState], new_model: Any, end: int) -> None:
        self.store = store
        self.new_model = new_model
        self.end = end

    def get(self, key: str, create: bool) -> Any:
        state = self.store.get(key)
        if state is None:
            if not create:
                return None
            state = self.store[key] = KeyState(self.new_model())
        state.last_ts = self.end
        return state.model


class OneModel:
    """The models `evaluate` offers for one key's window: that key's, nothing else."""

    __slots__ = ("key", "model")

    def __init__(self, key: str, model: Any) -> None:
        self.key = key
        self.model = model

    def get(self, key: str, create: bool) -> Any:
        return self.model if key == self.key else None


def events_of(panes: list[list[Any]]) -> list[Any]:
    """A window's events from its panes' lists."""
    return panes[0] if len(panes) == 1 else list(chain.from_iterable(panes))


class WholeWindowStage(Stage):
    """A stage that judges a window's events all at once (`judge`), for every key in the
    embedded runtime (`WindowRunner`), for one key in the distributed one (`evaluate`).

    Its panes are lists of events, unless it `folds`: then each batch of a pane is reduced
    as it comes (`fold`), while its events are still in the CPU's caches, and `judge` gets
    a window's folds. (Reading a field of every event at a window's close, minutes after
    decoding, costs a cache miss per event.) A folding stage's `new_pane` and `add` make
    and grow one key's fold, the distributed runtime's pane.
    """

    folds: ClassVar[bool] = False  # True: a pane is one fold (`fold`), not a list of events

    def new_pane(self) -> list[Any]:
        return []

    def add(self, pane: list[Any], event: Any) -> None:
        pane.append(event)  # a pane per key: the distributed runtime's `TableRunner`

    def fold(self, events: list[Any], kind: str | None = None, into: Any = None) -> Any:
        """A batch of a pane's events, reduced to what `judge` needs (`folds` stages) and
        folded into `into`, the pane's fold so far, if given (so a pane holds one fold,
        however many batches it took); `kind`: the type of every event of the batch,
        when the caller knows it has one."""
        raise NotImplementedError(f"{self.detector} does not fold")

    def window_of(self, panes: list[Any]) -> list[Any]:
        """What `judge` gets of a window's panes: their folds, or their events in order."""
        return panes if self.folds else events_of(panes)

    def evaluate(
        self, key: str, model: Any, panes: list[Any], start: int, end: int
    ) -> Sequence[Finding | Derived]:
        """One key's window (the distributed runtime), judged as the embedded runtime
        judges every key's at once."""
        return self.judge(self.window_of(panes), OneModel(key, model), start, end)

    @abstractmethod
    def judge(
        self, window: list[Any], models: Models, start: int, end: int
    ) -> Sequence[Finding | Derived]:
        """Judge the closed window [start, end): its events (or folds) of every key whose
        model `models` offers, updating those models; the findings and derived records."""


class WindowRunner:
    """`KeyedRunner`'s interface (add_batch, advance, flush, evict_idle) for a
    whole-window stage: panes hold batches of events for every key at once."""

    def __init__(
        self, stage: WholeWindowStage, store: MutableMapping[str, KeyState] | None = None
    ) -> None:
        self.stage = stage
        self.store: MutableMapping[str, KeyState] = {} if store is None else store
        self.panes: dict[int, list[list[Any]]] = {}  # pane start -> batches of its events
        self._due: set[int] = set()  # ends of windows holding events, not yet closed
        self._wakes: dict[int, bool] = {}  # ends of windows a key's deadline keeps open

    def __len__(self) -> int:
        return len(self.store)

    def add_batch(
        self,
        events: Iterable[Any],
        span: tuple[int, int] | None = None,
        kind: str | None = None,
    ) -> None:
        """Keep a batch's events (or their folds) in their panes; `kind`: the one type of
        every event of the batch, when the caller knows it (see `WholeWindowStage.fold`)."""
        events = events if isinstance(events, list) else list(events)
        if not events:
            return
        for start, pane_events in split_by_pane(events, self.stage.window.hop_ms, span).items():
            self._add(start, pane_events, kind)

    def _add(self, pane_start: int, events: list[Any], kind: str | None = None) -> None:
        batches = self.panes.get(pane_start)
        if batches is None:
            batches = self.panes[pane_start] = []
            size, hop = self.stage.window
            self._due.update(range(pane_start + hop, pane_start + size + 1, hop))
        if not self.stage.folds:
            batches.append(events)
        elif batches:  # one fold per pane: the batch goes into the pane's fold
            batches[0] = self.stage.fold(events, kind, batches[0])
        else:
            batches.append(self.stage.fold(events, kind))

    def advance(self, watermark: int) -> list[Finding]:
        """Close, in order, every window whose end the watermark has passed."""
        findings: list[Finding] = []
        size, hop = self.stage.window
        while self._due:
            end = min(self._due)
            if end > watermark:
                break
            self._due.discard(end)
            start = end - size
            batches = [b for p in sorted(self.panes) if start <= p < end for b in self.panes[p]]
            window = self.stage.window_of(batches)
            woken = self._wakes.pop(end, None)
            if window or woken:
                models = StoreModels(self.store, self.stage.new_model, end)
                findings.extend(self.stage.judge(window, models, start, end))
                if wakes(self.stage):
                    findings.extend(self._wake(end))
            for p in [p for p in self.panes if p < end + hop - size]:
                del self.panes[p]
        return findings

    def _wake(self, end: int) -> list[Any]:
        """Call `on_wake` for the keys whose deadline has come (in key order), then keep
        open the windows the next deadlines fall in (`Stage.wake_at`), as the distributed
        runtime does with an empty pane per key."""
        stage, hop = self.stage, self.stage.window.hop_ms
        out: list[Any] = []
        for key in sorted(self.store):
            state = self.store[key]
            due = stage.wake_at(state.model)
            if due is not None and due <= end:
                out.extend(stage.on_wake(key, state.model, end))
            wake = wake_pane(stage, state.model, end)
            if wake is not None:
                self._wakes[wake + hop] = True
                self._due.add(wake + hop)
        return out

    def flush(self, until: int | None = None) -> list[Finding]:
        """Close every window holding events, as `KeyedRunner.flush` does."""
        if not self.panes:
            return []
        with ending(self.stage):
            return self.advance(flush_end(self.stage, max(self.panes), until))

    def evict_idle(self, watermark: int) -> int:
        """Forget keys not judged for the stage's ttl."""
        cutoff = watermark - self.stage.idle_ttl_ms
        idle = [k for k, s in self.store.items() if s.last_ts < cutoff]
        for key in idle:
            del self.store[key]
        return len(idle)
