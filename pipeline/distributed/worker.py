"""`lockstep worker`: the stages of the embedded runtime as a Faust app on Kafka.

    input topics (per type) --ingest loop--> stage topics (by stage key) --stage agent-->
        findings, actions, dead letters

The ingest loop (pipeline/distributed/ingest_loop.py) reads the inputs in batches with its own
consumer group, runs a `Gate` per input partition and packs admitted events per stage
partition (pipeline/distributed/runtime.py). Each stage agent keeps its per-key state in a Faust
table (RocksDB by default, changelogged, so a restarted worker recovers it) and runs the
very `Stage` object the embedded runtime runs. Actions are emitted at most once per
action_id: a worker reads the ids already on the actions topic whenever partitions are
assigned to it, before it emits anything. Each stage partition keeps its own position in
its table: records Faust's consumer passes over without delivering them are read back and
applied in order (see `StageAgent`).

Faust and the Kafka clients are imported by the functions that start them, so reading this
module (for `declared_topics`, say) starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import msgspec

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.findings import Action, Finding
from pipeline.core.derived import Derived, split_outputs
from pipeline.core.settings import KafkaSettings, Settings
from pipeline.core.stage import Stage
from pipeline.core.stats import Stats
from pipeline.distributed.runtime import (
    Ingest,
    StagePartition,
    TableCache,
    decode_batch,
    pack_derived,
    upstream_sources,
)
from pipeline.distributed.stopping import Failure
from pipeline.distributed.topics import Topics
from pipeline.enforcement.stage import FINDING_STREAM, finding_records
from pipeline.topology import build_topology

if TYPE_CHECKING:
    import faust

_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)

# Every topic the worker declares carries bytes both ways: the records are msgspec's.
RAW_BYTES: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


class WorkerState:
    """Totals and state sizes of this worker, in the shape the metrics collector reads."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.lock = threading.Lock()
        self.keys: Counter[str] = Counter()
        self.observe_latency: Callable[[float], None] = lambda seconds: None
        self.consumer_lag: Callable[[], dict[str, int]] = dict
        self.failure = Failure()

    def state_size(self) -> dict[str, int]:
        return dict(self.keys)


class _PartitionEvent:
    """What a Faust store asks of the current event: the partition of its message."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


@contextlib.contextmanager
def _at_partition(partition: int) -> Iterator[None]:
    """Writes here go to `partition`'s store. Faust's RocksDB store (one database per
    partition) picks the database from the event being processed, and asserts there is
    one; a stage agent's write-back runs between events, so it names the partition the
    way Faust itself does, through the current-event context variable."""
    from faust import streams  # faust is imported where a worker starts, not before

    event = _PartitionEvent(partition)
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)


class PartitionClosed(RuntimeError):
    """A stage round reached a partition whose state this worker no longer holds."""


PART_BYTES = 512 << 10  # a changelog record at most (Faust's producer takes 1,000,000 bytes)
_HEAD = b"\x00parts:"  # a state stored in parts; a pickle never starts with a NUL byte


def _part_key(key: str, i: int) -> str:
    return f"\x00{key}\x00{i}"  # a NUL first: no event's key, skipped when iterating


class PartitionTable(MutableMapping[str, bytes]):
    """One stage partition's view of a Faust table. A stage agent writes state once per
    round of several records, outside Faust's per-record iteration, where the table
    cannot tell the changelog partition from the current event: here it is explicit.

    A state larger than a changelog record may be (a stage with one key, its window's
    texts and its learned models) is stored in parts of `PART_BYTES`, under keys of
    their own, and a head naming how many."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition
        self._parts: dict[str, int] = {}  # keys stored in parts, and how many
        self._sent: list[Any] = []  # changelog writes not yet known to be acknowledged
        self._opened = False  # whether this view has seen its partition's store open

    async def written(self) -> None:
        """Wait until the broker has acknowledged every changelog write made so far.
        Faust's producer buffers them, and its flush gives up when a write takes over
        0.1 s to leave the buffer: a round acknowledged after that flush alone could
        have its input committed while its state was still unsent (the next owner then
        resumed past events whose counts it never had). A failed write raises here,
        before the round is acknowledged."""
        sent, self._sent = self._sent, []
        if sent:
            await asyncio.gather(*sent)

    def _ensure_open(self) -> None:
        """Refuse to read or write a partition whose store Faust has closed under this
        view (revoked, or the worker stopping). A closed RocksDB partition reads as empty:
        a round that went on would take every key for new and write fresh states over
        their histories. One Faust has not opened yet (a worker's first rounds, before
        its changelog topics are in the assignment) opens at the first write, as before."""
        dbs = getattr(self.table.data, "_dbs", None)  # RocksDB: the open partitions
        if dbs is None:
            return
        if self.partition in dbs:
            self._opened = True
        elif self._opened:
            raise PartitionClosed(
                f"{self.table.name} partition {self.partition} is closed on this worker"
            )

    def __getitem__(self, key: str) -> bytes:
        self._ensure_open()
        value: bytes = self.table.data[key]
        if not value.startswith(_HEAD):
            return value
        n = int(value[len(_HEAD) :])
        self._parts[key] = n
        return b"".join(self.table.data[_part_key(key, i)] for i in range(n))

    def __setitem__(self, key: str, value: bytes) -> None:
        before = self._parts.pop(key, 0)
        n = 0
        if len(value) > PART_BYTES:
            n = -(-len(value) // PART_BYTES)
            for i in range(n):
                self._put(_part_key(key, i), value[i * PART_BYTES : (i + 1) * PART_BYTES])
            self._parts[key] = n
            value = _HEAD + str(n).encode()
        self._put(key, value)
        for i in range(n, before):
            self._drop(_part_key(key, i))

    def __delitem__(self, key: str) -> None:
        for i in range(self._parts.pop(key, 0)):
            self._drop(_part_key(key, i))
        self._drop(key)

    def __iter__(self) -> Iterator[str]:
        self._ensure_open()
        return (k for k in self.table.data if not k.startswith("\x00"))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _put(self, key: str, value: bytes) -> None:
        self._ensure_open()
        self._sent.append(self.table.send_changelog(self.partition, key, value))
        with _at_partition(self.partition):
            self.table.data[key] = value

    def _drop(self, key: str) -> None:
        self._ensure_open()
        self._sent.append(
            self.table.send_changelog(self.partition, key, None, value_serializer="raw")
        )
        with contextlib.suppress(KeyError):
            del self.table.data[key]


class EmittedActions:
    """The action_ids already on the actions topic, re-read after every assignment."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.ids: set[str] = set()
        self.stale = True

    async def on_partitions_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Faust's signal: another worker may have emitted actions for these partitions."""
        self.stale = True

    async def refresh(self) -> None:
        """Read the actions topic to its end (in a thread with its own event loop, so this
        plain consumer stays out of the way of Faust's)."""
        await asyncio.to_thread(asyncio.run, self._read_all())
        self.stale = False

    async def _read_all(self) -> None:
        from pipeline.distributed.kafka_io import read_to_end

        records = await read_to_end(self.bootstrap, self.topic, self.partitions)
        self.ids.update(r.key.decode() for r in records if r.key)

    def new(self, actions: list[Action]) -> list[Action]:
        """Those of `actions` not on the topic yet (nor twice among themselves)."""
        fresh = {a.action_id: a for a in actions if a.action_id not in self.ids}
        return list(fresh.values())

    def sent(self, actions: list[Action]) -> None:
        """`actions` are on the topic (their round is durable). Taken only then: an id
        taken before would stop a round that failed, and is run again, from re-emitting
        an action that never reached the topic."""
        self.ids.update(a.action_id for a in actions)


class Outputs:
    """The findings, actions and dead-letter topics every stage agent writes to."""

    def __init__(self, app: faust.App, topics: Topics, partitions: int) -> None:
        self.findings = app.topic(topics.findings, partitions=partitions, **RAW_BYTES)
        self.actions = app.topic(topics.actions, partitions=partitions, **RAW_BYTES)
        self.dead_letters = app.topic(topics.dead_letters, partitions=partitions, **RAW_BYTES)

    async def send(
        self, findings: list[Finding], actions: list[Action], dead: list[DeadLetter]
    ) -> None:
        for f in findings:
            await self.findings.send(key=f.subject_id.encode(), value=_encode(f))
        for a in actions:
            await self.actions.send(key=a.action_id.encode(), value=_encode(a))
        for d in dead:
            await self.dead_letters.send(value=_encode(d))


@dataclass(frozen=True)
class Wiring:
    """What the stage agents of one worker share."""

    app: faust.App
    settings: Settings
    stages: list[Stage]
    topics: Topics
    outputs: Outputs
    emitted: EmittedActions
    state: WorkerState


@dataclass
class Round:
    """What one round of stage records gave: outputs, and the partitions it touched."""

    found: list[Finding] = field(default_factory=list)
    decided: list[Action] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    touched: dict[int, StagePartition] = field(default_factory=dict)
    derived: dict[int, list[Derived]] = field(default_factory=dict)  # by stage partition
    staged: int = 0  # events
    redelivered: int = 0  # events of stage records consumed again, dropped as applied
    refetched: int = 0  # stage records the consumer passed over, read here directly
    # by stage partition: its table and its next offset once this round is persisted
    positions: dict[int, tuple[PartitionTable, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRecord:
    """One record of a stage topic, as a round applies it."""

    partition: int
    offset: int
    value: bytes


def _position_key(partition: int) -> str:
    """Where a stage partition's position is kept in its table: two NULs first, so no
    event's key (nor a part of one, see `_part_key`) can be it."""
    return f"\x00\x00position\x00{partition}"


class StageAgent:
    """One stage as a Faust agent on its stage topic: a `StagePartition` per partition
    this worker owns (dropped when partitions are revoked), its per-key state in a Faust
    table, and its outputs written a round of several records at a time: one producer
    flush and one table write-back per round instead of per record.

    Each partition keeps its position (the offset after the last stage record whose round
    was persisted) in its table, written with the round's state. Faust's consumer has been
    seen to move past records it never delivered when partitions moved under load (a new
    owner resumed 95 records on, and their findings were never decided), so the agent does
    not trust it to: a record beyond the position means the ones between were passed
    over, and the agent reads them itself, in order, before it applies that record."""

    def __init__(self, wiring: Wiring, stage: Stage) -> None:
        self.wiring = wiring
        self.stage = stage
        app, kafka, topics = wiring.app, wiring.settings.kafka, wiring.topics
        self.table = app.Table(
            f"state-{stage.detector}",
            partitions=kafka.partitions,
            key_type=str,
            value_type=bytes,
        )
        inputs = {f"{t}:{p}" for t in topics.inputs for p in range(kafka.partitions)}
        self.upstream = inputs | upstream_sources(stage, wiring.stages, topics)
        self.owned: dict[int, StagePartition] = {}
        self.views: dict[int, PartitionTable] = {}  # each owned partition's table
        self.positions: dict[int, int] = {}  # each owned partition's next stage offset
        self.topic = topics.stage(stage.detector)
        app.on_partitions_revoked.connect(self.on_partitions_revoked)
        app.agent(
            app.topic(self.topic, partitions=kafka.partitions, **RAW_BYTES),
            name=f"stage-{stage.detector}",
        )(self.consume)

    async def on_partitions_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """Faust's signal: revoked partitions may come back after another worker wrote
        their state, so none of the cached ones is kept."""
        self.owned.clear()
        self.views.clear()
        self.positions.clear()

    async def consume(self, stream: Any) -> None:
        """The agent: rounds of stage records. One that raises stops the worker (see
        `Failure`) rather than leave Faust to restart the agent on the same state."""
        kafka = self.wiring.settings.kafka
        try:
            async for events in stream.take_events(
                kafka.stage_take_records, within=kafka.stage_round_s
            ):
                await self.run_round(events)
        except Exception as exc:
            self.wiring.state.failure.fail(f"stage {self.stage.detector}", exc)
            raise

    async def run_round(self, events: list[Any]) -> None:
        emitted = self.wiring.emitted
        if emitted.stale:
            await emitted.refresh()
        records, refetched = await self.without_gaps(events)
        done = self.apply(records)
        done.refetched = refetched
        done.positions = {p: (self.views[p], self.positions[p]) for p in done.touched}
        if self.stage.emits:
            await self.hand_on(done)
        actions = emitted.new(done.decided)
        await self.wiring.outputs.send(done.found, actions, done.dead)
        await self.persist(done)
        emitted.sent(actions)
        self.count(done, actions)

    def partition(self, partition: int) -> StagePartition:
        """This stage's partition `partition`, over its slice of the table."""
        part = self.owned.get(partition)
        if part is None:
            topics = self.wiring.topics
            view = self.views[partition] = PartitionTable(self.table, partition)
            cache = TableCache(
                view,
                lambda k, p=partition: topics.partition_of(k) == p,
            )
            part = self.owned[partition] = StagePartition(
                self.stage,
                cache,
                self.upstream,
                self.wiring.settings.input.dead_letter_raw_bytes,
                self.wiring.settings.kafka.idle_after_s,
            )
        return part

    def position(self, partition: int) -> int:
        """The next stage offset `partition` has to apply: kept in its table, 0 when no
        round of it was ever persisted."""
        if partition not in self.positions:
            self.partition(partition)
            stored = self.views[partition].get(_position_key(partition))
            self.positions[partition] = int(stored) if stored is not None else 0
        return self.positions[partition]

    async def without_gaps(self, events: list[Any]) -> tuple[list[StageRecord], int]:
        """This round's records, with any the consumer passed over read from the topic and
        put back in their place; and how many were."""
        records: list[StageRecord] = []
        refetched = 0
        for event in events:
            partition, offset = event.message.partition, event.message.offset
            expected = self.position(partition)
            if offset > expected:
                missed = await self.read_passed_over(partition, expected, offset)
                records.extend(missed)
                refetched += len(missed)
            records.append(StageRecord(partition, offset, event.value))
            self.positions[partition] = max(expected, offset + 1)
        return records, refetched

    async def read_passed_over(self, partition: int, start: int, until: int) -> list[StageRecord]:
        """Records [start, until) of this stage's partition, read with a plain consumer
        (in a thread with its own event loop, out of the way of Faust's)."""
        from aiokafka import TopicPartition

        from pipeline.distributed.kafka_io import read_ranges

        log.warning(
            "stage %s partition %d: the consumer passed over offsets %d-%d; reading them",
            self.stage.detector,
            partition,
            start,
            until - 1,
        )
        tp = TopicPartition(self.topic, partition)
        bootstrap = self.wiring.settings.kafka.broker
        read = await asyncio.to_thread(asyncio.run, read_ranges(bootstrap, {tp: (start, until)}))
        return [StageRecord(partition, r.offset, r.value) for r in read[tp]]

    def apply(self, records: list[StageRecord]) -> Round:
        """Run the stage on each record's batch, in its partition."""
        done = Round()
        for record in records:
            partition = record.partition
            part = done.touched[partition] = self.partition(partition)
            batch = decode_batch(record.value)
            source = f"{self.topic}:{partition}:{record.offset}"
            applied_before = part.runner.duplicates
            outputs, dead = part.apply(batch, source)
            done.redelivered += part.runner.duplicates - applied_before
            found, handed_on, decided = split_outputs(outputs)
            done.found.extend(found)
            done.decided.extend(decided)
            if FINDING_STREAM in self.stage.emits:  # to the enforcement stage
                handed_on.extend(finding_records(found))
            done.derived.setdefault(partition, []).extend(handed_on)
            done.dead.extend(dead)
            done.staged += len(batch.events)
        return done

    async def hand_on(self, done: Round) -> None:
        """Derived records, and this stage's watermarks, to the stages downstream."""
        w = self.wiring
        for partition, part in done.touched.items():
            here = f"{w.topics.stage(self.stage.detector)}:{partition}"
            derived = done.derived.get(partition, [])
            records = pack_derived(derived, self.stage, here, part.watermark, w.stages, w.topics)
            for topic, p, record in records:
                await w.app.producer.send(topic, None, record, p, None, None)

    async def persist(self, done: Round) -> None:
        """Outputs are durable before the state that says "window closed" is written, and
        that state before these records are acknowledged: a crash at any point re-derives
        (never loses) a finding."""
        await self.wiring.app.producer.flush()
        for part in done.touched.values():
            part.runner.store.flush()
        for partition, (view, position) in done.positions.items():
            view[_position_key(partition)] = str(position).encode()
            await view.written()

    def count(self, done: Round, actions: list[Action]) -> None:
        """The round in this worker's totals, for the metrics."""
        state, detector = self.wiring.state, self.stage.detector
        with state.lock:
            state.stats.add_outputs(done.found, actions, done.dead)
            state.stats.staged_by_stage[detector] += done.staged
            if done.redelivered:
                state.stats.stage_redeliveries[detector] += done.redelivered
            if done.refetched:
                state.stats.stage_records_refetched[detector] += done.refetched
            for part in done.touched.values():
                state.stats.watermark = max(state.stats.watermark, part.watermark)
        state.keys[detector] = sum(len(p.runner.store.cache) for p in self.owned.values())


def faust_app(kafka: KafkaSettings) -> faust.App:
    """The Faust app: acks from every replica, offsets from the earliest, no web server."""
    import faust

    return faust.App(
        kafka.topic_prefix,
        broker=f"kafka://{kafka.broker}",
        store="rocksdb://" if kafka.store == "rocksdb" else "memory://",
        datadir=kafka.data_dir,
        web_enabled=False,
        topic_partitions=kafka.partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        broker_commit_interval=kafka.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # A revocation or a stop waits for the stage rounds in flight to write their state
        # and be acknowledged. Without it Faust closed the tables under a round still
        # running: its reads found nothing, and it wrote fresh states over keys' histories
        # to the changelog, which the next owner recovered (a churner's undos and its
        # earlier flag forgotten, findings replay does not make).
        stream_wait_empty=True,
    )


def build_app(settings: Settings, state: WorkerState) -> faust.App:
    """The worker: the ingest loop as a Faust task, and an agent per stage."""
    from pipeline.distributed.ingest_loop import IngestLoop

    kafka = settings.kafka
    topics = Topics.from_settings(kafka)
    stages = build_topology(settings)
    app = faust_app(kafka)
    outputs = Outputs(app, topics, kafka.partitions)
    ingest = Ingest(settings, stages, topics)
    emitted = EmittedActions(kafka.broker, topics.actions, kafka.partitions)
    app.on_partitions_assigned.connect(emitted.on_partitions_assigned)
    # state.observe_latency is looked up at each call: run_worker sets it after this
    ingest_loop = IngestLoop(
        kafka, ingest, topics, state.stats, state.lock, lambda s: state.observe_latency(s)
    )
    state.consumer_lag = lambda: dict(ingest_loop.lag)

    async def ingest() -> None:
        try:
            await ingest_loop.run()
        except Exception as exc:
            state.failure.fail("the ingest loop", exc)

    app.task(ingest)
    wiring = Wiring(app, settings, stages, topics, outputs, emitted, state)
    for stage in stages:
        StageAgent(wiring, stage)
    return app


def declared_topics(settings: Settings) -> list[str]:
    """Every topic the worker reads or writes, besides Faust's own changelogs."""
    topics = Topics.from_settings(settings.kafka)
    stage_topics = [topics.stage(s.detector) for s in build_topology(settings)]
    return [*topics.inputs, *stage_topics, topics.findings, topics.actions, topics.dead_letters]


def run_worker(settings: Settings, metrics_port: int) -> None:
    from pipeline.distributed.stopping import bounded_worker
    from pipeline.distributed.topics import ensure_topics
    from pipeline.outputs.metrics import Metrics

    asyncio.run(
        ensure_topics(settings.kafka.broker, declared_topics(settings), settings.kafka.partitions)
    )
    state = WorkerState()
    app = build_app(settings, state)
    if metrics_port:
        metrics = Metrics(state)
        state.observe_latency = metrics.latency.observe
        metrics.serve(metrics_port)
    worker = bounded_worker(app, settings.kafka.stop_timeout_s, state.failure)
    asyncio.set_event_loop(worker.loop)
    try:
        worker.execute_from_commandline()
    finally:
        if state.failure.reason is not None:
            raise SystemExit(state.failure.exit_code())
