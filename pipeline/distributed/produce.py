"""`lockstep produce`: load a JSONL file into the input topics (demos, backfills, tests).

Each line goes, unchanged, to the topic of its `type`, keyed by its `event_id` so that a
redelivery lands on the same partition as the original (where the gate drops it). A line
whose type cannot be read goes to the unrouted topic: validation, and dead-lettering,
is the worker's job, so nothing is lost here.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import msgspec
from aiokafka import AIOKafkaProducer

from pipeline.contract.events import EVENT_TYPES
from pipeline.core.settings import Settings
from pipeline.core.sources import LineSource
from pipeline.distributed.topics import UNROUTED, Topics, ensure_topics


class _Routing(msgspec.Struct):
    type: str = UNROUTED
    event_id: str | None = None


_peek = msgspec.json.Decoder(_Routing).decode
_KNOWN = frozenset(EVENT_TYPES)


def route(line: bytes) -> tuple[str, bytes | None]:
    """(event type or 'unrouted', key) of one raw line, without validating it."""
    try:
        head = _peek(line)
    except (msgspec.DecodeError, RecursionError):  # nested too deep: the gate's too_deep
        return UNROUTED, None
    kind = head.type if head.type in _KNOWN else UNROUTED
    return kind, head.event_id.encode() if head.event_id else None


async def produce(
    path: str, settings: Settings, progress: Callable[[int], None] | None = None
) -> Counter[str]:
    topics = Topics.from_settings(settings.kafka)
    await ensure_topics(settings.kafka.broker, topics.inputs, topics.partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.broker, linger_ms=20, max_batch_size=1 << 20, acks="all"
    )
    await producer.start()
    sent: Counter[str] = Counter()
    source = LineSource(path, settings.input.max_event_bytes)
    try:
        for lines in source:
            pending = []
            for line in lines:
                line = line.rstrip(b"\r\n")
                if not line:
                    continue
                kind, key = route(line)
                pending.append(await producer.send(topics.input(kind), line, key=key))
                sent[kind] += 1
            await asyncio.gather(*pending)
            if progress is not None:
                progress(source.position())
        await producer.flush()
    finally:
        source.close()
        await producer.stop()
    return sent
