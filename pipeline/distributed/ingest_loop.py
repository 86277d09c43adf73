"""The worker's ingest side: input topics read in batches, gated, and packed for the stages.

Faust hands an agent one record at a time, which costs far more than validating it does
(see benchmarks/RESULTS.md). Ingest has no table and needs no per-record stream, so it
reads the input topics with its own consumer group (`<prefix>-ingest`) in batches of up
to `kafka.batch_size` records, and sends a few packed records per stage partition. The
stage agents stay on Faust, with their tables and changelogs.

Order of effects: a batch's dead letters and stage records are sent, and every send is
acknowledged by the broker before the input offsets are committed (once per
`commit_interval_s`, and when partitions are revoked), so a crash re-reads batches (the
stages drop what they already counted) and never loses one. The next batch is read
while the last one's sends are in flight. The watermarks of the input
partitions travel on the last record to each stage partition; when no input arrives, an
empty batch still reports them every `batch_wait_s`, so stage windows close on an idle
stream too.

A partition this worker has read to its end (a quiet event type, or a stream paused)
reports a watermark the worker can vouch for rather than its own: its next record is
appended after the fetch that showed it caught up, so it comes after, in the input's
order, every record this worker had handled by then, and replay would call it late
below the highest watermark those records reached. Its stage watermarks so move on with
the rest of this worker's input, without any wall-clock guess, and never past another
worker's (see `StagePartition` for the one guess left).

A partition that moves keeps its gate's judgement. Each commit carries, as the offset's
metadata, the mark of the gate that reached it (`Gate.mark`: the first offset whose ids
it may remember, its latest event time, a jump waiting for confirmation). The worker
that takes the partition reads it again from that first offset up to the committed one
(with a consumer of its own, before the group consumer fetches from the committed
offset), admitting those records only to remember their ids (nothing is sent), then
resumes the mark: a redelivery whose original the old owner admitted is dropped, and an event the
old owner would have called late is late here too, as in replay. (Kafka Streams keeps
its partition time in commit metadata for the same reason.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    UnknownMemberIdError,
)

from pipeline.contract.events import NO_TIME
from pipeline.core.gate import GateMark
from pipeline.core.settings import KafkaSettings
from pipeline.core.stats import Stats
from pipeline.distributed.kafka_io import read_ranges
from pipeline.distributed.runtime import Ingest
from pipeline.distributed.topics import Topics

_encode = msgspec.json.Encoder().encode
log = logging.getLogger(__name__)
_decode_mark = msgspec.json.Decoder(GateMark).decode
MAX_MARK_BYTES = 3_000  # under the broker's offset.metadata.max.bytes (4096 by default)


def encode_mark(mark: GateMark) -> str:
    """A gate's mark as commit metadata (without the jump in waiting if it is too long)."""
    text = _encode(mark).decode()
    if len(text) > MAX_MARK_BYTES:
        text = _encode(GateMark(mark.remembered_from, mark.max_ts, [])).decode()
    return text


def decode_mark(metadata: str | None) -> GateMark | None:
    """The mark in commit metadata; None where there is none (or it is not one)."""
    if not metadata:
        return None
    try:
        return _decode_mark(metadata)
    except msgspec.DecodeError:
        return None


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


class IngestLoop:
    """One worker's share of the input partitions, read and forwarded batch by batch."""

    def __init__(
        self,
        kafka: KafkaSettings,
        ingest: Ingest,
        topics: Topics,
        stats: Stats,
        stats_lock: threading.Lock,
        observe_latency: Callable[[float], None] = lambda seconds: None,
        group: str | None = None,
    ) -> None:
        self.kafka = kafka
        self.group = group or f"{kafka.topic_prefix}-ingest"
        self.ingest = ingest
        self.topics = topics
        self.stats = stats
        self.stats_lock = stats_lock  # the metrics collector reads stats from its thread
        self.observe_latency = observe_latency
        self.lag: dict[str, int] = {}
        self._next_offset: dict[TopicPartition, int] = {}  # processed up to, per partition
        # (wall ms when handled, the highest watermark of any gate here by then), rising
        self._handled: deque[tuple[int, int]] = deque([(0, NO_TIME)])
        self._committed_at = 0.0
        self._in_flight: list[asyncio.Future] = []  # sends not yet known to be delivered
        # partitions read again up to their committed offset, and the mark to resume there
        self._replaying: dict[TopicPartition, tuple[int, GateMark]] = {}
        self._lock = asyncio.Lock()  # a batch and a rebalance never interleave
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        kafka = self.kafka
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.broker,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(kafka.session_timeout_s * 1000),
            heartbeat_interval_ms=int(kafka.session_timeout_s * 1000 / 10),
            max_partition_fetch_bytes=4 << 20,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.broker, acks="all", linger_ms=5, max_request_size=4 << 20
        )
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe(list(self.topics.inputs), listener=_Rebalance(self))
        try:
            while not self.stopping.is_set():
                records = await self._next_batch()
                async with self._lock:
                    await self._handle(records)
                    if time.monotonic() - self._committed_at >= kafka.commit_interval_s:
                        await self._commit_or_rejoin()
        finally:
            await self._close()

    async def _close(self) -> None:
        """The last commit, then the clients stopped, each in bounded time."""
        try:
            await asyncio.wait_for(self._last_commit(), STOP_COMMIT_S)
        except (Exception, asyncio.CancelledError) as exc:  # its owner reads it again
            log.warning("ingest stopping without its last commit: %r", exc)
        for client in (self._consumer, self._producer):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(client.stop(), STOP_CLIENT_S)  # type: ignore[union-attr]

    async def _last_commit(self) -> None:
        """What was handled, committed on the way out. Bounded by the caller: in the middle
        of a rebalance the group may hold a commit back while its listener waits for this
        loop, and a worker told to stop must stop (what is not committed is read again by
        the partitions' next owner, and counted once)."""
        async with self._lock:
            await self._commit(list(self._next_offset))

    async def _next_batch(self) -> dict[TopicPartition, list]:
        """Up to `batch_size` records, or what arrived within `batch_wait_s`: one fetch
        often holds only a few hundred, and each batch costs a round trip to the broker."""
        assert self._consumer is not None
        size, wait = self.kafka.batch_size, self.kafka.batch_wait_s
        deadline = time.monotonic() + wait
        records: dict[TopicPartition, list] = {}
        count = 0
        while count < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = await self._consumer.getmany(
                timeout_ms=max(int(left * 1000), 1), max_records=size - count
            )
            if not got:
                break
            for tp, batch in got.items():
                records.setdefault(tp, []).extend(batch)
                count += len(batch)
        return records

    async def _handle(self, records: dict[TopicPartition, list]) -> None:
        started = time.perf_counter()
        assert self._consumer is not None and self._producer is not None
        owned = self._consumer.assignment()
        admitted = []
        inputs = 0
        for tp, batch in records.items():
            if tp not in owned or not batch:
                continue  # revoked while in flight: its new owner reads it again
            done = self._next_offset.get(tp, -1)
            if batch[0].offset < done:
                # fetched again after a hand-over or before one: handled here already
                batch = [r for r in batch if r.offset >= done]
                if not batch:
                    continue
            inputs += len(batch)
            raws = [r.value or b"" for r in batch]
            offsets = [r.offset for r in batch]
            admitted.append(self.ingest.admit(_name(tp), raws, offsets))
            self._next_offset[tp] = offsets[-1] + 1
        self._note_handled()
        with self.stats_lock:
            self.stats.inputs += inputs
            for a in admitted:
                self.stats.add_admitted(a)
        send = self._producer.send
        dead_topic = self.topics.dead_letters
        in_flight = self._in_flight
        for a in admitted:
            for d in a.dead_letters:
                in_flight.append(await send(dead_topic, _encode(d)))
        progress = await self._progress(owned)
        record_events = self.kafka.stage_record_events
        for topic, partition, record in self.ingest.pack(admitted, progress, record_events):
            in_flight.append(await send(topic, record, partition=partition))
        if inputs:
            self.observe_latency(time.perf_counter() - started)

    def _note_handled(self) -> None:
        """Remember how far this worker's gates have come, and when (see `_vouched`)."""
        gates = self.ingest.gates.values()
        reached = max((g.watermark for g in gates), default=NO_TIME)
        if reached > self._handled[-1][1]:
            self._handled.append((int(time.time() * 1000), reached))

    def _vouched(self, polled_ms: int) -> int:
        """The highest watermark of the records handled here before `polled_ms`: a
        partition caught up in a fetch at that moment has nothing to come below it."""
        handled = self._handled
        best = NO_TIME
        for at, reached in handled:
            if at > polled_ms:
                break
            best = reached
        return best

    async def _progress(self, owned: set[TopicPartition]) -> dict[str, tuple[int, bool]]:
        """Each input partition this worker owns: its watermark, and whether it is read
        to its end. A partition still being read reports its gate's watermark; one read
        to its end reports what this worker vouches for (the module's docstring)."""
        assert self._consumer is not None
        consumer = self._consumer
        progress: dict[str, tuple[int, bool]] = {}
        lag: Counter[str] = Counter()
        oldest_poll: int | None = None
        for tp in owned:
            name = _name(tp)
            own = self.ingest.watermark(name)
            position = self._next_offset.get(tp)
            if position is None:
                position = await consumer.position(tp)
            highwater = consumer.highwater(tp)
            polled = consumer.last_poll_timestamp(tp)
            if highwater is not None and polled is not None and position >= highwater:
                progress[name] = (max(own, self._vouched(polled)), True)
                oldest_poll = polled if oldest_poll is None else min(oldest_poll, polled)
            else:
                progress[name] = (own, False)
            if highwater is not None:
                lag[tp.topic] += max(highwater - position, 0)
        self.lag = dict(lag)
        self._forget_handled(oldest_poll)
        return progress

    def _forget_handled(self, oldest_poll: int | None) -> None:
        """Drop the moments no caught-up partition's poll can still need."""
        handled = self._handled
        if oldest_poll is None:
            oldest_poll = int(time.time() * 1000) - 60_000  # none caught up: keep a minute
        while len(handled) > 1 and handled[1][0] <= oldest_poll:
            handled.popleft()

    async def _commit(self, tps: list[TopicPartition]) -> None:
        """Commit after every send so far is delivered (a failed send raises here)."""
        assert self._consumer is not None
        in_flight, self._in_flight = self._in_flight, []
        await asyncio.gather(*in_flight)
        owned = self._consumer.assignment()
        offsets = {
            tp: (self._next_offset[tp], self._mark(tp))
            for tp in tps
            if tp in self._next_offset and tp in owned
        }
        if offsets:
            await self._consumer.commit(offsets)
        self._committed_at = time.monotonic()

    async def _commit_or_rejoin(self) -> None:
        """The periodic commit. One refused because the group moved on (this worker was
        late with its heartbeats, and its partitions went to another member) is not an
        end: what it held back is read again by the partitions' owner and counted once
        (the stages tell redeliveries by offset), and the consumer rejoins."""
        try:
            await self._commit(list(self._next_offset))
        except (
            CommitFailedError,
            IllegalGenerationError,
            UnknownMemberIdError,
            IllegalStateError,  # a partition revoked mid-rebalance: its owner commits it
        ) as exc:
            log.warning("ingest commit refused, the group has moved on: %s", exc)
            self._committed_at = time.monotonic()

    def _mark(self, tp: TopicPartition) -> str:
        gate = self.ingest.gates.get(_name(tp))
        return "" if gate is None else encode_mark(gate.mark())

    async def assigned(self, tps: set[TopicPartition]) -> None:
        """Partitions coming here: each goes on where its last owner committed, after
        reading again what that owner's gate remembered (see the module's docstring).
        The reading again is a consumer of its own, so the group consumer's position
        (the committed offset) and its fetches are left as they are."""
        consumer = self._consumer
        assert consumer is not None
        if not tps:
            return
        async with self._lock:
            # the public `committed` drops the metadata this needs
            committed = await consumer._coordinator.fetch_committed_offsets(tps)
            ranges = {}
            for tp, at in committed.items():
                start = self.take_over(tp, at.offset, at.metadata)
                if start is not None:
                    ranges[tp] = (start, at.offset)
            if not ranges:
                return
            try:
                seen = await read_ranges(self.kafka.broker, ranges)
            except Exception as exc:  # the broker went away: judge from the mark alone
                log.warning("could not read again what the last owner remembered: %s", exc)
                seen = {}
            for tp in ranges:
                self.reread(tp, seen.get(tp, []))

    def take_over(self, tp: TopicPartition, committed: int, metadata: str) -> int | None:
        """Go on from the mark committed with `tp`'s offset: at once, or after reading
        again from the offset this returns up to `committed` (`reread`)."""
        mark = decode_mark(metadata)
        if mark is None or committed < 0:
            return None
        self._next_offset[tp] = committed
        start = mark.remembered_from
        if start is None or start >= committed:
            self.ingest.gate(_name(tp)).resume(mark)
            return None
        self._replaying[tp] = (committed, mark)
        return start

    def reread(self, tp: TopicPartition, records: list) -> None:
        """Admit the records the old owner already handled, only for their ids (they
        were sent before), then resume the old owner's mark."""
        until, mark = self._replaying.pop(tp)
        seen = [r for r in records if r.offset < until]
        if seen:
            self.ingest.admit(_name(tp), [r.value or b"" for r in seen], [r.offset for r in seen])
        self.ingest.gate(_name(tp)).resume(mark)

    async def revoked(self, tps: set[TopicPartition]) -> None:
        """Commit what was processed of the partitions leaving, and forget their gates."""
        async with self._lock:
            with contextlib.suppress(Exception):  # the group may already have moved on
                await self._commit([tp for tp in tps if tp in self._next_offset])
            for tp in tps:
                self._next_offset.pop(tp, None)
                self._replaying.pop(tp, None)
                self.ingest.gates.pop(_name(tp), None)


STOP_COMMIT_S = 10.0  # the last commit on the way out, at most
STOP_CLIENT_S = 10.0  # closing the consumer, and the producer, at most


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: IngestLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loop.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.loop.assigned(set(assigned))
