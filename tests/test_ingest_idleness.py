"""How input partitions with nothing to say let the stage watermarks move, as two ingest
loops and one stage partition see it.

Before, a partition caught up for `kafka.idle_after_s` of wall clock was reported idle
and stopped holding the stage watermarks. When a paused stream resumed in a burst, one
worker's reports carried the watermarks past the other's partitions, still idle, and
their events arrived behind it: the fault campaign dead-lettered 14,298 events `late` in
20 cycles. Now a partition read to its end reports what its worker vouches for (the
highest watermark among records handled before the fetch that showed it caught up), and
only one that stands still while input elsewhere moves past it stops holding.

The consumers and producers are stand-ins holding only what the loop asks of them (the
positions, high-water marks and poll times a fetch would leave); the real ones are
exercised by the Kafka tests."""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec
from aiokafka import TopicPartition

from pipeline.contract.events import NO_TIME
from pipeline.core.settings import load_settings
from pipeline.core.stats import Stats
from pipeline.detectors import build_stages
from pipeline.distributed.ingest_loop import IngestLoop
from pipeline.distributed.runtime import Ingest, StagePartition, TableCache, decode_batch
from pipeline.distributed.topics import Topics

SETTINGS = load_settings(
    overrides={"kafka": {"partitions": 1}, "detectors": {"silent_followers": {"enabled": False}}}
)
HOLD_S = 0.2
LATENESS = SETTINGS.event_time.allowed_lateness_ms
T0 = 1_700_000_000_000
TOPICS = Topics.from_settings(SETTINGS.kafka)
FOLLOWS = TopicPartition(TOPICS.input("follow"), 0)
FOLLOWS_B = TopicPartition(TOPICS.input("follow"), 1)
CLICKS = TopicPartition(TOPICS.input("click"), 0)


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


class _Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value = offset, value


class _Consumer:
    """A consumer owning `tps`, each read to `end` at the fetch of `polled` (wall ms)."""

    def __init__(self, tps: list[TopicPartition]) -> None:
        self.tps = set(tps)
        self.end = dict.fromkeys(tps, 0)
        self.polled = dict.fromkeys(tps, int(time.time() * 1000))

    def assignment(self) -> set[TopicPartition]:
        return self.tps

    async def position(self, tp: TopicPartition) -> int:
        return self.end[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return self.end[tp]

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return self.polled[tp]


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, partition: int | None = None) -> asyncio.Future:
        self.sent.append((topic, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Worker:
    """One worker's ingest loop over stand-ins."""

    def __init__(self, tps: list[TopicPartition]) -> None:
        kafka = msgspec.structs.replace(SETTINGS.kafka, idle_after_s=HOLD_S)
        self.loop = IngestLoop(
            kafka, Ingest(SETTINGS, STAGES, TOPICS), TOPICS, Stats(), threading.Lock()
        )
        self.consumer = _Consumer(tps)
        self.producer = _Producer()
        self.loop._consumer = self.consumer  # type: ignore[assignment]
        self.loop._producer = self.producer  # type: ignore[assignment]
        self.loop._data_since = time.monotonic() - 100  # type: ignore[attr-defined]

    def read(self, stage: StagePartition, got: dict[TopicPartition, list[int]]) -> list:
        """Fetch `got` (event seconds after T0, per partition), handle the batch, and apply
        what it sends to `stage`; the events `stage` found late."""
        records = {}
        for tp, seconds in got.items():
            start = self.consumer.end[tp]
            records[tp] = [
                _Record(start + i, _follow(tp, start + i, s)) for i, s in enumerate(seconds)
            ]
            self.consumer.end[tp] = start + len(seconds)
        for tp in self.consumer.tps:  # the fetch saw every owned partition
            self.consumer.polled[tp] = int(time.time() * 1000)
        asyncio.run(self.loop._handle(records))
        late = []
        stage_topic = TOPICS.stage(STAGES[0].detector)
        for topic, value in self.producer.sent:
            if topic == stage_topic:
                late += stage.apply(decode_batch(value), "s")[1]
        self.producer.sent.clear()
        return late


STAGES = build_stages(SETTINGS)[:1]  # follower_jump, keyed by the followed account


def _follow(tp: TopicPartition, offset: int, second: int) -> bytes:
    return msgspec.json.encode(
        {
            "event_id": f"{tp.topic}-{tp.partition}-{offset}",
            "ts": T0 + second * 1000,
            "type": "follow",
            "actor": f"a{offset}",
            "target": "t1",
        }
    )


def _stage(inputs: list[TopicPartition]) -> StagePartition:
    cache = TableCache({}, lambda key: True)
    return StagePartition(STAGES[0], cache, {_name(tp) for tp in inputs}, 8192, HOLD_S)


def test_a_paused_stream_that_resumes_in_a_burst_leaves_nothing_late() -> None:
    a, b = _Worker([FOLLOWS]), _Worker([FOLLOWS_B])
    stage = _stage([FOLLOWS, FOLLOWS_B])
    assert a.read(stage, {FOLLOWS: list(range(0, 60, 2))}) == []
    assert b.read(stage, {FOLLOWS_B: list(range(1, 60, 2))}) == []
    time.sleep(HOLD_S * 3)  # the producer pauses: both read to their ends, and wait
    for w in (a, b):
        assert w.read(stage, {}) == []
    # it resumes faster than real time: b's share of ten minutes reaches the stage first
    assert b.read(stage, {FOLLOWS_B: list(range(61, 660, 2))}) == []
    assert stage.watermark < T0 + 60_000  # a's partition still holds: its next is coming
    assert a.read(stage, {FOLLOWS: list(range(60, 660, 2))}) == []
    assert stage.watermark == T0 + 658_000 - LATENESS  # the lower of the two


def test_a_quiet_partition_follows_the_rest_of_its_workers_input_from_the_next_fetch() -> None:
    a = _Worker([FOLLOWS, CLICKS])
    stage = _stage([FOLLOWS, CLICKS])
    a.read(stage, {FOLLOWS: [0, 0, 0], CLICKS: [0, 0, 0]})
    a.read(stage, {FOLLOWS: list(range(1, 600))})  # no click for ten minutes
    a.read(stage, {})  # the next fetch: still no click, after all those follows
    assert stage.upstream[_name(CLICKS)] == (T0 + 599_000 - LATENESS, True)
    assert stage.watermark == T0 + 599_000 - LATENESS


def test_a_partition_is_vouched_for_only_up_to_its_last_fetch() -> None:
    a = _Worker([FOLLOWS, CLICKS])
    stage = _stage([FOLLOWS, CLICKS])
    a.read(stage, {FOLLOWS: [0, 0, 0], CLICKS: [0, 0, 0]})
    before = int(time.time() * 1000) - 1
    a.consumer.polled[CLICKS] = before
    time.sleep(0.01)
    records = {FOLLOWS: [_Record(3 + i, _follow(FOLLOWS, 3 + i, 1 + i)) for i in range(600)]}
    a.consumer.end[FOLLOWS] = 603
    asyncio.run(a.loop._handle(records))  # clicks not fetched since: one may be waiting
    progress = asyncio.run(a.loop._progress(a.consumer.tps))
    assert progress[_name(CLICKS)] == (T0 - LATENESS, True)
    a.consumer.polled[CLICKS] = int(time.time() * 1000)  # fetched again: nothing there
    progress = asyncio.run(a.loop._progress(a.consumer.tps))
    assert progress[_name(CLICKS)] == (T0 + 600_000 - LATENESS, True)


def _b_goes_on(a: _Worker, b: _Worker, stage: StagePartition, second: int, until: float) -> int:
    """b reads ten seconds of follows a batch at a time, a nothing, until `until`."""
    while time.monotonic() < until:
        b.read(stage, {FOLLOWS_B: list(range(second, second + 10))})
        a.read(stage, {})
        second += 10
        time.sleep(HOLD_S / 20)
    return second


def test_a_quiet_worker_stops_holding_once_input_elsewhere_moves_past_it() -> None:
    a, b = _Worker([FOLLOWS]), _Worker([FOLLOWS_B])
    stage = _stage([FOLLOWS, FOLLOWS_B])
    a.read(stage, {FOLLOWS: [0, 0, 0]})
    b.read(stage, {FOLLOWS_B: [0, 0, 0]})
    started = time.monotonic()
    second = _b_goes_on(a, b, stage, 1, started + HOLD_S / 2)
    assert stage.watermark == T0 - LATENESS  # a's silence is not yet long enough to pass
    second = _b_goes_on(a, b, stage, second, started + HOLD_S * 2)
    assert stage.watermark == T0 + (second - 1) * 1000 - LATENESS  # b's alone, now
    assert a.read(stage, {FOLLOWS: [second] * 3}) == []  # a speaks: it holds again
    assert b.read(stage, {FOLLOWS_B: list(range(second, second + 100))}) == []
    assert stage.watermark == T0 + second * 1000 - LATENESS


def test_a_worker_that_never_read_anything_stops_holding_after_the_wait() -> None:
    a, b = _Worker([CLICKS]), _Worker([FOLLOWS_B])
    stage = _stage([CLICKS, FOLLOWS_B])
    a.read(stage, {})
    b.read(stage, {FOLLOWS_B: [0, 0, 0]})
    b.read(stage, {FOLLOWS_B: [1]})
    assert stage.watermark == NO_TIME  # a holds: its first records may be on their way
    time.sleep(HOLD_S * 1.5)  # a stream that stops at once still closes its windows
    a.read(stage, {})  # a is there, and has nothing
    b.read(stage, {})
    assert stage.watermark == T0 + 1_000 - LATENESS
