"""`lockstep produce` on a real broker keeps the file's order to within half the allowed
lateness across partitions, so the distributed runtime sees no event late that replay
keeps. The topics stamp each record with the broker's append time (LogAppendTime), which
is how the order the broker appended them in is read back."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.core.settings import Settings, load_settings
from pipeline.distributed.produce import produce
from pipeline.distributed.topics import Topics
from tests.helpers import write_lines
from tests.kafka import Broker
from tests.test_kafka_worker import _stream

APPEND_MS_APART = 2  # the broker's clock has milliseconds: nearer is "at the same time"


async def _appended(bootstrap: str, topics: Topics) -> list[tuple[int, bytes]]:
    """(append time, value) of every record on the input topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics.inputs for p in range(topics.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        left = sum((await consumer.end_offsets(tps)).values())
        records = []
        while left > 0:
            for batch in (await consumer.getmany(timeout_ms=2000)).values():
                records += [(r.timestamp, r.value) for r in batch]
                left -= len(batch)
        return records
    finally:
        await consumer.stop()


async def _produce_to_append_time_topics(
    bootstrap: str, path: Path
) -> tuple[Settings, Counter[str], list[tuple[int, bytes]]]:
    settings = load_settings(overrides={"kafka": {"broker": bootstrap, "topic_prefix": "order"}})
    topics = Topics.from_settings(settings.kafka)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        await admin.create_topics(
            [NewTopic(t, topics.partitions, 1, topic_configs=config) for t in topics.inputs]
        )
    finally:
        await admin.close()
    sent = await produce(str(path), settings)
    return settings, sent, await _appended(bootstrap, topics)


def test_produce_keeps_the_files_order_within_half_the_lateness(
    kafka: Broker, tmp_path: Path
) -> None:
    lines = _stream(hours=3, seed=5)  # a few MiB: many sends in flight at once
    path = write_lines(tmp_path / "events.jsonl", lines)
    settings, sent, appended = asyncio.run(_produce_to_append_time_topics(kafka.bootstrap, path))
    assert sum(sent.values()) == len(appended) == len([line for line in lines if line.strip()])

    ts_of: dict[bytes, int] = {}
    disorder = latest = 0  # how far behind the latest before it the file's worst line is
    for line in lines:
        try:
            ts = json.loads(line)["ts"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(ts, int):
            ts_of[line.encode()] = ts
            latest = max(latest, ts)
            disorder = max(disorder, latest - ts)
    by_kind = Counter(json.loads(v).get("type") for v in ts_of)
    assert len(by_kind) >= 5, by_kind  # many topics, so many partitions in flight together

    # For each record, the latest event time among records appended clearly before it:
    # how far behind that it is, is how far the broker's order reversed the file's.
    rows = sorted((at, ts_of[v]) for at, v in appended if v in ts_of)
    worst, before, j = 0, None, 0
    for at, ts in rows:
        while rows[j][0] <= at - APPEND_MS_APART:
            before = rows[j][1] if before is None else max(before, rows[j][1])
            j += 1
        if before is not None:
            worst = max(worst, before - ts)
    span = settings.event_time.allowed_lateness_ms // 2
    # Sent a MiB at a time (before), records up to hours of event time apart were
    # appended the wrong way round (partitions still electing their leader retry later).
    assert worst <= span + disorder, (worst, span, disorder)
