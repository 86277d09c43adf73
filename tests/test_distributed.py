"""The distributed runtime's logic without a broker: per-partition gates, the upstream
watermark rule, and tolerance of at-least-once redelivery in table-backed stages."""

from __future__ import annotations

import json

from pipeline.contract.events import NO_TIME, decoder
from pipeline.core.settings import load_settings
from pipeline.core.stage import KeyedRunner, Stage, WindowSpec
from pipeline.detectors import build_stages
from pipeline.distributed.runtime import (
    Ingest,
    StageBatch,
    StagePartition,
    TableCache,
    decode_batch,
)
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder

# follower_jump (the first stage) alone: no silent_followers for it to hand its windows to
SETTINGS = load_settings(
    overrides={"kafka": {"partitions": 2}, "detectors": {"silent_followers": {"enabled": False}}}
)
TOPICS = Topics("t", 2)


def _stage_partition(table: dict, partition: int, expected: set[str]) -> StagePartition:
    stage = build_stages(SETTINGS)[0]
    cache = TableCache(table, lambda k: TOPICS.partition_of(k) == partition)
    return StagePartition(stage, cache, expected, 8192)


def _events(lines: list[str]) -> list:
    return [decoder.decode(line.encode()) for line in lines]


def _record(events: list, watermarks: dict, offsets: list[int], source: str = "in:0") -> StageBatch:
    """A stage record of events read from one input partition at these offsets."""
    return StageBatch(events, watermarks, [(source, len(events))], offsets)


def test_watermark_waits_for_every_input_read_to_its_end_or_not() -> None:
    part = _stage_partition({}, 0, {"a:0", "b:0"})
    part.apply(StageBatch([], {"a:0": (T0, False)}), "s")
    assert part.watermark == NO_TIME  # b:0 has not reported yet
    part.apply(StageBatch([], {"b:0": (T0 - 5_000, False)}), "s")
    assert part.watermark == T0 - 5_000  # the slowest input
    part.apply(StageBatch([], {"b:0": (T0 - 9_000, True)}), "s")
    assert part.upstream["b:0"] == (T0 - 5_000, True)  # a watermark never goes back
    part.apply(StageBatch([], {"a:0": (T0 + 60_000, True)}), "s")
    assert part.watermark == T0 - 5_000  # read to its end, b:0 still holds what it vouched


def _held(hold_s: float = 5.0) -> tuple[StagePartition, list[float]]:
    clock = [0.0]
    stage = build_stages(SETTINGS)[0]
    part = StagePartition(
        stage, TableCache({}, lambda k: True), {"a:0", "b:0"}, 8192, hold_s, lambda: clock[0]
    )
    part.apply(StageBatch([], {"a:0": (T0, False), "b:0": (T0, True)}), "s")
    return part, clock


def test_an_input_standing_still_while_others_move_past_stops_holding() -> None:
    part, clock = _held()
    for second in range(1, 6):  # a:0 passes b:0 at 1 s, and goes on; b:0 says it has none
        clock[0] = second
        part.apply(StageBatch([], {"b:0": (T0, True)}), "s")
        part.apply(StageBatch([], {"a:0": (T0 + second * 1000, False)}), "s")
        assert part.watermark == T0  # b:0 has stood still for less than 5 s of a moving on
    clock[0] = 6
    part.apply(StageBatch([], {"b:0": (T0, True)}), "s")
    part.apply(StageBatch([], {"a:0": (T0 + 6_000, False)}), "s")
    assert part.watermark == T0 + 6_000  # now a:0 alone decides
    part.apply(StageBatch([], {"b:0": (T0 + 6_000, True)}), "s")  # b:0 moves: it holds again
    part.apply(StageBatch([], {"a:0": (T0 + 9_000, False)}), "s")
    assert part.watermark == T0 + 6_000


def test_the_inputs_of_a_worker_that_stopped_reporting_hold_until_their_next_owner() -> None:
    part, clock = _held()
    for second in range(1, 60):  # b:0's worker was killed: it reports nothing more
        clock[0] = second
        part.apply(StageBatch([], {"a:0": (T0 + second * 1000, False)}), "s")
    assert part.watermark == T0  # its backlog is still to come, from whoever takes it
    part.apply(StageBatch([], {"b:0": (T0 + 50_000, False)}), "s")
    assert part.watermark == T0 + 50_000


def test_a_pause_of_the_whole_input_is_not_standing_still() -> None:
    part, clock = _held()
    clock[0] = 1
    part.apply(StageBatch([], {"a:0": (T0 + 1_000, False)}), "s")
    clock[0] = 3_600  # nothing moves for an hour; then a:0 goes on first
    part.apply(StageBatch([], {"a:0": (T0 + 600_000, False)}), "s")
    assert part.watermark == T0  # b:0's next records are still to come


def test_stage_partitions_find_what_the_embedded_engine_finds_despite_redelivery() -> None:
    b = StreamBuilder(seed=4)
    for i in range(10):
        b.poisson_follows(f"acct{i}", T0, T0 + 5 * HOUR, rate_per_hour=3 + 5 * i)
    b.burst("acct3", T0 + 3 * HOUR, 300, 3 * MINUTE)
    lines = b.sorted_lines()
    engine = Engine(SETTINGS, stages=build_stages(SETTINGS)[:1])  # the stage partitioned below
    expected = {f.finding_id for f in engine.process([x.encode() for x in lines], "f").findings}
    assert expected

    ingest = Ingest(SETTINGS, build_stages(SETTINGS)[:1], TOPICS)
    table: dict[str, bytes] = {}
    parts = {p: _stage_partition(table, p, {"in:0"}) for p in range(2)}
    found: set[str] = set()
    chunk, chunked = 500, 0
    for start in range(0, len(lines), chunk):
        raws = [x.encode() for x in lines[start : start + chunk]]
        admitted = ingest.admit("in:0", raws, list(range(start, start + len(raws))))
        records = list(ingest.pack([admitted], ingest.busy("in:0"), max_events=40))
        chunked += sum(1 for _, _, r in records if not decode_batch(r).watermarks)
        if start == chunk * 3:  # a crash upstream: the same records are forwarded twice
            records = records + records
        for _, partition, record in records:
            findings, _ = parts[partition].apply(decode_batch(record), "s")
            found.update(f.finding_id for f in findings)
            parts[partition].runner.store.flush()
    assert found == expected
    assert chunked > 0  # large buckets were cut, watermarks on the last piece only
    assert sum(p.runner.duplicates for p in parts.values()) > 0


def test_a_restarted_partition_recovers_from_the_table_and_drops_what_it_closed() -> None:
    b = StreamBuilder(seed=5)
    b.poisson_follows("acct", T0, T0 + 3 * HOUR, rate_per_hour=30)
    events = _events(b.sorted_lines())
    table: dict[str, bytes] = {}
    partition = TOPICS.partition_of("acct")
    first = _stage_partition(table, partition, {"in:0"})
    half = len(events) // 2
    # the watermark lags 40 minutes behind what has arrived: many panes are still open
    mark = {"in:0": (events[half].ts - 40 * MINUTE, False)}
    first.apply(_record(events[:half], mark, list(range(half))), "s")
    first.runner.store.flush()
    closed_until = first.runner.store.get("acct").last_ts
    assert closed_until > T0

    again = _stage_partition(table, partition, {"in:0"})  # a new owner, state from the table
    assert again.runner.store.get("acct").last_ts == closed_until
    state = again.runner.store.get("acct")
    armed = {end for end, keys in again.runner._due.items() if "acct" in keys}
    assert len(state.panes) >= 3
    assert armed == {pane + 300_000 for pane in state.panes}  # every open window re-armed
    # what a crash re-reads: the last minutes before it, some of them in closed windows
    since = next(i for i, e in enumerate(events) if e.ts >= events[half].ts - 45 * MINUTE)
    redelivered = events[since:half]
    assert any(e.ts - e.ts % 300_000 + 300_000 <= closed_until for e in redelivered)
    _, late = again.apply(
        _record(redelivered, {"in:0": (NO_TIME, False)}, list(range(since, half))), "s"
    )
    assert late == []  # a redelivery, even into a closed window, is not late
    assert again.runner.duplicates == len(redelivered)  # and nothing is counted twice
    genuinely_late = StreamBuilder(seed=6)
    genuinely_late.add("follow", T0 + 60_000, "newcomer", target="acct")
    _, late = again.apply(_record(_events(genuinely_late.sorted_lines()), {}, [half]), "s")
    assert [json.loads(d.raw)["actor"] for d in late] == ["newcomer"]


def test_a_redelivery_from_hours_back_is_a_duplicate_whatever_the_dedup_horizon() -> None:
    """A fast backfill re-read after a crash can reach back hours of event time, far past
    the gate's de-duplication horizon and into windows long closed: input positions, not
    event ids or times, tell it from new events, per input partition."""
    b = StreamBuilder(seed=7)
    b.poisson_follows("acct", T0, T0 + 6 * HOUR, rate_per_hour=40)
    events = _events(b.sorted_lines())
    assert events[-1].ts - events[0].ts > 20 * SETTINGS.dedup.horizon_ms
    table: dict[str, bytes] = {}
    partition = TOPICS.partition_of("acct")
    first = _stage_partition(table, partition, {"in:0", "in:1"})
    # two input partitions, each with its own offsets, interleaved in one record
    evens, odds = events[0::2], events[1::2]
    runs = [("in:0", len(evens)), ("in:1", len(odds))]
    offsets = list(range(100, 100 + len(evens))) + list(range(7, 7 + len(odds)))
    end = {"in:0": (events[-1].ts, False), "in:1": (events[-1].ts, False)}
    _, late = first.apply(StageBatch(evens + odds, end, runs, offsets), "s")
    first.runner.store.flush()
    assert late == [] and first.runner.duplicates == 0

    again = _stage_partition(table, partition, {"in:0", "in:1"})
    again.apply(StageBatch([], end), "s")
    # in:1 is re-read from its start; in:0 from its middle, plus one event never seen
    b.add("follow", events[-1].ts + 1, "newcomer", target="acct")
    newcomer = _events(b.sorted_lines())[-1]
    half = len(evens) // 2
    runs = [("in:1", len(odds)), ("in:0", len(evens) - half + 1)]
    offsets = list(range(7, 7 + len(odds))) + list(range(100 + half, 101 + len(evens)))
    record = StageBatch(odds + evens[half:] + [newcomer], {}, runs, offsets)
    again_found, late = again.apply(record, "s")
    assert again.runner.duplicates == len(odds) + len(evens) - half
    assert late == []  # neither the redelivery nor the one new, on-time event
    assert again_found == []


def test_a_large_output_of_derived_records_is_cut_between_keys_with_the_watermark_last() -> None:
    """A backlog closes many windows in one round: its derived records go as several
    stage records under the broker's size limit, a key's records of one time together,
    the watermark only on the last."""
    from pipeline.core.derived import Derived
    from pipeline.detectors.silent_followers import SILENT_STREAM
    from pipeline.distributed.runtime import pack_derived
    from pipeline.topology import build_topology

    settings = load_settings(overrides={"kafka": {"partitions": 1}})
    stages = build_topology(settings)
    producer = next(s for s in stages if s.detector == "follower_activity")
    follows = [[T0 + i, f"follower-with-a-long-name-{i}"] for i in range(40)]
    derived = [
        Derived(
            stream=SILENT_STREAM,
            key=f"acct{k % 30}",
            ts=T0 + (k // 30) * MINUTE,
            event_id=f"{k}",
            data={"follows": follows},
        )
        for k in range(600)
    ]
    topics = Topics("t", 1)
    records = [
        decode_batch(r)
        for topic, _, r in pack_derived(derived, producer, "p:0", T0, stages, topics, 32 << 10)
        if topic == topics.stage("silent_followers")
    ]
    assert len(records) > 5
    assert all(len(r) <= 40 << 10 for _, _, r in pack_derived(
        derived, producer, "p:0", T0, stages, topics, 32 << 10))  # fmt: skip
    assert sorted(d.event_id for r in records for d in r.events) == sorted(
        d.event_id for d in derived
    )
    assert [bool(r.watermarks) for r in records] == [False] * (len(records) - 1) + [True]
    where = {}
    for i, r in enumerate(records):
        for d in r.events:
            assert where.setdefault((d.key, d.ts), i) == i  # never split


class _Judged(Stage):
    """A sliding window (four panes, one hop apart) that only records what it judges."""

    detector = "judged"
    key_field = "target"
    event_types = frozenset({"follow"})
    window = WindowSpec(4 * 5 * MINUTE, 5 * MINUTE)

    def __init__(self, judged: list[tuple[str, int]]) -> None:
        self.judged = judged

    def new_model(self) -> None:
        return None

    def new_pane(self) -> list:
        return []

    def add(self, pane: list, event: object) -> None:
        pane.append(event)

    def evaluate(self, key: str, model: None, panes: list, start: int, end: int) -> None:
        self.judged.append((key, end))


def test_a_new_owner_judges_no_window_its_key_already_closed() -> None:
    """A partition moved to a new owner, which has only the table: the windows of a
    sliding stage are judged once each, as in the embedded runtime (the new owner judged
    again every window whose panes were still open, and a churner was judged twice)."""
    lines = [
        json.dumps(
            {
                "event_id": f"e{i}",
                "type": "follow",
                "ts": T0 + i * 20_000,
                "actor": f"u{i}",
                "target": "a",
            }
        )
        for i in range(300)
    ]
    events = _events(lines)
    embedded: list[tuple[str, int]] = []
    runner = KeyedRunner(_Judged(embedded))
    runner.add_batch(events)
    runner.advance(events[-1].ts)

    judged: list[tuple[str, int]] = []
    table: dict[str, bytes] = {}

    def owner() -> StagePartition:
        cache = TableCache(table, lambda k: TOPICS.partition_of(k) == TOPICS.partition_of("a"))
        return StagePartition(_Judged(judged), cache, {"in:0"}, 8192)

    first, moved = owner(), 150
    first.apply(
        _record(events[:moved], {"in:0": (events[moved - 1].ts, False)}, list(range(moved))), "s"
    )
    first.runner.store.flush()
    second = owner()  # the rebalance: state from the table alone
    offsets = list(range(moved, len(events)))
    second.apply(_record(events[moved:], {"in:0": (events[-1].ts, False)}, offsets), "s")
    assert len(judged) == len(set(judged)), "a window judged twice"
    assert judged == embedded


def test_stage_records_stay_under_the_broker_limit_however_large_the_events() -> None:
    """A thousand long comments (the contract allows 10,000 characters) would make one
    stage record of up to 30 MB, which the producer refuses (the ingest task, and the
    worker, died).
    Records are cut by size too, in order, the watermarks on the last one only."""
    from pipeline.distributed.runtime import STAGE_RECORD_BYTES

    stages = [s for s in build_stages(SETTINGS) if s.detector == "duplicate_content"]
    ingest = Ingest(SETTINGS, stages, TOPICS)
    text = "字" * 9_000  # under the contract's 10,000 characters, 27 kB in UTF-8
    raws = [
        json.dumps(
            {"event_id": f"c{i}", "type": "comment", "ts": T0 + i, "actor": f"u{i}",
             "target": "acct", "content_id": "acct/p0", "text": text}
        ).encode()
        for i in range(200)
    ]  # fmt: skip
    admitted = ingest.admit("in:0", raws, list(range(200)))
    assert admitted.events == 200
    records = [r for _, _, r in ingest.pack([admitted], ingest.busy("in:0"))]
    assert all(len(r) <= STAGE_RECORD_BYTES for r in records)
    batches = [decode_batch(r) for r in records]
    assert [b.watermarks != {} for b in batches if b.events].count(True) == 1
    assert batches[-1].watermarks
    offsets = [o for b in batches for o in b.offsets]
    assert offsets == list(range(200))
    assert sum(c for b in batches for _, c in b.sources) == 200
