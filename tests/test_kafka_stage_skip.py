"""A stage consumer that moves past records it never delivered loses nothing.

Faust's consumer of a stage topic was seen to resume 95 records beyond the last one any
worker applied after partitions moved under load, and the findings those records carried
were never decided. Here the same thing is made to happen on purpose: the stage records
are written by the ingest loop alone, then the stage consumer group's offset of one
partition of the busiest stage is committed to the middle of what is there, as a
consumer that skipped would have left it. The worker that starts next must read the
passed-over records itself and find exactly what replay finds."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from pipeline.core.settings import load_settings
from pipeline.core.stats import Stats
from pipeline.distributed.ingest_loop import IngestLoop
from pipeline.distributed.kafka_io import read_ranges
from pipeline.distributed.runtime import Ingest, decode_batch
from pipeline.distributed.topics import Topics, ensure_topics
from pipeline.distributed.worker import declared_topics
from pipeline.topology import build_topology
from tests.kafka import Broker
from tests.test_kafka_worker import (
    PARTITIONS,
    PORTS,
    _difference,
    _env,
    _produce,
    _read,
    _replay,
    _replayed_actions,
    _stop,
    _stream,
    _wait_for_actions,
    _wait_for_findings,
    _worker,
)

PREFIX = "skip"
STAGE = "follower_jump"  # every follow goes through it: its partitions are the fullest


def _settings(kafka: Broker):  # type: ignore[no-untyped-def]
    return load_settings(
        overrides={
            "kafka": {"broker": kafka.bootstrap, "topic_prefix": PREFIX, "partitions": PARTITIONS}
        }
    )


async def _ingest_everything(kafka: Broker) -> None:
    """The ingest loop, on its own, until it has read every input record."""
    settings = _settings(kafka)
    topics = Topics.from_settings(settings.kafka)
    ingest = Ingest(settings, build_topology(settings), topics)
    loop = IngestLoop(settings.kafka, ingest, topics, Stats(), threading.Lock())
    task = asyncio.create_task(loop.run())
    deadline = time.monotonic() + 180
    while not (loop.lag and all(n == 0 for n in loop.lag.values())):
        assert not task.done(), f"the ingest loop stopped: {task.exception()!r}"
        assert time.monotonic() < deadline, f"ingest never caught up: {loop.lag}"
        await asyncio.sleep(0.5)
    await asyncio.sleep(2 * settings.kafka.batch_wait_s)  # its last sends and commit
    loop.stopping.set()
    await asyncio.wait_for(task, 60)
    uncommitted = await _uncommitted(kafka, f"{PREFIX}-ingest", list(topics.inputs))
    assert not uncommitted, f"the ingest loop left input uncommitted: {uncommitted}"


async def _uncommitted(kafka: Broker, group: str, topics: list[str]) -> dict[str, int]:
    """How far `group`'s committed offsets fall short of each partition's end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        short = {}
        for tp in tps:
            committed = await consumer.committed(tp) or 0
            if committed < ends[tp]:
                short[f"{tp.topic}:{tp.partition}"] = ends[tp] - committed
        return short
    finally:
        await consumer.stop()


async def _commit_past_the_events(kafka: Broker, topic: str, partition: int) -> tuple[int, int]:
    """Commit the stage consumer group's offset of `topic`:`partition` past its last
    record that holds events (the rest only report watermarks), as a consumer that passed
    over them would have; (that offset, how many events those records hold)."""
    tp = TopicPartition(topic, partition)
    records = (await read_ranges(kafka.bootstrap, {tp: (0, 1 << 62)}))[tp]
    holding = [(r.offset, len(decode_batch(r.value).events)) for r in records]
    past = 1 + max(offset for offset, n in holding if n)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=PREFIX, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(past, "")})
    finally:
        await consumer.stop()
    return past, sum(n for offset, n in holding if offset < past)


def _refetched(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f'lockstep_stage_records_refetched_total{{stage="{STAGE}"}}')
    )


def test_records_the_stage_consumer_passed_over_are_read_and_applied(
    kafka: Broker, tmp_path: Path
) -> None:
    PORTS.clear()
    lines = _stream(hours=6, seed=31)
    events, expected = _replay(tmp_path, lines)
    env = _env(kafka, PREFIX, tmp_path)
    settings = _settings(kafka)
    asyncio.run(ensure_topics(kafka.bootstrap, declared_topics(settings), PARTITIONS))
    _produce(env, events)
    asyncio.run(_ingest_everything(kafka))
    skipped_to, events = asyncio.run(_commit_past_the_events(kafka, f"{PREFIX}.stage.{STAGE}", 0))
    assert events > 1000, f"only {events} events to pass over"
    workers = [_worker(env, "w1", tmp_path)]
    try:
        _wait_for_findings(kafka, PREFIX, expected, workers)
        _wait_for_actions(kafka, PREFIX, tmp_path, workers)
        time.sleep(3)  # anything extra would show up now
        found = _read(kafka.bootstrap, f"{PREFIX}.findings")
        actions = _read(kafka.bootstrap, f"{PREFIX}.actions")
        refetched = _refetched(PORTS["w1"])
    finally:
        _stop(workers)
    assert {f["finding_id"] for f in found} == expected, _difference(found, tmp_path)
    ids = [a["action_id"] for a in actions]
    assert len(ids) == len(set(ids)) > 0
    assert set(ids) == _replayed_actions(tmp_path)
    assert refetched == skipped_to, f"{refetched} records read back, {skipped_to} passed over"
