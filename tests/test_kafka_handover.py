"""A worker that stops hands its input partitions over with its gates' judgement: the
worker taking them drops a redelivery whose original the first one admitted, and calls
late an event the first one would have called late, as replay does. Before, the second
worker's gates started empty and admitted both."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from tests.helpers import T0, write_lines
from tests.kafka import Broker
from tests.test_kafka_worker import PORTS, _diagnostics, _env, _produce, _read, _stop, _worker

LATENESS_MS = 30_000  # config/lockstep.yaml event_time.allowed_lateness_ms, checked below


def _follow(event_id: str, ts: int, actor: str) -> str:
    return json.dumps(
        {"event_id": event_id, "type": "follow", "ts": ts, "actor": actor, "target": "acct"}
    )


def _metric(port: int, name: str) -> float:
    """The sum of a worker's samples of `name` (0 if it has none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name))


def _wait_for_inputs(port: int, count: int, workers: list, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            assert w.poll() is None, f"a worker exited with {w.returncode}"
        try:
            if _metric(port, "lockstep_inputs_total") >= count:
                return
        except OSError:
            pass  # not serving yet
        time.sleep(0.5)
    raise AssertionError(f"the worker never read {count} inputs\n{_diagnostics()}")


def test_a_partition_handed_over_keeps_its_redeliveries_and_watermark(
    kafka: Broker, tmp_path: Path
) -> None:
    from pipeline.core.settings import load_settings

    assert load_settings().event_time.allowed_lateness_ms == LATENESS_MS
    PORTS.clear()
    first = [_follow(f"a{i}", T0 + i * 1_000, f"u{i}") for i in range(600)]
    later = [
        first[590],  # a redelivery, after the hand-over, of an event the first worker read
        _follow("late", T0 + 599_000 - LATENESS_MS - 60_000, "slow"),  # behind its watermark
        *[_follow(f"b{i}", T0 + 600_000 + i * 1_000, f"v{i}") for i in range(50)],
    ]
    env = _env(kafka, "handover", tmp_path)
    workers = [_worker(env, "w1", tmp_path)]
    try:
        _produce(env, write_lines(tmp_path / "first.jsonl", first))
        _wait_for_inputs(PORTS["w1"], len(first), workers)
        time.sleep(3)  # a commit or two (kafka.commit_interval_s: 1)
        workers[0].send_signal(signal.SIGTERM)
        workers[0].wait(timeout=60)
        _produce(env, write_lines(tmp_path / "later.jsonl", later))
        workers = [_worker(env, "w2", tmp_path)]
        _wait_for_inputs(PORTS["w2"], len(later), workers)  # only the new ones count
        time.sleep(2)
        duplicates = _metric(PORTS["w2"], "lockstep_duplicate_events_total")
        late = _metric(PORTS["w2"], 'lockstep_dead_letters_total{reason="late"}')
    finally:
        _stop(workers)
    assert duplicates == 1, "the redelivery was counted again"
    assert late == 1, "the late event was admitted"
    dead = _read(kafka.bootstrap, "handover.dead-letters")
    assert [(d["reason"], json.loads(d["raw"])["event_id"]) for d in dead] == [("late", "late")]
