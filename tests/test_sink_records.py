"""`lockstep sink` takes each Kafka record as the contract's readers do: a finding or an
action, or a dead letter with its reason, topic, partition and offset, never an exception
(a record that stopped the sink would stop it at every start: its batch is re-read). The
decoding, without a broker: `_Batch.take` fed the records aiokafka hands it."""

from __future__ import annotations

import json

import msgspec
import pytest
from aiokafka.structs import ConsumerRecord

from pipeline.contract.findings import Action, make_finding
from pipeline.distributed.sink import _Batch
from tests.helpers import MINUTE, T0

KEEP = 8192
DEEP = 5_000  # far past the decoder's stack, and the contract's 512 levels

FINDING = make_finding(
    detector="follower_jump", article="12", subject_type="account", subject_id="bought",
    window_start=T0, window_end=T0 + 10 * MINUTE, score=0.91, severity="high", members=[],
    evidence={},
)  # fmt: skip
ACTION = Action(
    action_id="act-bought", action="human_review", subject_type="account", subject_id="bought",
    basis=["12", "19"], finding_ids=[FINDING.finding_id], mode="enforce", ts=FINDING.ts,
)  # fmt: skip


def _record(value: bytes | None, topic: str, offset: int = 7) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic, partition=1, offset=offset, timestamp=0, timestamp_type=0, key=None,
        value=value, checksum=None, serialized_key_size=0,
        serialized_value_size=len(value or b""), headers=[],
    )  # fmt: skip


def _nested(record: object, depth: int) -> bytes:
    """`record` as JSON with an extra field nested `depth` arrays deep (ignored, if read)."""
    return msgspec.json.encode(record)[:-1] + b', "zz": ' + b"[" * depth + b"]" * depth + b"}"


def _take(value: bytes | None, is_finding: bool) -> _Batch:
    batch = _Batch()
    batch.take(_record(value, "sink.findings" if is_finding else "sink.actions"), is_finding, KEEP)
    return batch


@pytest.mark.parametrize("is_finding", [True, False], ids=["finding", "action"])
def test_a_record_nested_too_deep_is_a_dead_letter_not_a_crash(is_finding: bool) -> None:
    record = FINDING if is_finding else ACTION
    batch = _take(_nested(record, DEEP), is_finding)
    assert batch.findings == [] and batch.actions == []
    (dead,) = batch.dead_letters
    assert dead.reason == "too_deep" and "nested too deeply" in dead.detail
    assert (dead.source, dead.position) == (
        f"sink.{'findings' if is_finding else 'actions'}:1",
        7,
    )
    shallow = _take(_nested(record, 100), is_finding)  # nested, yet well within the bound
    assert shallow.findings + shallow.actions == [record] and shallow.dead_letters == []


BAD = [  # a record as a broken writer might send it -> the dead letter's reason
    (None, "invalid_json"),  # a tombstone
    (b"not json", "invalid_json"),
    (b'{"action_id": "x7"}', "missing_field"),
    (b"[1, 2]", "not_object"),
    (msgspec.json.encode(msgspec.structs.replace(ACTION, mode="m" * (1 << 20))), "invalid_value"),
    (msgspec.json.encode(msgspec.structs.replace(ACTION, action_id="a\x00b")), "invalid_value"),
]


@pytest.mark.parametrize(("value", "reason"), BAD, ids=[r for _, r in BAD[:4]] + ["huge", "nul"])
def test_a_bad_action_is_a_dead_letter_with_a_one_line_reason(
    value: bytes | None, reason: str
) -> None:
    batch = _take(value, is_finding=False)
    assert batch.actions == []
    (dead,) = batch.dead_letters
    assert dead.reason == reason and 0 < len(dead.detail) < 300 and "\n" not in dead.detail
    assert dead.raw_bytes == len((value or b"").rstrip(b"\r\n"))


def test_a_finding_the_trail_cannot_store_is_a_dead_letter() -> None:
    """A NUL in an id: the audit trail refuses it (PostgreSQL cannot hold it), so the sink
    dead-letters the record rather than fail the batch at every start."""
    batch = _take(msgspec.json.encode(msgspec.structs.replace(FINDING, finding_id="f\x00")), True)
    (dead,) = batch.dead_letters
    assert batch.findings == [] and "NUL" in dead.detail and "finding_id" in dead.detail


def test_good_records_are_taken() -> None:
    batch = _Batch()
    batch.take(_record(msgspec.json.encode(FINDING), "sink.findings", 1), True, KEEP)
    batch.take(_record(msgspec.json.encode(ACTION), "sink.actions", 2), False, KEEP)
    assert (batch.findings, batch.actions, batch.dead_letters) == ([FINDING], [ACTION], [])


def test_a_finding_stamped_past_the_year_9999_is_refused_not_stored() -> None:
    """A finding whose time no audit store can hold (2**63 overflows a BIGINT) is a dead
    letter of the reader, not an error that stops the sink at the insert."""
    from pipeline.contract.findings import InvalidFinding, read_finding

    good = {
        "finding_id": "f1", "detector": "d", "article": "12", "subject_type": "account",
        "subject_id": "a", "score": 0.5, "severity": "low", "window_start": 0,
        "window_end": 1, "ts": 1,
    }  # fmt: skip
    assert read_finding(json.dumps(good).encode()).finding_id == "f1"
    for name in ("ts", "window_start", "window_end"):
        with pytest.raises(InvalidFinding):
            read_finding(json.dumps({**good, name: 2**63}).encode())
