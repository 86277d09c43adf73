"""A stage agent's write-back lands in its partition's store, whichever store Faust uses.
Before, Faust's RocksDB store (the default, and compose's) asserted a current event on
every write, and every stage agent died at its first write-back; the tests used the
memory store and never saw it. The table here is a real Faust table over a real
RocksDB store; only the changelog (a Kafka topic) is replaced by a list: the Kafka
tests exercise it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
import pytest
from faust.types import TP

from pipeline.distributed.worker import PART_BYTES, PartitionClosed, PartitionTable


def _table(store: str, datadir: Path) -> tuple[faust.Table, list[tuple]]:
    app = faust.App(
        "partition-table-test", broker="kafka://127.0.0.1:1", store=store, datadir=datadir
    )
    table = app.Table("state", partitions=4, key_type=str, value_type=bytes)
    # the partition a worker owns is an active changelog partition: the assignor says so
    # once the group has formed, which takes a broker
    active = {TP(table.changelog_topic_name, 2)}
    app.assignor.assigned_actives = lambda: active  # type: ignore[method-assign]
    if store == "rocksdb://":
        table.data._db_for_partition(2)  # as Faust's assignment opens an active partition
    sent: list[tuple] = []
    table.send_changelog = lambda partition, key, value, **kw: sent.append((partition, key, value))  # type: ignore[method-assign]
    return table, sent


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_a_write_back_between_events_lands_in_its_partition(store: str, tmp_path: Path) -> None:
    table, sent = _table(store, tmp_path)
    view = PartitionTable(table, 2)
    view["k1"] = b"one"
    view["k2"] = b"two"
    assert view["k1"] == b"one" and view["k2"] == b"two"
    assert sorted(view) == ["k1", "k2"] and len(view) == 2
    del view["k1"]
    assert "k1" not in view and view["k2"] == b"two"
    assert sent == [(2, "k1", b"one"), (2, "k2", b"two"), (2, "k1", None)]
    if store == "rocksdb://":
        assert set(table.data._dbs) == {2}  # partition 2's database, no other


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_a_state_larger_than_a_changelog_record_is_stored_in_parts(
    store: str, tmp_path: Path
) -> None:
    """Before, one key's state over 1 MB (duplicate_content's one key, its window of
    texts and its learned models, on the 6-hour world) was refused by the producer and
    every stage agent of the worker crashed."""
    table, sent = _table(store, tmp_path)
    view = PartitionTable(table, 2)
    big = bytes(range(256)) * (5 * PART_BYTES // 256 // 2)  # two and a half parts
    view["texts"] = big
    assert all(len(v) <= PART_BYTES for _, _, v in sent if v is not None)
    assert view["texts"] == big and list(view) == ["texts"] and len(view) == 1
    reopened = PartitionTable(table, 2)  # a restarted worker's view of the same store
    assert reopened["texts"] == big
    reopened["texts"] = b"small"
    assert reopened["texts"] == b"small" and list(table.data.keys()) == ["texts"]
    reopened["texts"] = big
    del reopened["texts"]
    assert list(table.data.keys()) == []


def test_a_partition_closed_under_a_round_refuses_reads_and_writes(tmp_path: Path) -> None:
    """Faust closes a partition's RocksDB database when it is revoked or the worker
    stops. Before, a stage round still running then read every key as absent and wrote
    fresh states over their histories to the changelog; the next owner recovered them
    (in the join campaign, churners judged on a few undos, their earlier flag forgotten)."""
    table, sent = _table("rocksdb://", tmp_path)
    view = PartitionTable(table, 2)
    view["k1"] = b"one"
    table.data.revoke_partitions(table, {TP(table.changelog_topic_name, 2)})
    with pytest.raises(PartitionClosed, match="partition 2 is closed"):
        view.get("k1")
    with pytest.raises(PartitionClosed):
        view["k1"] = b"fresh"
    with pytest.raises(PartitionClosed):
        list(view)
    assert sent == [(2, "k1", b"one")]  # nothing reached the changelog after the close


def test_a_partition_not_yet_opened_opens_at_its_first_write(tmp_path: Path) -> None:
    """A worker's first rounds can come before its changelog topics are in the group's
    assignment, so before Faust opens their partitions: the store opens at the first
    write, as Faust's own writes do (the guard above once stopped every stage agent of a
    starting worker)."""
    table, sent = _table("rocksdb://", tmp_path)
    view = PartitionTable(table, 1)  # _table opened partition 2 only
    assert view.get("k1") is None
    view["k1"] = b"one"
    assert view["k1"] == b"one" and 1 in table.data._dbs
    assert sent == [(1, "k1", b"one")]


def test_a_round_waits_for_its_state_writes_to_be_acknowledged(tmp_path: Path) -> None:
    """Faust's producer buffers changelog writes, and its flush returns when one takes over
    0.1 s to leave the buffer. Before, a round could be acknowledged (its input committed)
    with its state still unsent, and the next owner resumed past events it never counted
    (a follower_jump window short of 3 follows in the join campaign, its finding lost)."""

    async def scenario() -> None:
        table, _ = _table("rocksdb://", tmp_path)
        loop = asyncio.get_running_loop()
        acks: list[asyncio.Future] = []

        def send_changelog(partition: int, key: str, value: object, **kw: object) -> asyncio.Future:
            acks.append(loop.create_future())
            return acks[-1]

        table.send_changelog = send_changelog  # type: ignore[method-assign]
        view = PartitionTable(table, 2)
        view["k1"] = b"one"
        view["k2"] = b"two"
        waiting = asyncio.ensure_future(view.written())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # neither write is acknowledged yet
        acks[0].set_result(None)
        await asyncio.sleep(0.05)
        assert not waiting.done()
        acks[1].set_result(None)
        await asyncio.wait_for(waiting, 1)
        view["k1"] = b"again"
        acks[2].set_exception(RuntimeError("broker gone"))
        with pytest.raises(RuntimeError, match="broker gone"):  # the round is not acknowledged
            await view.written()

    asyncio.run(scenario())
