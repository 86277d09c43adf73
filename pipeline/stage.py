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
from collections.abc import Iterable, MutableMapping
from typing import Any, ClassVar, NamedTuple

from pipeline.findings import Finding


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
    window, and (distributed runtime only) the event ids already counted per open pane."""

    __slots__ = ("last_ts", "model", "panes", "seen_ids")

    def __init__(self, model: Any) -> None:
        self.panes: dict[int, Any] = {}
        self.model = model
        self.last_ts = 0
        self.seen_ids: dict[int, set[str]] | None = None

    def __getstate__(self) -> tuple[dict[int, Any], Any, int, dict[int, set[str]] | None]:
        return self.panes, self.model, self.last_ts, self.seen_ids

    def __setstate__(
        self, state: tuple[dict[int, Any], Any, int, dict[int, set[str]] | None]
    ) -> None:
        self.panes, self.model, self.last_ts, self.seen_ids = state


class Stage(ABC):
    """A detector's per-key logic. Subclasses set the class attributes and four methods."""

    detector: ClassVar[str]
    key_field: ClassVar[str]
    event_types: ClassVar[frozenset[str]]

    def __init__(self, window: WindowSpec, idle_ttl_ms: int) -> None:
        self.window = window
        self.idle_ttl_ms = idle_ttl_ms

    @abstractmethod
    def new_model(self) -> Any:
        """Fresh per-key model state (the key's history), created on its first event."""

    @abstractmethod
    def new_pane(self) -> Any:
        """An empty per-pane accumulator."""

    @abstractmethod
    def add(self, pane: Any, event: Any) -> None:
        """Fold one event into a pane. This is the hot path: keep it to a few operations."""

    @abstractmethod
    def evaluate(
        self, key: str, model: Any, panes: list[Any], start: int, end: int
    ) -> Finding | None:
        """Judge the closed window [start, end) of one key, update its model, maybe find."""


class KeyedRunner:
    """Runs one stage over batches of events: state per key, windows closed by watermark."""

    def __init__(self, stage: Stage, store: MutableMapping[str, KeyState] | None = None) -> None:
        self.stage = stage
        self.store: MutableMapping[str, KeyState] = {} if store is None else store
        self._due: dict[int, set[str]] = {}  # window end -> keys with panes in that window

    def __len__(self) -> int:
        return len(self.store)

    def add_batch(self, events: Iterable[Any]) -> None:
        stage, store, due = self.stage, self.store, self._due
        add, new_pane, new_model = stage.add, stage.new_pane, stage.new_model
        key_field = stage.key_field
        hop = stage.window.hop_ms
        for event in events:
            key = getattr(event, key_field)
            state = store.get(key)
            if state is None:
                state = store[key] = KeyState(new_model())
            ts = event.ts
            pane_start = ts - ts % hop
            pane = state.panes.get(pane_start)
            if pane is None:
                pane = state.panes[pane_start] = new_pane()
                end = pane_start + hop
                keys = due.get(end)
                if keys is None:
                    due[end] = {key}
                else:
                    keys.add(key)
            add(pane, event)

    def advance(self, watermark: int) -> list[Finding]:
        """Close, in order, every window whose end the watermark has passed."""
        findings: list[Finding] = []
        due = self._due
        while due:
            end = min(due)
            if end > watermark:
                break
            for key in due.pop(end):
                finding = self._close(key, end)
                if finding is not None:
                    findings.append(finding)
        return findings

    def _close(self, key: str, end: int) -> Finding | None:
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
        if any(p < end for p in panes):  # sliding: these panes belong to the next window too
            self._due.setdefault(end + hop, set()).add(key)
        state.last_ts = end
        if not isinstance(self.store, dict):
            self.store[key] = state  # a table-backed store persists the change
        return finding

    def flush(self) -> list[Finding]:
        """Close every open window: the input has ended, nothing more can arrive."""
        return self.advance(max(self._due, default=0) + self.stage.window.size_ms)

    def evict_idle(self, watermark: int) -> int:
        """Forget keys with no open panes that have been idle for the stage's ttl."""
        cutoff = watermark - self.stage.idle_ttl_ms
        idle = [k for k, s in self.store.items() if not s.panes and s.last_ts < cutoff]
        for key in idle:
            del self.store[key]
        return len(idle)
