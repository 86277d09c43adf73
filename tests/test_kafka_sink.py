"""`lockstep sink` on a real broker: the findings and actions the workers put on Kafka
reach the audit trail, the webhook receiver (signed, once per webhook-id) and
OUT/actions.jsonl; stopped and started again, it takes each record once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer

from pipeline.core.settings import load_settings
from pipeline.distributed.topics import ensure_topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, lockstep, read_jsonl
from tests.kafka import Broker
from tests.test_webhooks import SECRET, Receiver, _port

PREFIX = "sink"


def _results() -> tuple[list, list]:
    b = StreamBuilder(seed=71)
    for i in range(20):
        b.poisson_follows(f"other{i}", T0, T0 + 6 * HOUR, rate_per_hour=1 + i)
    b.burst("bought", T0 + 2 * HOUR, 300, 4 * MINUTE)
    b.burst("other5", T0 + 4 * HOUR, 300, 4 * MINUTE, prefix="more")
    engine = Engine(load_settings())
    first = engine.process([x.encode() for x in b.sorted_lines()], "t")
    last = engine.finish()
    return first.findings + last.findings, first.actions + last.actions


async def _produce(
    bootstrap: str, findings: list, actions: list, prefix: str = PREFIX, junk: bool = False
) -> None:
    """Findings and actions on their topics (and, with `junk`, two records that are not
    actions, as a broken writer would send)."""
    await ensure_topics(bootstrap, [f"{prefix}.findings", f"{prefix}.actions"], 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for f in findings:
            await producer.send(f"{prefix}.findings", msgspec.json.encode(f))
        for a in actions:
            await producer.send(
                f"{prefix}.actions", msgspec.json.encode(a), key=a.action_id.encode()
            )
        if junk:
            await producer.send(f"{prefix}.actions", b"not json")
            await producer.send(f"{prefix}.actions", b'{"action_id": "x7"}')
        await producer.flush()
    finally:
        await producer.stop()


def _sink(env: dict[str, str], out: Path, config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "sink", "--out", str(out), "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _hooks_config(tmp_path: Path, port: int) -> Path:
    """Settings with one webhook endpoint on `port` and quick retries."""
    config = tmp_path / "hooks.yaml"
    config.write_text(
        "webhooks:\n"
        f'  endpoints: [{{url: "http://127.0.0.1:{port}/h", secret: "env:HOOK_SECRET"}}]\n'
        "  retry_schedule_s: [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2]\n  wait_s: 5\n"
    )
    return config


def _wait(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_the_sink_takes_kafka_results_to_the_trail_webhooks_and_a_file_once(
    kafka: Broker, tmp_path: Path
) -> None:
    findings, actions = _results()
    assert findings and actions
    half = len(actions) // 2
    port = _port()
    config = _hooks_config(tmp_path, port)
    env = {**os.environ, "HOOK_SECRET": SECRET, "LOCKSTEP_KAFKA_BROKER": kafka.bootstrap,
           "LOCKSTEP_TOPIC_PREFIX": PREFIX, "LOCKSTEP_PARTITIONS": "2"}  # fmt: skip
    out = tmp_path / "out"
    receiver = Receiver(port)
    try:
        asyncio.run(_produce(kafka.bootstrap, findings, actions[:half], junk=True))
        sink = _sink(env, out, config)
        try:
            _wait(lambda: len(receiver.seen) == half, "the first actions were not delivered")
        except AssertionError:
            sink.terminate()
            raise AssertionError(sink.stderr.read().decode()[-3000:]) from None
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=30) == 0, sink.stderr.read().decode()
        asyncio.run(_produce(kafka.bootstrap, [], actions[half:]))
        sink = _sink(env, out, config)  # the same group: it goes on where it stopped
        _wait(lambda: len(receiver.seen) == len(actions), "the rest was not delivered")
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=30) == 0, sink.stderr.read().decode()
    finally:
        receiver.stop()
    assert set(receiver.seen) == {a.action_id for a in actions}
    assert set(receiver.seen.values()) == {1}
    written = [a["action_id"] for a in read_jsonl(out / "actions.jsonl")]
    assert sorted(written) == sorted(a.action_id for a in actions)  # appended, not replaced
    check = lockstep("audit", "verify", str(out / "audit.sqlite"))
    assert check.returncode == 0, check.stderr.decode()
    assert f"{len(findings) + len(actions)} records".encode() in check.stdout
    refused = read_jsonl(out / "dead_letter.jsonl")  # the junk, kept with where it was
    assert sorted(d["reason"] for d in refused) == ["invalid_json", "missing_field"]
    assert {d["source"].rsplit(":", 1)[0] for d in refused} == {f"{PREFIX}.actions"}
    assert "not json" in {d["raw"] for d in refused}


def test_a_reversal_on_the_review_desk_goes_through_kafka_to_every_sink(
    kafka: Broker, tmp_path: Path
) -> None:
    """Distributed: the review desk publishes the revert on the actions topic; the sink
    takes it to the webhook receiver, the actions file and the trail."""
    import httpx

    findings, actions = _results()
    port, desk = _port(), _port()
    config = _hooks_config(tmp_path, port)
    env = {**os.environ, "HOOK_SECRET": SECRET, "LOCKSTEP_KAFKA_BROKER": kafka.bootstrap,
           "LOCKSTEP_TOPIC_PREFIX": "desk", "LOCKSTEP_PARTITIONS": "2",
           "LOCKSTEP_REVIEW_TOKEN": "t0ken"}  # fmt: skip
    out = tmp_path / "out"
    receiver = Receiver(port)
    asyncio.run(_produce(kafka.bootstrap, findings, actions, prefix="desk"))
    sink = _sink(env, out, config)
    server = None
    try:
        _wait(
            lambda: len(receiver.seen) == len(actions) or sink.poll() is not None,
            f"the actions were not delivered: {len(receiver.seen)} of {len(actions)}",
        )
        assert sink.poll() is None, sink.stderr.read().decode()
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "review", "serve", "--out", str(out),
             "--config", str(config), "--port", str(desk), "--kafka"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        auth = {"Authorization": "Bearer t0ken"}
        url = f"http://127.0.0.1:{desk}/v1/actions/{actions[0].action_id}/reverse"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.post(url, headers=auth, json={"reviewer": "li", "reason": "x"})
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        revert = answer.json()["issued"][0]["action_id"]
        _wait(lambda: revert in receiver.seen, "the revert did not reach the receiver")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=30)
        receiver.stop()
    assert receiver.seen[revert] == 1
    assert revert in {a["action_id"] for a in read_jsonl(out / "actions.jsonl")}
    check = lockstep("audit", "verify", str(out / "audit.sqlite"))
    assert check.returncode == 0, check.stderr.decode()
