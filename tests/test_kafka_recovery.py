"""A worker killed with SIGKILL mid-stream and restarted: no finding is lost, and no
action_id appears twice on the actions topic; no event is dead-lettered late."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.kafka import Broker
from tests.test_kafka_worker import (
    PORTS,
    _difference,
    _env,
    _produce,
    _read,
    _replay,
    _replayed_actions,
    _stop,
    _stream,
    _wait_for_actions,
    _wait_for_findings,
    _wait_until_both_own_inputs,
    _worker,
)


def test_sigkill_loses_no_finding_and_duplicates_no_action(kafka: Broker, tmp_path: Path) -> None:
    PORTS.clear()
    lines = _stream(hours=10, seed=37)
    events, expected = _replay(tmp_path, lines)
    env = _env(kafka, "crash", tmp_path)
    workers = [_worker(env, f"w{i}", tmp_path) for i in (1, 2)]
    try:
        _wait_until_both_own_inputs(workers)
        _produce(env, events)
        deadline = time.monotonic() + 120
        while not _read(kafka.bootstrap, "crash.findings"):  # mid-stream: some findings out
            assert time.monotonic() < deadline, "no finding before the kill"
            time.sleep(0.2)
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(timeout=10)
        time.sleep(2)
        workers[1] = _worker(env, "w2b", tmp_path)
        _wait_for_findings(kafka, "crash", expected, workers, timeout=240)
        _wait_for_actions(kafka, "crash", tmp_path, workers, timeout=120)
        time.sleep(5)
        actions = _read(kafka.bootstrap, "crash.actions")
    finally:
        _stop(workers)
    ids = [a["action_id"] for a in actions]
    assert len(ids) == len(set(ids)), "an action_id appeared twice"
    replay_actions = _replayed_actions(tmp_path)
    dead = _read(kafka.bootstrap, "crash.dead-letters")
    lost = [(d["reason"], d["source"], d["position"], d["detail"]) for d in dead
            if d["reason"] != "invalid_json"]  # fmt: skip
    assert [d["reason"] for d in dead] == ["invalid_json"], f"lost after the kill: {lost}"
    assert set(ids) == replay_actions


def test_a_worker_joining_under_load_loses_and_duplicates_nothing(
    kafka: Broker, tmp_path: Path
) -> None:
    """Partitions move while one worker is busy: the second joins mid-stream."""
    PORTS.clear()
    lines = _stream(hours=10, seed=41)
    events, expected = _replay(tmp_path, lines)
    env = _env(kafka, "join", tmp_path)
    workers = [_worker(env, "w1", tmp_path)]
    try:
        _produce(env, events)
        deadline = time.monotonic() + 120
        while not _read(kafka.bootstrap, "join.findings"):  # the first worker is under way
            assert time.monotonic() < deadline, "no finding from the first worker"
            time.sleep(0.2)
        workers.append(_worker(env, "w2", tmp_path))
        _wait_until_both_own_inputs(workers)
        _wait_for_findings(kafka, "join", expected, workers, timeout=240)
        _wait_for_actions(kafka, "join", tmp_path, workers, timeout=120)
        time.sleep(5)
        found = _read(kafka.bootstrap, "join.findings")
        actions = _read(kafka.bootstrap, "join.actions")
    finally:
        _stop(workers)
    dead = _read(kafka.bootstrap, "join.dead-letters")
    late = [(d["source"], d["position"], d["detail"]) for d in dead if d["reason"] == "late"]
    assert {f["finding_id"] for f in found} == expected, f"{_difference(found, tmp_path)}; {late}"
    ids = [a["action_id"] for a in actions]
    assert len(ids) == len(set(ids)), "an action_id appeared twice"
    assert set(ids) == _replayed_actions(tmp_path)
