"""`replay` (and `run`) with `publish.broker` set: the embedded runtime's actions, and
findings when asked, land on the real broker's topics as workers write them (contract
§5), the same records as the files; a broker that cannot be reached stops the run with
one line before it writes anything."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import msgspec

from pipeline.distributed.kafka_io import read_to_end
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, lockstep, read_jsonl
from tests.kafka import Broker


def _events(path: Path) -> None:
    b = StreamBuilder(seed=72)
    for i in range(10):
        b.poisson_follows(f"other{i}", T0, T0 + 5 * HOUR, rate_per_hour=2 + i)
    b.burst("bought", T0 + 2 * HOUR, 300, 4 * MINUTE)
    b.burst("other3", T0 + 3 * HOUR, 300, 4 * MINUTE, prefix="more")
    path.write_text("".join(line + "\n" for line in b.sorted_lines()))


def test_replay_publishes_its_actions_and_findings_on_kafka(kafka: Broker, tmp_path: Path) -> None:
    events, out = tmp_path / "events.jsonl", tmp_path / "out"
    _events(events)
    config = tmp_path / "publish.yaml"
    config.write_text("publish:\n  findings: true\n")
    env = {**os.environ, "LOCKSTEP_PUBLISH_BROKER": kafka.bootstrap,
           "LOCKSTEP_TOPIC_PREFIX": "pub", "LOCKSTEP_PARTITIONS": "2"}  # fmt: skip
    done = lockstep("replay", str(events), "--out", str(out), "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr.decode()
    actions = read_jsonl(out / "actions.jsonl")
    findings = read_jsonl(out / "findings.jsonl")
    assert actions and findings

    on_topic = asyncio.run(read_to_end(kafka.bootstrap, "pub.actions", 2))
    assert sorted(msgspec.json.decode(r.value)["action_id"] for r in on_topic) == sorted(
        a["action_id"] for a in actions
    )
    assert all(r.key.decode() == msgspec.json.decode(r.value)["action_id"] for r in on_topic)
    published = asyncio.run(read_to_end(kafka.bootstrap, "pub.findings", 2))
    assert sorted(msgspec.json.decode(r.value)["finding_id"] for r in published) == sorted(
        f["finding_id"] for f in findings
    )
    assert all(r.key.decode() == msgspec.json.decode(r.value)["subject_id"] for r in published)


def test_actions_only_unless_findings_are_asked_for(kafka: Broker, tmp_path: Path) -> None:
    events, out = tmp_path / "events.jsonl", tmp_path / "out"
    _events(events)
    env = {**os.environ, "LOCKSTEP_PUBLISH_BROKER": kafka.bootstrap,
           "LOCKSTEP_TOPIC_PREFIX": "pubactions", "LOCKSTEP_PARTITIONS": "2"}  # fmt: skip
    done = lockstep("replay", str(events), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr.decode()
    on_topic = asyncio.run(read_to_end(kafka.bootstrap, "pubactions.actions", 2))
    assert len(on_topic) == len(read_jsonl(out / "actions.jsonl")) > 0
    assert asyncio.run(read_to_end(kafka.bootstrap, "pubactions.findings", 2, wait_s=3)) == []


def test_a_broker_that_cannot_be_reached_is_one_line_and_nothing_written(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    events, out = tmp_path / "events.jsonl", tmp_path / "out"
    _events(events)
    env = {**os.environ, "LOCKSTEP_PUBLISH_BROKER": f"127.0.0.1:{port}"}
    started = time.monotonic()
    done = lockstep("replay", str(events), "--out", str(out), env=env)
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and f"Kafka at 127.0.0.1:{port}" in lines[0], lines
    assert not (out / "actions.jsonl").exists()
    assert time.monotonic() - started < 90
