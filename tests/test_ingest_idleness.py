"""A partition is idle only when it has said nothing for `kafka.idle_after_s`. Before, its
idle clock started the first time a batch ended caught up and was reset only by a batch
that ended behind: a worker keeping up (nearly every batch ends caught up) reported
partitions idle while their events kept arriving, the stage watermarks ran ahead of
them, and their later events were dead-lettered as late (seen in the fault campaign).
The consumer and producer are stand-ins holding only what the loop asks of them; the
real ones are exercised by the Kafka tests."""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec
from aiokafka import TopicPartition

from pipeline.core.settings import load_settings
from pipeline.core.stats import Stats
from pipeline.distributed.ingest_loop import IngestLoop
from pipeline.distributed.runtime import Ingest
from pipeline.distributed.topics import Topics

SETTINGS = load_settings()
IDLE_AFTER_S = 0.05
TP = TopicPartition("lockstep-events", 0)


class _Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value = offset, value


class _CaughtUp:
    """A consumer that owns one partition and has always read all of it."""

    def __init__(self) -> None:
        self.end = 0

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def position(self, tp: TopicPartition) -> int:
        return self.end

    def highwater(self, tp: TopicPartition) -> int:
        return self.end


class _Producer:
    async def send(self, topic: str, value: bytes, partition: int | None = None) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _event(n: int) -> bytes:
    return msgspec.json.encode(
        {
            "event_id": f"e{n}",
            "ts": 1_700_000_000_000 + n * 1000,
            "type": "follow",
            "actor": f"a{n}",
            "target": "t1",
        }
    )


def _loop() -> tuple[IngestLoop, _CaughtUp]:
    kafka = msgspec.structs.replace(SETTINGS.kafka, idle_after_s=IDLE_AFTER_S)
    topics = Topics.from_settings(kafka)
    loop = IngestLoop(kafka, Ingest(SETTINGS, [], topics), topics, Stats(), threading.Lock())
    consumer = _CaughtUp()
    loop._consumer = consumer  # type: ignore[assignment]
    loop._producer = _Producer()  # type: ignore[assignment]
    loop._data_since = time.monotonic() - 100  # data has flowed here for a long while
    return loop, consumer


def _idleness_after(loop: IngestLoop, records: dict) -> bool:
    reported: list[dict[str, bool]] = []
    progress = loop._progress

    async def spy(owned: set[TopicPartition]) -> dict[str, bool]:
        reported.append(await progress(owned))
        return reported[-1]

    loop._progress = spy  # type: ignore[method-assign]
    asyncio.run(loop._handle(records))
    return reported[-1][f"{TP.topic}:{TP.partition}"]


def test_a_partition_that_delivered_records_is_not_idle_even_when_caught_up() -> None:
    loop, consumer = _loop()
    assert _idleness_after(loop, {}) is False  # its caught-up clock starts
    time.sleep(IDLE_AFTER_S * 3)
    consumer.end = 3
    records = {TP: [_Record(i, _event(i)) for i in range(3)]}
    assert _idleness_after(loop, records) is False


def test_a_partition_silent_for_the_idle_period_is_idle() -> None:
    loop, consumer = _loop()
    consumer.end = 1
    assert _idleness_after(loop, {TP: [_Record(0, _event(0))]}) is False
    time.sleep(IDLE_AFTER_S * 3)
    assert _idleness_after(loop, {}) is True
