"""The distributed runtime's logic, free of Faust so it can be tested on its own.

Ingest (any worker, any input partition): one `Gate` per input partition decodes,
validates, de-duplicates and watermarks that partition; admitted events are packed, per
stage and per stage partition, into `StageBatch` records that also carry the ingest
side's watermark of every input partition it owns.

Stage (the worker owning stage partition p): a `StagePartition` holds the stage's
`KeyedRunner` over a write-back cache of the Faust table, and derives its watermark from
the upstream watermarks: once every input partition has reported, their minimum. A
partition read to its end reports what its worker vouches for (see
`pipeline/distributed/ingest_loop.py`), so no input partition can deliver an on-time
event below that minimum, and windows hold exactly what the embedded runtime would put
in them. One guess remains, so that a quiet worker cannot stall every window: a
partition read to its end that has stood still for `kafka.idle_after_s` while input
elsewhere moved past it stops holding it (its later events may be late).

Redeliveries (an input re-read from its last committed offset after a crash or a
rebalance, a stage record consumed again) are told from new events by input position:
every event travels with its input partition and offset, and each key's state keeps the
highest offset it has applied per input partition. One input partition's events reach a
key in offset order, so an offset at or below that mark is a redelivery, however far
back in event time the re-read starts; the mark is written with the key's state, in the
same table record. Only then are events for windows a key has already closed late.
"""

from __future__ import annotations

import math
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from operator import attrgetter
from typing import Any

import msgspec

from pipeline.contract.deadletter import DeadLetter, dead_letter
from pipeline.contract.events import NO_TIME, AnyEvent, Event
from pipeline.contract.findings import Finding
from pipeline.core.derived import Derived
from pipeline.core.gate import Admitted, Gate
from pipeline.core.settings import Settings
from pipeline.core.stage import KeyedRunner, KeyState, Stage, custom_admits, custom_key_of
from pipeline.distributed.topics import Topics


class StageBatch(msgspec.Struct, gc=False):
    """One record on a stage topic: events for keys of one partition, and upstream progress.

    `watermarks` maps an input partition ("topic:partition") to (watermark, read to its
    end).
    `offsets` holds each event's input offset and `sources` the input partitions they
    came from, as runs of (input partition, number of events); both are empty when the
    events carry no position.
    """

    events: list[AnyEvent | Derived]
    watermarks: dict[str, tuple[int, bool]]
    sources: list[tuple[str, int]] = []
    offsets: list[int] = []


_encode_batch = msgspec.msgpack.Encoder().encode
decode_batch = msgspec.msgpack.Decoder(StageBatch).decode


class Ingest:
    """Gates per input partition, and the packing of their output for each stage."""

    def __init__(self, settings: Settings, stages: list[Stage], topics: Topics) -> None:
        self.settings = settings
        self.stages = stages
        self.topics = topics
        self.gates: dict[str, Gate] = {}

    def gate(self, tp: str) -> Gate:
        """Input partition `tp`'s gate (new the first time)."""
        gate = self.gates.get(tp)
        if gate is None:
            gate = self.gates[tp] = Gate(self.settings)
        return gate

    def watermark(self, tp: str) -> int:
        """Input partition `tp`'s own watermark (NO_TIME before it has a gate)."""
        gate = self.gates.get(tp)
        return NO_TIME if gate is None else gate.watermark

    def busy(self, tp: str) -> dict[str, tuple[int, bool]]:
        """`tp`'s progress as a partition still being read (for `pack`)."""
        return {tp: (self.watermark(tp), False)}

    def admit(self, tp: str, raws: list[bytes], offsets: list[int]) -> Admitted:
        admitted = self.gate(tp).admit(raws, tp, positions=offsets)
        admitted.source = tp
        return admitted

    def pack(
        self,
        admitted: list[Admitted],
        progress: dict[str, tuple[int, bool]],
        max_events: int = 1000,
    ) -> Iterator[tuple[str, int, bytes]]:
        """(stage topic, partition, record) for every stage partition: each one hears the
        watermarks even when no event of this batch is for it. `progress` maps each input
        partition this worker owns to its watermark and whether it is read to its end.

        A partition's events are cut into records of at most `max_events` (records stay
        well under the broker's size limit); only the last one carries the watermarks,
        so no event of the batch arrives after the watermark its admission produced."""
        watermarks = progress
        partitions = self.topics.partitions
        partition_of = self.topics.partition_of
        for stage in self.stages:
            buckets = [_Bucket() for _ in range(partitions)]
            key_of = custom_key_of(stage) or attrgetter(stage.key_field)
            admits = custom_admits(stage)
            for batch in admitted:
                if batch.offsets is None:
                    raise ValueError("stage records need the input offsets of their events")
                counts = [0] * partitions
                events, offsets = _in_input_order(batch, stage.event_types)
                for event, offset in zip(events, offsets, strict=True):
                    if admits is not None and not admits(event):
                        continue
                    p = partition_of(key_of(event))
                    bucket = buckets[p]
                    bucket.events.append(event)
                    bucket.offsets.append(offset)
                    counts[p] += 1
                for p, count in enumerate(counts):
                    if count:
                        buckets[p].sources.append((batch.source, count))
            topic = self.topics.stage(stage.detector)
            for partition, bucket in enumerate(buckets):
                for record in bucket.records(watermarks, max_events):
                    for data in _encoded(record, STAGE_RECORD_BYTES):
                        yield topic, partition, data


def pack_derived(
    derived: list[Derived],
    producer: Stage,
    source: str,
    watermark: int,
    stages: list[Stage],
    topics: Topics,
    max_bytes: int = 512 << 10,
) -> Iterator[tuple[str, int, bytes]]:
    """(stage topic, partition, record) carrying the derived records of one partition
    (`source`) of `producer` to the stages consuming its streams, by their key's
    partition, with its watermark to every partition of those stages (each hears it,
    records or not). A
    record's input position is its time: the records one window close produces for a key
    travel together in one record, so a replay of that close after a crash is told by
    time alone (see `TableRunner.filter`)."""
    marks = {source: (watermark, False)}
    for stage in stages:
        if not stage.streams & producer.emits:
            continue
        buckets: list[list[Derived]] = [[] for _ in range(topics.partitions)]
        key_of = custom_key_of(stage) or attrgetter(stage.key_field)
        for d in derived:
            if d.stream in stage.streams:
                buckets[topics.partition_of(key_of(d))].append(d)
        topic = topics.stage(stage.detector)
        for partition, mine in enumerate(buckets):
            group = _by_key_and_time(key_of)
            for record in _derived_records(mine, marks, source, max_bytes, group):
                yield topic, partition, record


def _derived_records(
    derived: list[Derived],
    marks: dict[str, tuple[int, bool]],
    source: str,
    max_bytes: int,
    group: Callable[[Derived], tuple[str, int]],
) -> Iterator[bytes]:
    """One partition's derived records as stage records of at most about `max_bytes` (a
    backlog closes many windows in one round; a broker refuses records over its limit).
    The records of one key (of the consuming stage) and time stay in one stage record (a
    redelivery is told by time: see `TableRunner.filter`), and only the last stage record
    carries the watermark, so none arrives behind the watermark it goes with."""
    record = _encode_batch(
        StageBatch(derived, marks, [(source, len(derived))] if derived else [],
                   [d.ts for d in derived])  # type: ignore[arg-type]
    )  # fmt: skip
    if len(record) <= max_bytes or len(derived) < 2:
        yield record
        return
    derived = sorted(derived, key=group)
    cut = len(derived) // 2
    while cut < len(derived) and group(derived[cut]) == group(derived[cut - 1]):
        cut += 1  # never between two records of one key and time
    if cut == len(derived):
        cut = len(derived) // 2
        while cut > 0 and group(derived[cut]) == group(derived[cut - 1]):
            cut -= 1
    if cut == 0:  # one key at one time: it cannot be cut
        yield record
        return
    yield from _derived_records(derived[:cut], {}, source, max_bytes, group)
    yield from _derived_records(derived[cut:], marks, source, max_bytes, group)


def _by_key_and_time(key_of: Callable[[Any], str]) -> Callable[[Derived], tuple[str, int]]:
    """A derived record's key in the consuming stage, and its time."""
    return lambda d: (key_of(d), d.ts)


def upstream_sources(stage: Stage, stages: list[Stage], topics: Topics) -> set[str]:
    """The stage partitions whose derived records (and watermarks) `stage` waits for."""
    producers = [s for s in stages if s.emits & stage.streams]
    return {f"{topics.stage(s.detector)}:{p}" for s in producers for p in range(topics.partitions)}


def _in_input_order(batch: Admitted, event_types: Iterable[str]) -> tuple[list, list[int]]:
    """A batch's events of these types, with their offsets, in the order they were read:
    a key's events from one input partition must reach it in offset order."""
    assert batch.offsets is not None
    types = [t for t in event_types if batch.by_type[t]]
    if len(types) <= 1:
        return (batch.by_type[types[0]], batch.offsets[types[0]]) if types else ([], [])
    events = [e for t in types for e in batch.by_type[t]]
    offsets = [o for t in types for o in batch.offsets[t]]
    order = sorted(range(len(offsets)), key=offsets.__getitem__)
    return [events[i] for i in order], [offsets[i] for i in order]


class _Bucket:
    """One stage partition's share of a batch, with the input position of every event."""

    __slots__ = ("events", "offsets", "sources")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.offsets: list[int] = []
        self.sources: list[tuple[str, int]] = []

    def records(
        self, watermarks: dict[str, tuple[int, bool]], max_events: int
    ) -> Iterator[StageBatch]:
        """The bucket cut into records of at most `max_events`; the last one carries the
        watermarks (it goes out even when empty, so every stage partition hears them)."""
        events, offsets = self.events, self.offsets
        runs = [[source, count] for source, count in self.sources]
        start = 0
        while len(events) - start > max_events:
            end = start + max_events
            yield StageBatch(events[start:end], {}, _take(runs, max_events), offsets[start:end])
            start = end
        rest = [(source, count) for source, count in runs if count]
        yield StageBatch(events[start:], watermarks, rest, offsets[start:])


STAGE_RECORD_BYTES = 512 << 10  # a stage record at most (the broker's limit is 1 MiB)


def _encoded(batch: StageBatch, max_bytes: int) -> Iterator[bytes]:
    """`batch` as one record, or as several in order if it would exceed `max_bytes`
    (events near `input.max_event_bytes` each); the last one carries the watermarks."""
    data = _encode_batch(batch)
    if len(data) <= max_bytes or len(batch.events) <= 1:
        yield data
        return
    half = len(batch.events) // 2
    runs = [[source, count] for source, count in batch.sources]
    first = StageBatch(batch.events[:half], {}, _take(runs, half), batch.offsets[:half])
    rest = [(source, count) for source, count in runs if count]
    last = StageBatch(batch.events[half:], batch.watermarks, rest, batch.offsets[half:])
    yield from _encoded(first, max_bytes)
    yield from _encoded(last, max_bytes)


def _take(runs: list[list], n: int) -> list[tuple[str, int]]:
    """The first `n` events' runs of (source, count), consumed from `runs`."""
    taken = []
    for run in runs:
        if n == 0:
            break
        if run[1] == 0:
            continue
        step = min(n, run[1])
        taken.append((run[0], step))
        run[1] -= step
        n -= step
    return taken


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
    """A KeyedRunner that tolerates the redeliveries of at-least-once processing: an
    event at or below its key's applied offset for its input partition was counted
    before a crash or a rebalance, and counts as a duplicate, not twice and not late."""

    store: TableCache

    def __init__(self, stage: Stage, store: TableCache) -> None:
        super().__init__(stage, store)
        self.duplicates = 0
        self.restore()

    def restore(self) -> None:
        """Re-arm the window timers of this partition's keys from the table's state: each
        open pane's first window not yet closed for its key. (A sliding window keeps
        panes whose first windows closed already; arming those would judge them again.)"""
        hop = self.stage.window.hop_ms
        for key in self.store:
            state = self.store.get(key)
            if state is not None:
                for pane in state.panes:
                    self._due.setdefault(max(pane, state.last_ts) + hop, set()).add(key)
                    self._last_pane = max(self._last_pane, pane)

    def filter(self, batch: StageBatch, watermark: int) -> tuple[list[Any], list[Any]]:
        """(fresh events, late events) of a stage record; redeliveries are counted in
        `duplicates`. Every touched key is marked for write-back."""
        hop = self.stage.window.hop_ms
        key_field = self.stage.key_field
        key_of = custom_key_of(self.stage)
        store = self.store
        events, offsets = batch.events, batch.offsets
        fresh, late = [], []
        start = 0
        runs = batch.sources or [("", len(events))]  # no sources: positions unknown
        for source, count in runs:
            if not count:
                continue
            source = sys.intern(source)
            # Derived records carry their time as position, and several share one time:
            # each is judged against its key's mark as it stood before this record.
            before: dict[str, int] | None = {} if events[start].__class__ is Derived else None
            for i in range(start, start + count):
                event = events[i]
                key = getattr(event, key_field) if key_of is None else key_of(event)
                state = store.get(key)
                if state is None:
                    state = store[key] = KeyState(self.stage.new_model())
                if source:
                    applied = state.applied
                    if applied is None:
                        applied = state.applied = {}
                    mark = applied.get(source, -1)
                    if before is not None:
                        mark = before.setdefault(key, mark)
                    if offsets[i] <= mark:
                        self.duplicates += 1
                        continue
                    if offsets[i] > applied.get(source, -1):
                        applied[source] = offsets[i]
                store.dirty.add(key)
                if event.ts < watermark or event.ts - event.ts % hop + hop <= state.last_ts:
                    late.append(event)
                    continue
                fresh.append(event)
            start += count
        return fresh, late


PAUSE_SHARE = 0.2  # of `hold_s`: the most a gap between two moves of the input counts


class StagePartition:
    """One partition of one stage, as owned by one worker."""

    def __init__(
        self,
        stage: Stage,
        store: TableCache,
        expected_inputs: set[str],
        keep_raw: int,
        hold_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = TableRunner(stage, store)
        self.expected = expected_inputs
        self.upstream: dict[str, tuple[int, bool]] = {}  # (watermark, read to its end)
        self.watermark = NO_TIME
        self.keep_raw = keep_raw
        self.hold_s = hold_s  # `kafka.idle_after_s`
        self.clock = clock
        self._held_s: dict[str, float] = {}  # how long each has stood still, passed
        self._passed_at: dict[str, float] = {}  # and since when
        self._heard_at: dict[str, float] = {}  # when each was last reported
        self._last_rise: float | None = None

    def apply(self, batch: StageBatch, source: str) -> tuple[list[Finding], list[DeadLetter]]:
        fresh, late = self.runner.filter(batch, self.watermark)
        self.runner.add_batch(fresh)
        self._hear(batch.watermarks)
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

    def _hear(self, watermarks: dict[str, tuple[int, bool]]) -> None:
        """Take in upstream progress. Each time input moves on, every partition read to
        its end and passed by it has stood still a little longer (see
        `_upstream_watermark`)."""
        upstream = self.upstream
        holding = self._held_s
        risen = NO_TIME
        now = self.clock()
        for tp, (mark, ended) in watermarks.items():
            self._heard_at[tp] = now
            old = upstream.get(tp)
            rose = old is None or mark > old[0]
            if rose:
                risen = max(risen, mark)
            else:
                mark = old[0]
            if rose or not ended:
                holding.pop(tp, None)
                self._passed_at.pop(tp, None)
            upstream[tp] = (mark, ended)
        if risen == NO_TIME:
            return
        last, self._last_rise = self._last_rise, now
        # a pause of the whole stream counts as one short step, not as standing still
        step = 0.0 if last is None else min(now - last, self.hold_s * PAUSE_SHARE)
        for tp, (mark, ended) in upstream.items():
            if tp in holding:
                if self._speaking(tp, now):  # a worker gone (killed) is not a quiet one
                    holding[tp] += step
            elif ended and mark < risen and tp not in watermarks:
                holding[tp] = 0.0
                self._passed_at[tp] = now

    def _upstream_watermark(self) -> int:
        """The minimum over the input partitions, but for those read to their end that have
        stood still for `hold_s` of input moving past them: a quiet worker (its
        partitions say nothing, the producer of one event type is down) must not stall
        every window. Time counts only while input moves on elsewhere and the partition's
        worker keeps reporting it, so a stream that pauses and resumes in a burst, or a
        worker killed mid-stream, finds every partition holding as before."""
        if not self.expected <= self.upstream.keys():
            return NO_TIME  # an input partition has not been heard from yet
        now = self.clock()
        counted = [
            mark
            for tp, (mark, ended) in self.upstream.items()
            if not (ended and self._quiet(tp, mark, now))
        ]
        if not counted:  # cannot happen (the furthest is never passed), but never stall
            return max(mark for mark, _ in self.upstream.values())
        return min(counted)

    def _quiet(self, tp: str, mark: int, now: float) -> bool:
        """Whether `tp`, read to its end and passed, has stood still long enough."""
        held = self._held_s.get(tp)
        if held is None:
            return False
        if held >= self.hold_s:
            return True
        # its worker has never read anything: there is no pause to wait out for it
        return (
            mark == NO_TIME and now - self._passed_at[tp] >= self.hold_s and self._speaking(tp, now)
        )

    def _speaking(self, tp: str, now: float) -> bool:
        """Whether `tp`'s worker still reports it (every `batch_wait_s` when quiet): the
        partitions of a worker that died wait for their next owner, never pass."""
        return now - self._heard_at.get(tp, -math.inf) <= self.hold_s * PAUSE_SHARE
