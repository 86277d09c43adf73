"""The distributed runtime's logic, free of Faust so it can be tested on its own.

Ingest (any worker, any input partition): one `Gate` per input partition decodes,
validates, de-duplicates and watermarks that partition; admitted events are packed, per
stage and per stage partition, into `StageBatch` records that also carry the ingest
side's watermark of every input partition it owns.

Stage (the worker owning stage partition p): a `StagePartition` holds the stage's
`KeyedRunner` over a write-back cache of the Faust table, and derives its watermark from
the upstream watermarks: once every input partition has reported, the minimum over the
partitions that are not idle (or, when all are idle, the maximum). No input
partition can then deliver an on-time event below it, so windows hold exactly what the
embedded runtime would put in them. Redeliveries after a crash are dropped per window
pane by event_id, and events for windows a key has already closed are late.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, MutableMapping
from typing import Any

import msgspec

from pipeline.deadletter import DeadLetter, dead_letter
from pipeline.events import NO_TIME, AnyEvent, Event
from pipeline.findings import Finding
from pipeline.gate import Admitted, Gate
from pipeline.settings import Settings
from pipeline.stage import KeyedRunner, KeyState, Stage, custom_key_of
from pipeline.topics import Topics


class StageBatch(msgspec.Struct, gc=False):
    """One record on a stage topic: events for keys of one partition, and upstream progress.

    `watermarks` maps an input partition ("topic:partition") to (watermark, idle).
    """

    events: list[AnyEvent]
    watermarks: dict[str, tuple[int, bool]]


_encode_batch = msgspec.msgpack.Encoder().encode
decode_batch = msgspec.msgpack.Decoder(StageBatch).decode


class Ingest:
    """Gates per input partition, and the packing of their output for each stage."""

    def __init__(self, settings: Settings, stages: list[Stage], topics: Topics) -> None:
        self.settings = settings
        self.stages = stages
        self.topics = topics
        self.gates: dict[str, Gate] = {}

    def admit(self, tp: str, raws: list[bytes], offsets: list[int]) -> Admitted:
        gate = self.gates.get(tp)
        if gate is None:
            gate = self.gates[tp] = Gate(self.settings)
        return gate.admit(raws, tp, positions=offsets)

    def pack(
        self, admitted: list[Admitted], progress: dict[str, bool], max_events: int = 1000
    ) -> Iterator[tuple[str, int, bytes]]:
        """(stage topic, partition, record) for every stage partition: each one hears the
        watermarks even when no event of this batch is for it. `progress` maps each input
        partition this worker owns to whether it is idle.

        A partition's events are cut into records of at most `max_events` (records stay
        well under the broker's size limit); only the last one carries the watermarks,
        so no event of the batch arrives after the watermark its admission produced."""
        watermarks = {
            tp: ((self.gates[tp].watermark if tp in self.gates else NO_TIME), idle)
            for tp, idle in progress.items()
        }
        partitions = self.topics.partitions
        partition_of = self.topics.partition_of
        for stage in self.stages:
            buckets: list[list[Event]] = [[] for _ in range(partitions)]
            key_field = stage.key_field
            key_of = custom_key_of(stage)
            for batch in admitted:
                for event_type in stage.event_types:
                    if key_of is not None:
                        for event in batch.by_type[event_type]:
                            buckets[partition_of(key_of(event))].append(event)
                        continue
                    for event in batch.by_type[event_type]:
                        buckets[partition_of(getattr(event, key_field))].append(event)
            topic = self.topics.stage(stage.detector)
            for partition, events in enumerate(buckets):
                while len(events) > max_events:
                    yield topic, partition, _encode_batch(StageBatch(events[:max_events], {}))
                    events = events[max_events:]
                yield topic, partition, _encode_batch(StageBatch(events, watermarks))


class TableCache(MutableMapping[str, KeyState]):
    """A write-back cache in front of a Faust table of pickled states (any mapping of
    bytes works in tests).

    Reads go to the cache, then the table; writes stay in the cache until `flush`, which
    sends each changed key to the table (one changelog record per key per batch) and
    drops from memory the keys with no open window, so the table (RocksDB) holds the rest.
    The table only ever holds what Lockstep workers pickled themselves.
    """

    def __init__(self, table: MutableMapping[str, bytes], owns: Any) -> None:
        self.table = table
        self.owns = owns  # key -> bool: whether the key belongs to this partition
        self.cache: dict[str, KeyState] = {}
        self.dirty: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        state = self.cache.get(key)
        if state is None:
            stored = self.table.get(key)
            if stored is None:
                return default
            state = self.cache[key] = pickle.loads(stored)
        return state

    def __getitem__(self, key: str) -> KeyState:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state

    def __setitem__(self, key: str, state: KeyState) -> None:
        self.cache[key] = state
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        self.cache.pop(key, None)
        self.dirty.discard(key)
        if key in self.table:
            del self.table[key]

    def __iter__(self) -> Iterator[str]:
        seen = set(self.cache)
        yield from list(self.cache)
        for key in list(self.table.keys()):
            if key not in seen and self.owns(key):
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> None:
        for key in self.dirty:
            self.table[key] = pickle.dumps(self.cache[key], protocol=pickle.HIGHEST_PROTOCOL)
        self.dirty.clear()
        for key in [k for k, s in self.cache.items() if not s.panes]:
            del self.cache[key]


class TableRunner(KeyedRunner):
    """A KeyedRunner that tolerates the redeliveries of at-least-once processing: it keeps,
    per key and pane, the ids it has counted, for `horizon_ms` after the pane closes, so a
    record delivered again after a crash or a rebalance counts as a duplicate, not twice
    and not as late."""

    store: TableCache

    def __init__(self, stage: Stage, store: TableCache, horizon_ms: int) -> None:
        super().__init__(stage, store)
        self.horizon_ms = horizon_ms
        self.duplicates = 0
        self.restore()

    def restore(self) -> None:
        """Re-arm the window timers of this partition's keys from the table's state."""
        hop = self.stage.window.hop_ms
        for key in self.store:
            state = self.store.get(key)
            if state is not None:
                for pane in state.panes:  # each open pane's first window, as add_batch does
                    self._due.setdefault(pane + hop, set()).add(key)

    def filter(self, events: list[Any], watermark: int) -> tuple[list[Any], list[Any]]:
        """(fresh events, late events); redeliveries are counted in `duplicates`. Every
        touched key is marked for write-back."""
        hop = self.stage.window.hop_ms
        key_field = self.stage.key_field
        key_of = custom_key_of(self.stage)
        store = self.store
        fresh, late = [], []
        for event in events:
            key = getattr(event, key_field) if key_of is None else key_of(event)
            state = store.get(key)
            if state is None:
                state = store[key] = KeyState(self.stage.new_model())
            if state.seen_ids is None:
                state.seen_ids = {}
            pane = event.ts - event.ts % hop
            ids = state.seen_ids.get(pane)
            if ids is not None and event.event_id in ids:
                self.duplicates += 1
                continue
            if event.ts < watermark or pane + hop <= state.last_ts:
                late.append(event)
                continue
            if ids is None:
                ids = state.seen_ids[pane] = set()
            ids.add(event.event_id)
            store.dirty.add(key)
            fresh.append(event)
        return fresh, late

    def _close(self, key: str, end: int) -> Finding | list[Finding] | None:
        finding = super()._close(key, end)
        state = self.store.get(key)
        if state is not None and state.seen_ids:
            forget_before = end - self.horizon_ms
            for pane in [p for p in state.seen_ids if p < forget_before]:
                del state.seen_ids[pane]
        return finding


class StagePartition:
    """One partition of one stage, as owned by one worker."""

    def __init__(
        self,
        stage: Stage,
        store: TableCache,
        expected_inputs: set[str],
        horizon_ms: int,
        keep_raw: int,
    ) -> None:
        self.runner = TableRunner(stage, store, horizon_ms)
        self.expected = expected_inputs
        self.upstream: dict[str, tuple[int, bool]] = {}
        self.watermark = NO_TIME
        self.keep_raw = keep_raw

    def apply(self, batch: StageBatch, source: str) -> tuple[list[Finding], list[DeadLetter]]:
        fresh, late = self.runner.filter(batch.events, self.watermark)
        self.runner.add_batch(fresh)
        for tp, (mark, idle) in batch.watermarks.items():
            old = self.upstream.get(tp)
            self.upstream[tp] = (mark if old is None else max(old[0], mark), idle)
        self.watermark = max(self.watermark, self._upstream_watermark())
        findings = self.runner.advance(self.watermark)
        dead = [
            dead_letter(
                "late",
                f"event time {e.ts} is behind the stage watermark {self.watermark}",
                source,
                e.event_id,
                msgspec.json.encode(e),
                self.keep_raw,
            )
            for e in late
        ]
        return findings, dead

    def _upstream_watermark(self) -> int:
        if not self.expected <= self.upstream.keys():
            return NO_TIME  # an input partition has not been heard from yet
        busy = [mark for mark, idle in self.upstream.values() if not idle]
        if busy:
            return min(busy)
        return max(mark for mark, _ in self.upstream.values())
