"""`lockstep produce`: load a JSONL file into the input topics (demos, backfills, tests).

Each line goes, unchanged, to the topic of its `type`, keyed by its `event_id` so that a
redelivery lands on the same partition as the original (where the gate drops it). A line
whose type cannot be read goes to the unrouted topic: validation, and dead-lettering,
is the worker's job, so nothing is lost here.

The file's order is kept to within half the allowed lateness of event time. A producer
appends to many partitions at once and, batch by batch, in any order among them: a
megabyte sent in one go came back from the broker with records an hour of event time
apart appended the wrong way round, so a worker that had read one partition to its end
let the stage watermarks pass records still on their way to another, and dead-lettered
them `late` where replay keeps them. So the sends are awaited each time event time moves
past the last wait by half the lateness: what is in flight together spans no more than
that, and an event that replay would not call late (within the other half of the
latest before it) is not late downstream either.
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
    ts: object = None  # any JSON: validating it is the worker's job


_peek = msgspec.json.Decoder(_Routing).decode
_KNOWN = frozenset(EVENT_TYPES)


def route(line: bytes) -> tuple[str, bytes | None, int | None]:
    """(event type or 'unrouted', key, event time if it is an integer) of one raw line,
    without validating it."""
    try:
        head = _peek(line)
    except (msgspec.DecodeError, RecursionError):  # nested too deep: the gate's too_deep
        return UNROUTED, None, None
    kind = head.type if head.type in _KNOWN else UNROUTED
    ts = head.ts if head.ts.__class__ is int else None
    return kind, head.event_id.encode() if head.event_id else None, ts


class OrderedSends:
    """Sends whose in-flight share spans at most `span_ms` of event time (the module's
    docstring): each time event time moves past the last wait by that much, everything
    sent before is awaited, appended to its partition, before the next send."""

    def __init__(self, producer: AIOKafkaProducer, span_ms: int) -> None:
        self.producer = producer
        self.span_ms = max(span_ms, 1)
        self._wait_at: int | None = None
        self._pending: list[asyncio.Future] = []

    async def send(self, topic: str, value: bytes, key: bytes | None, ts: int | None) -> None:
        if ts is not None and (self._wait_at is None or ts >= self._wait_at):
            await self.drain()
            self._wait_at = ts + self.span_ms
        self._pending.append(await self.producer.send(topic, value, key=key))

    async def drain(self) -> None:
        """Wait until every send so far is delivered (a failed one raises here)."""
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)


async def produce(
    path: str, settings: Settings, progress: Callable[[int], None] | None = None
) -> Counter[str]:
    topics = Topics.from_settings(settings.kafka)
    await ensure_topics(settings.kafka.broker, topics.inputs, topics.partitions)
    # no lingering: each wait sends what is pending at once (a 6-hour file waits 1,440 times)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.broker, linger_ms=0, max_batch_size=1 << 20, acks="all"
    )
    await producer.start()
    sends = OrderedSends(producer, settings.event_time.allowed_lateness_ms // 2)
    sent: Counter[str] = Counter()
    source = LineSource(path, settings.input.max_event_bytes)
    try:
        for lines in source:
            for line in lines:
                line = line.rstrip(b"\r\n")
                if not line:
                    continue
                kind, key, ts = route(line)
                await sends.send(topics.input(kind), line, key, ts)
                sent[kind] += 1
            await sends.drain()
            if progress is not None:
                progress(source.position())
        await producer.flush()
    finally:
        source.close()
        await producer.stop()
    return sent
