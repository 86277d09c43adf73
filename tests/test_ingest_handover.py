"""An input partition that moves to another worker keeps its gate's judgement: the new
owner reads again from the first offset the old gate remembered, up to the committed
one, and resumes the old gate's mark. A redelivery whose original the old owner admitted
is dropped, and an event the old owner would have called late is late (before, the new
owner's gate started empty: both were admitted and counted, unlike in replay)."""

from __future__ import annotations

import json
import threading
from typing import NamedTuple

from aiokafka import TopicPartition

from pipeline.core.gate import GateMark
from pipeline.core.settings import load_settings
from pipeline.core.stats import Stats
from pipeline.detectors import build_stages
from pipeline.distributed.ingest_loop import IngestLoop, decode_mark, encode_mark
from pipeline.distributed.runtime import Ingest
from pipeline.distributed.topics import Topics
from tests.helpers import T0

SETTINGS = load_settings(overrides={"kafka": {"partitions": 1}})
TOPICS = Topics("t", 1)
TP = TopicPartition("t.events.follow", 0)
NAME = "t.events.follow:0"
LATENESS = SETTINGS.event_time.allowed_lateness_ms


class Record(NamedTuple):
    offset: int
    value: bytes


def _line(event_id: str, ts: int) -> bytes:
    event = {"event_id": event_id, "type": "follow", "ts": ts, "actor": "u", "target": "a"}
    return json.dumps(event).encode()


def _loop() -> IngestLoop:
    ingest = Ingest(SETTINGS, build_stages(SETTINGS), TOPICS)
    return IngestLoop(SETTINGS.kafka, ingest, TOPICS, Stats(), threading.Lock())


def test_the_new_owner_drops_what_the_old_one_admitted_and_holds_its_watermark() -> None:
    old_records = [Record(i, _line(f"e{i}", T0 + i * 1_000)) for i in range(100)]
    old = _loop()
    old.ingest.admit(NAME, [r.value for r in old_records], [r.offset for r in old_records])
    metadata = encode_mark(old.ingest.gates[NAME].mark())  # committed with offset 100
    new = _loop()
    start = new.take_over(TP, 100, metadata)
    assert start == 0  # every id the old gate remembers is read again
    new.reread(TP, old_records)  # read again, not handed on
    assert TP not in new._replaying and new._next_offset[TP] == 100  # resumed
    gate = new.ingest.gates[NAME]
    assert gate.watermark == old.ingest.gates[NAME].watermark
    after = [
        _line("e42", T0 + 42_000),  # a redelivery of an event the old owner admitted
        _line("late", T0 + 99_000 - LATENESS - 5_000),  # behind the old owner's watermark
        _line("fresh", T0 + 100_000),
    ]
    admitted = new.ingest.admit(NAME, after, [100, 101, 102])
    assert admitted.duplicates == 1
    assert [d.reason for d in admitted.dead_letters] == ["late"]
    assert admitted.events == 1


def test_a_mark_that_needs_no_reading_again_is_resumed_at_once() -> None:
    loop = _loop()
    mark = GateMark(remembered_from=500, max_ts=T0, ahead=[T0 + 10**9])
    assert loop.take_over(TP, 500, encode_mark(mark)) is None
    gate = loop.ingest.gates[NAME]
    assert gate.max_ts == T0 and gate._ahead == [T0 + 10**9]


def test_commit_metadata_stays_under_the_broker_limit_and_bad_metadata_is_ignored() -> None:
    long_jump = GateMark(remembered_from=1, max_ts=T0, ahead=[T0 + 10**9] * 1_000)
    metadata = encode_mark(long_jump)
    assert len(metadata) <= 3_000
    assert decode_mark(metadata) == GateMark(1, T0, [])  # the waiting jump is dropped
    for junk in ("", "not json", '{"a": 1}', "[1]"):
        assert decode_mark(junk) is None
    assert _loop().take_over(TP, 10, "not json") is None


class _Owning:
    """A consumer that owns TP, caught up; a producer that accepts every send."""

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def position(self, tp: TopicPartition) -> int:
        return 0

    def highwater(self, tp: TopicPartition) -> int:
        return 0

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return 0

    async def send(self, topic: str, value: bytes, partition: int | None = None):
        import asyncio

        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_records_fetched_again_below_the_taken_over_offset_are_not_admitted_again() -> None:
    """A batch gathered across a rebalance can hold records from before the hand-over
    (fetched from an older position): what the old owner handled is not admitted again,
    as new, behind the resumed watermark (before, thousands were then called late)."""
    import asyncio

    old_records = [Record(i, _line(f"e{i}", T0 + i * 1_000)) for i in range(100)]
    old = _loop()
    old.ingest.admit(NAME, [r.value for r in old_records], [r.offset for r in old_records])
    new = _loop()
    new._consumer = new._producer = _Owning()  # type: ignore[assignment]
    start = new.take_over(TP, 100, encode_mark(old.ingest.gates[NAME].mark()))
    new.reread(TP, old_records[start:])
    fetched = old_records[80:] + [
        Record(100 + i, _line(f"n{i}", T0 + (100 + i) * 1_000)) for i in range(5)
    ]
    asyncio.run(new._handle({TP: fetched}))
    assert new.stats.inputs == 5 and not new.stats.dead_letters_by_reason
    assert new._next_offset[TP] == 105
