"""Reading topics with a plain consumer (no group): a whole topic to its current end, or
ranges of partitions."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, wait_s: float) -> list[int]:
    """The partitions of `topic`, waiting up to `wait_s` for a topic created moments ago
    to reach the client's metadata; [] if the broker has answered and has no such topic
    by then. A broker that gives no answer at all within `wait_s` raises
    KafkaTimeoutError: a slow broker is not an empty topic (the worker reads the actions
    topic to know what it already issued, and an empty answer would issue it all again)."""
    client = consumer._client
    deadline = time.monotonic() + wait_s
    answered = False
    while (found := consumer.partitions_for_topic(topic)) is None:
        if time.monotonic() > deadline:
            if answered:
                return []
            raise KafkaTimeoutError(f"the broker sent no metadata for {topic} in {wait_s:g} s")
        client.add_topic(topic)
        answered = bool(await client.force_metadata_update()) or answered
        if consumer.partitions_for_topic(topic) is None:
            await asyncio.sleep(0.2)
    return sorted(found)


async def read_to_end(
    bootstrap: str, topic: str, partitions: int, wait_s: float = 30.0
) -> list[ConsumerRecord]:
    """Every record now in `topic`. A topic created moments ago may not be in the
    client's metadata yet: wait (up to `wait_s`) until its partitions have leaders."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        if not await partitions_of(consumer, topic, wait_s):
            return []  # the broker has no such topic: nothing was ever written to it
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        records: list[ConsumerRecord] = []
        remaining = {tp for tp in tps if ends[tp] > starts[tp]}
        while remaining:
            for batch in (await consumer.getmany(*remaining, timeout_ms=500)).values():
                records.extend(batch)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return records
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # aiokafka cancels its idle task
            await consumer.stop()


async def read_ranges(
    bootstrap: str, ranges: dict[TopicPartition, tuple[int, int]], wait_s: float = 60.0
) -> dict[TopicPartition, list[ConsumerRecord]]:
    """The records of each partition from `start` up to (not including) `until`, or from
    the earliest the broker still keeps where retention has removed the start. Raises
    KafkaTimeoutError if that takes more than `wait_s`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = list(ranges)
        consumer.assign(tps)
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        stops = {tp: min(ranges[tp][1], ends[tp]) for tp in tps}
        out: dict[TopicPartition, list[ConsumerRecord]] = {tp: [] for tp in tps}
        remaining = set()
        for tp in tps:
            start = max(ranges[tp][0], firsts[tp])
            if start < stops[tp]:
                consumer.seek(tp, start)
                remaining.add(tp)
        deadline = time.monotonic() + wait_s
        while remaining:
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(
                    f"reading {sorted(map(str, remaining))} took over {wait_s} s"
                )
            for tp, batch in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                out[tp].extend(r for r in batch if r.offset < stops[tp])
            remaining = {tp for tp in remaining if await consumer.position(tp) < stops[tp]}
        return out
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # aiokafka cancels its idle task
            await consumer.stop()
