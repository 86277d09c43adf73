"""`lockstep worker`: the stages of the embedded runtime as a Faust app on Kafka.

    input topics (per type) --ingest agent--> stage topics (by stage key) --stage agent-->
        findings, actions, dead letters

The ingest agent runs a `Gate` per input partition and packs admitted events per stage
partition (pipeline/distributed.py). Each stage agent keeps its per-key state in a Faust
table (RocksDB by default, changelogged, so a restarted worker recovers it) and runs the
very `Stage` object the embedded runtime runs. Actions are emitted at most once per
action_id: a worker reads the ids already on the actions topic whenever partitions are
assigned to it, before it emits anything.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import faust
import msgspec

from pipeline.detectors import build_stages
from pipeline.distributed import Ingest, StagePartition, TableCache, decode_batch
from pipeline.engine import Stats
from pipeline.findings import Action
from pipeline.kafka_io import read_to_end
from pipeline.produce import ensure_topics
from pipeline.review import ReviewPolicy
from pipeline.settings import Settings
from pipeline.topics import Topics

_encode = msgspec.json.Encoder().encode


class WorkerState:
    """Totals and state sizes of this worker, in the shape the metrics collector reads."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.lock = threading.Lock()
        self.keys: Counter[str] = Counter()
        self.lag: dict[str, int] = {}
        self.observe_latency: Callable[[float], None] = lambda seconds: None

    def state_size(self) -> dict[str, int]:
        return dict(self.keys)

    def consumer_lag(self) -> dict[str, int]:
        return dict(self.lag)


class EmittedActions:
    """The action_ids already on the actions topic, re-read after every assignment."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.ids: set[str] = set()
        self.stale = True

    async def refresh(self) -> None:
        """Read the actions topic to its end (in a thread with its own event loop, so this
        plain consumer stays out of the way of Faust's)."""
        await asyncio.to_thread(asyncio.run, self._read_all())
        self.stale = False

    async def _read_all(self) -> None:
        records = await read_to_end(self.bootstrap, self.topic, self.partitions)
        self.ids.update(r.key.decode() for r in records if r.key)

    def new(self, actions: list[Action]) -> list[Action]:
        fresh = [a for a in actions if a.action_id not in self.ids]
        self.ids.update(a.action_id for a in fresh)
        return fresh


def build_app(settings: Settings, state: WorkerState) -> faust.App:
    kafka = settings.kafka
    topics = Topics.from_settings(kafka)
    stages = build_stages(settings)
    app = faust.App(
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
        stream_wait_empty=False,
    )
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    inputs = app.topic(*topics.inputs, **raw)
    findings_topic = app.topic(topics.findings, partitions=kafka.partitions, **raw)
    actions_topic = app.topic(topics.actions, partitions=kafka.partitions, **raw)
    dead_topic = app.topic(topics.dead_letters, partitions=kafka.partitions, **raw)
    ingest = Ingest(settings, stages, topics)
    review = ReviewPolicy(settings.review.min_severity)
    emitted = EmittedActions(kafka.broker, topics.actions, kafka.partitions)
    input_tps = {f"{t}:{p}" for t in topics.inputs for p in range(kafka.partitions)}
    last_offset: dict[str, int] = {}

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        emitted.stale = True

    idle_since: dict[str, float] = {}

    def progress() -> dict[str, bool]:
        """Each input partition this worker owns, and whether it is idle: caught up, and
        for `kafka.idle_after_s` already. A partition that is only momentarily caught up
        (a producer replaying history faster than real time) still holds the stage
        watermarks back; one with nothing to say for a while no longer does."""
        consumer = app.consumer
        now = time.monotonic()
        idle: dict[str, bool] = {}
        lag: Counter[str] = Counter()
        for tp in consumer.assignment():
            if tp.topic not in topics.inputs:
                continue
            name = f"{tp.topic}:{tp.partition}"
            highwater = consumer.highwater(tp)
            if name in last_offset:
                position = last_offset[name] + 1
            else:
                committed = consumer._committed_offset.get(tp)  # Faust has no public getter
                position = 0 if committed is None else committed  # the next offset to read
            if highwater is not None and position >= highwater:
                idle[name] = now - idle_since.setdefault(name, now) >= kafka.idle_after_s
            else:
                idle_since.pop(name, None)
                idle[name] = False
            if highwater is not None:
                lag[tp.topic] += max(highwater - position, 0)
        state.lag = dict(lag)
        return idle

    async def send_dead(dead: list) -> None:
        for d in dead:
            await dead_topic.send(value=_encode(d))

    # A batch's events must reach a stage partition before any report of the watermark
    # that admitting them produced: the heartbeat may not interleave with a batch.
    forwarding = asyncio.Lock()

    @app.agent(inputs, name="ingest")
    async def ingest_agent(stream: Any) -> None:
        async for events in stream.take_events(kafka.batch_size, within=kafka.batch_wait_s):
            started = time.perf_counter()
            async with forwarding:
                await ingest_batch(events)
            state.observe_latency(time.perf_counter() - started)

    async def ingest_batch(events: list) -> None:
        by_tp: dict[str, tuple[list[bytes], list[int]]] = defaultdict(lambda: ([], []))
        for event in events:
            message = event.message
            name = f"{message.topic}:{message.partition}"
            raws, offsets = by_tp[name]
            raws.append(message.value or b"")
            offsets.append(message.offset)
            last_offset[name] = message.offset
        admitted = [ingest.admit(tp, raws, offs) for tp, (raws, offs) in by_tp.items()]
        with state.lock:
            state.stats.inputs += len(events)
            for a in admitted:
                state.stats.add_admitted(a)
        for a in admitted:
            await send_dead(a.dead_letters)
        await forward(admitted)
        # Delivered before the input offsets can be committed: a crash then re-reads the
        # input instead of losing what was in flight.
        await app.producer.flush()

    async def forward(admitted: list) -> None:
        for topic, partition, record in ingest.pack(admitted, progress()):
            await app.topic(topic, **raw).send(value=record, partition=partition)

    @app.timer(interval=1.0)
    async def heartbeat() -> None:
        """Report input progress even when no input arrives (idle or empty partitions),
        so stage watermarks never wait on a partition that has nothing to say."""
        if any(tp.topic in topics.inputs for tp in app.consumer.assignment()):
            async with forwarding:
                await forward([])

    def stage_agent(stage: Any) -> None:
        table = app.Table(
            f"state-{stage.detector}",
            partitions=kafka.partitions,
            key_type=str,
            value_type=bytes,
        )
        owned: dict[int, StagePartition] = {}

        @app.on_partitions_revoked.connect
        async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            owned.clear()

        async def handle(stream: Any) -> None:
            async for event in stream.events():
                if emitted.stale:
                    await emitted.refresh()
                partition = event.message.partition
                part = owned.get(partition)
                if part is None:
                    cache = TableCache(table, lambda k, p=partition: topics.partition_of(k) == p)
                    part = owned[partition] = StagePartition(
                        stage,
                        cache,
                        input_tps,
                        settings.dedup.horizon_ms,
                        settings.input.dead_letter_raw_bytes,
                    )
                batch = decode_batch(event.value)
                source = f"{event.message.topic}:{partition}:{event.message.offset}"
                found, dead = part.apply(batch, source)
                actions = emitted.new(review.actions_for(found))
                for f in found:
                    await findings_topic.send(key=f.subject_id.encode(), value=_encode(f))
                for a in actions:
                    await actions_topic.send(key=a.action_id.encode(), value=_encode(a))
                await send_dead(dead)
                # Outputs are durable before the state that says "window closed" is
                # written, and that state before this record can be acknowledged: a crash
                # at any point re-derives (never loses) a finding.
                await app.producer.flush()
                part.runner.store.flush()
                await app.producer.flush()
                with state.lock:
                    state.stats.add_outputs(found, actions, dead)
                    state.stats.watermark = max(state.stats.watermark, part.watermark)
                state.keys[stage.detector] = sum(len(p.runner.store.cache) for p in owned.values())

        app.agent(
            app.topic(topics.stage(stage.detector), partitions=kafka.partitions, **raw),
            name=f"stage-{stage.detector}",
        )(handle)

    for stage in stages:
        stage_agent(stage)

    return app


def declared_topics(settings: Settings) -> list[str]:
    """Every topic the worker reads or writes, besides Faust's own changelogs."""
    topics = Topics.from_settings(settings.kafka)
    stage_topics = [topics.stage(s.detector) for s in build_stages(settings)]
    return [*topics.inputs, *stage_topics, topics.findings, topics.actions, topics.dead_letters]


def run_worker(settings: Settings, metrics_port: int) -> None:
    from pipeline.metrics import Metrics

    asyncio.run(
        ensure_topics(settings.kafka.broker, declared_topics(settings), settings.kafka.partitions)
    )
    state = WorkerState()
    app = build_app(settings, state)
    if metrics_port:
        metrics = Metrics(state)
        state.observe_latency = metrics.latency.observe
        metrics.serve(metrics_port)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    asyncio.set_event_loop(worker.loop)
    worker.execute_from_commandline()
