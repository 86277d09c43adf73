"""`lockstep worker`: the stages of the embedded runtime as a Faust app on Kafka.

    input topics (per type) --ingest loop--> stage topics (by stage key) --stage agent-->
        findings, actions, dead letters

The ingest loop (pipeline/distributed/ingest_loop.py) reads the inputs in batches with its own
consumer group, runs a `Gate` per input partition and packs admitted events per stage
partition (pipeline/distributed/runtime.py). Each stage agent keeps its per-key state in a Faust
table (RocksDB by default, changelogged, so a restarted worker recovers it) and runs the
very `Stage` object the embedded runtime runs. Actions are emitted at most once per
action_id: a worker reads the ids already on the actions topic whenever partitions are
assigned to it, before it emits anything.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import faust
import msgspec

from pipeline.contract.findings import Action
from pipeline.core.derived import Derived, split_outputs
from pipeline.core.engine import Stats
from pipeline.core.settings import Settings
from pipeline.detectors import build_topology
from pipeline.distributed.ingest_loop import IngestLoop
from pipeline.distributed.kafka_io import read_to_end
from pipeline.distributed.produce import ensure_topics
from pipeline.distributed.runtime import (
    Ingest,
    StagePartition,
    TableCache,
    decode_batch,
    pack_derived,
    upstream_sources,
)
from pipeline.distributed.topics import Topics
from pipeline.enforcement.stage import FINDING_STREAM, finding_records

_encode = msgspec.json.Encoder().encode


class WorkerState:
    """Totals and state sizes of this worker, in the shape the metrics collector reads."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.lock = threading.Lock()
        self.keys: Counter[str] = Counter()
        self.observe_latency: Callable[[float], None] = lambda seconds: None
        self.consumer_lag: Callable[[], dict[str, int]] = dict

    def state_size(self) -> dict[str, int]:
        return dict(self.keys)


class PartitionTable(MutableMapping[str, bytes]):
    """One stage partition's view of a Faust table. A stage agent writes state once per
    round of several records, outside Faust's per-record iteration, where the table
    cannot tell the changelog partition from the current event: here it is explicit."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition

    def __getitem__(self, key: str) -> bytes:
        return self.table.data[key]

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table.send_changelog(self.partition, key, value)
        self.table.data[key] = value

    def __delitem__(self, key: str) -> None:
        self.table.send_changelog(self.partition, key, None, value_serializer="raw")
        del self.table.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.data.keys())

    def __len__(self) -> int:
        return len(self.table.data)


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
    stages = build_topology(settings)
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
    findings_topic = app.topic(topics.findings, partitions=kafka.partitions, **raw)
    actions_topic = app.topic(topics.actions, partitions=kafka.partitions, **raw)
    dead_topic = app.topic(topics.dead_letters, partitions=kafka.partitions, **raw)
    ingest = Ingest(settings, stages, topics)
    emitted = EmittedActions(kafka.broker, topics.actions, kafka.partitions)
    input_tps = {f"{t}:{p}" for t in topics.inputs for p in range(kafka.partitions)}

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        emitted.stale = True

    async def send_dead(dead: list) -> None:
        for d in dead:
            await dead_topic.send(value=_encode(d))

    ingest_loop = IngestLoop(
        kafka, ingest, topics, state.stats, state.lock, lambda s: state.observe_latency(s)
    )
    state.consumer_lag = lambda: dict(ingest_loop.lag)

    @app.task
    async def ingest_inputs() -> None:
        await ingest_loop.run()

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

        def partition_state(partition: int) -> StagePartition:
            part = owned.get(partition)
            if part is None:
                cache = TableCache(
                    PartitionTable(table, partition),
                    lambda k, p=partition: topics.partition_of(k) == p,
                )
                part = owned[partition] = StagePartition(
                    stage,
                    cache,
                    input_tps | upstream_sources(stage, stages, topics),
                    settings.input.dead_letter_raw_bytes,
                )
            return part

        async def handle(stream: Any) -> None:
            # Several stage records per round: one producer flush and one table write-back
            # per round instead of per record.
            async for events in stream.take_events(
                kafka.stage_take_records, within=kafka.stage_round_s
            ):
                if emitted.stale:
                    await emitted.refresh()
                found, decided, dead, touched, staged = [], [], [], {}, 0
                derived: dict[int, list[Derived]] = {}
                for event in events:
                    partition = event.message.partition
                    part = touched[partition] = partition_state(partition)
                    batch = decode_batch(event.value)
                    source = f"{event.message.topic}:{partition}:{event.message.offset}"
                    outputs, d = part.apply(batch, source)
                    f, handed_on, a = split_outputs(outputs)
                    found.extend(f)
                    decided.extend(a)
                    if FINDING_STREAM in stage.emits:  # to the enforcement stage
                        handed_on.extend(finding_records(f))
                    derived.setdefault(partition, []).extend(handed_on)
                    dead.extend(d)
                    staged += len(batch.events)
                if stage.emits:  # derived records, and this stage's watermarks, downstream
                    for partition, part in touched.items():
                        here = f"{topics.stage(stage.detector)}:{partition}"
                        for topic, p, record in pack_derived(
                            derived.get(partition, []), stage, here, part.watermark, stages, topics
                        ):
                            await app.producer.send(topic, None, record, p, None, None)
                actions = emitted.new(decided)
                for f in found:
                    await findings_topic.send(key=f.subject_id.encode(), value=_encode(f))
                for a in actions:
                    await actions_topic.send(key=a.action_id.encode(), value=_encode(a))
                await send_dead(dead)
                # Outputs are durable before the state that says "window closed" is
                # written, and that state before these records are acknowledged: a crash
                # at any point re-derives (never loses) a finding.
                await app.producer.flush()
                for part in touched.values():
                    part.runner.store.flush()
                await app.producer.flush()
                with state.lock:
                    state.stats.add_outputs(found, actions, dead)
                    state.stats.staged_by_stage[stage.detector] += staged
                    for part in touched.values():
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
    stage_topics = [topics.stage(s.detector) for s in build_topology(settings)]
    return [*topics.inputs, *stage_topics, topics.findings, topics.actions, topics.dead_letters]


def run_worker(settings: Settings, metrics_port: int) -> None:
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
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    asyncio.set_event_loop(worker.loop)
    worker.execute_from_commandline()
