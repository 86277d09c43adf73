"""A stage that raises ends its worker, saying what failed, instead of being restarted in
place by Faust (which kept the partitions in a worker that produced nothing from them)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from aiokafka import AIOKafkaProducer

from pipeline.contract.findings import Action
from pipeline.distributed.stopping import WORKER_FAILED, Failure
from pipeline.distributed.topics import Topics, ensure_topics
from pipeline.distributed.worker import EmittedActions
from tests.helpers import T0, write_lines
from tests.kafka import Broker
from tests.test_kafka_handover import _follow
from tests.test_kafka_worker import PARTITIONS, PORTS, _env, _produce, _stop, _worker


def test_the_first_failure_stops_the_worker_and_later_ones_only_log(caplog) -> None:
    stops: list[bool] = []
    failure = Failure(stop=lambda: stops.append(True))
    assert failure.exit_code() == 0
    failure.fail("stage churn", ValueError("first"))
    failure.fail("stage churn", ValueError("again, on the way down"))
    assert stops == [True]
    assert failure.exit_code() == WORKER_FAILED
    assert str(failure.reason) == "first"
    assert "stage churn failed: ValueError: first; the worker stops (exit 70)" in caplog.text


def _warn(action_id: str) -> Action:
    return Action(
        action_id=action_id,
        action="warn",
        subject_type="account",
        subject_id="acct",
        basis=["12", "19"],
        finding_ids=["f1"],
        mode="enforce",
        ts=T0,
    )


def test_an_action_counts_as_emitted_only_once_its_round_is_durable() -> None:
    """A round that failed after deciding its actions and is run again must emit them
    again: only a durable round's actions are taken as on the topic."""
    emitted = EmittedActions("127.0.0.1:9", "x.actions", PARTITIONS)  # never read here
    a, b = _warn("a"), _warn("b")
    assert [x.action_id for x in emitted.new([a, b, a])] == ["a", "b"]
    assert [x.action_id for x in emitted.new([a, b])] == ["a", "b"]  # the round failed
    emitted.sent([a])
    assert [x.action_id for x in emitted.new([a, b])] == ["b"]


async def _corrupt(bootstrap: str, topic: str, partition: int, key: str) -> None:
    """A state record no worker wrote: not a pickle of a key's state."""
    await ensure_topics(bootstrap, [topic], PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, b"\x80\x05not a state", key=json.dumps(key).encode(), partition=partition
        )
    finally:
        await producer.stop()


def test_a_stage_that_raises_ends_the_worker_with_its_reason(kafka: Broker, tmp_path: Path) -> None:
    """A real worker whose follower_jump state holds a record it cannot read (as after an
    incompatible upgrade): the round that reaches it raises, and the worker must exit
    with WORKER_FAILED and a line naming the stage and the error, within its stop bound."""
    PORTS.clear()
    prefix = "failing"
    topics = Topics(prefix, PARTITIONS)
    changelog = f"{prefix}-state-follower_jump-changelog"  # Faust's name for the table's
    asyncio.run(_corrupt(kafka.bootstrap, changelog, topics.partition_of("acct"), "acct"))
    env = _env(kafka, prefix, tmp_path)
    workers = [_worker(env, "w1", tmp_path)]
    try:
        lines = [_follow(f"s{i}", T0 + i * 1_000, f"u{i}") for i in range(50)]
        _produce(env, write_lines(tmp_path / "events.jsonl", lines))
        try:
            code = workers[0].wait(timeout=180)
        except subprocess.TimeoutExpired as exc:
            log = (tmp_path / "w1.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the worker kept running on a failed stage:\n{log}") from exc
    finally:
        _stop(workers)
    log = (tmp_path / "w1.log").read_text(errors="replace")
    assert code == WORKER_FAILED, log[-3000:]
    assert "stage follower_jump failed: UnpicklingError" in log, log[-3000:]
