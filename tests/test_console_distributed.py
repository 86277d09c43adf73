"""The case console on a distributed deployment, in a real browser: two workers on a real
Kafka broker judge the console's world (tests/test_console_api.py), `lockstep sink`
writes their findings and actions to its output directory and to an audit trail in a
real PostgreSQL server, and `lockstep console --out SINK_OUT --audit postgresql://...
--kafka` serves them, as docker-compose.yml's `lockstep-console` does.

A reviewer finds the ring's case by a member's id, reads its evidence as the workers wrote
it (the activity chart with its flagged windows, the lockstep picture, the members), and
reverses one member's throttle from the page. The revert goes out on the actions topic;
the sink takes it, once, to its actions file and the PostgreSQL trail, beside the
console's decision record; the chain verifies there, and the page says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from pipeline.distributed.topics import Topics
from tests import test_console_api, test_console_browser
from tests.helpers import HOUR, lockstep, read_jsonl, write_lines
from tests.kafka import Broker
from tests.test_console_api import _cases
from tests.test_console_browser import Console, Tab, _chart, _filter, _log_in, _reason, _until
from tests.test_kafka_worker import (
    PARTITIONS,
    PORTS,
    _env,
    _produce,
    _stop,
    _wait_for_actions,
    _wait_until_both_own_inputs,
    _worker,
)

world = test_console_api.world  # the console's world, simulated and replayed once
browser = test_console_browser.browser
tab = test_console_browser.tab
PREFIX = "consoledist"


def _tail(after_ms: int) -> list[str]:
    """Clicks of accounts of their own three hours after the world, on every partition of
    the click topic: a stream has no end a worker could see, so these carry every input
    partition's watermark past the windows replay closes at the end of its input."""
    topics = Topics(PREFIX, PARTITIONS)
    lines, per, k = [], dict.fromkeys(range(PARTITIONS), 0), 0
    while min(per.values()) < 4:
        event_id = f"tail-{k:04d}"
        per[topics.partition_of(event_id)] += 1
        ts = after_ms + 3 * HOUR + k * 1000
        event = {"event_id": event_id, "type": "click", "ts": ts, "actor": f"tail{k}",
                 "target": "tail-owner", "content_id": "tail-owner/p0"}  # fmt: skip
        lines.append(json.dumps(event))
        k += 1
    return lines


def _ts(line: str) -> int:
    """A line's event time; 0 for the world's dirt (bad JSON, no or a bad `ts`)."""
    try:
        ts = json.loads(line).get("ts")
    except (ValueError, AttributeError):
        return 0
    return ts if isinstance(ts, int) else 0


@pytest.fixture
def database(postgres: Any) -> str:
    """A database of this test's own on the shared server."""
    import psycopg

    with psycopg.connect(postgres.url, autocommit=True) as db:
        db.execute("DROP DATABASE IF EXISTS console_distributed")
        db.execute("CREATE DATABASE console_distributed")
    parts = urlsplit(postgres.url)
    return urlunsplit(parts._replace(path="/console_distributed"))


@pytest.fixture
def deployment(
    world: Path, kafka: Broker, database: str, tmp_path: Path
) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """Workers and a sink on the world plus its tail; yields the replay's outputs (what
    the deployment must hold), the sink's output directory and the Kafka environment."""
    lines = (world.parent / "world.jsonl").read_text().splitlines()
    lines += _tail(max(_ts(x) for x in lines))
    events = write_lines(tmp_path / "events.jsonl", lines)
    replayed = tmp_path / "replay"
    rep = lockstep("replay", str(events), "--out", str(replayed))
    assert rep.returncode == 0, rep.stderr.decode()
    PORTS.clear()
    env = _env(kafka, PREFIX, tmp_path)
    sink_out = tmp_path / "sink"
    sink_log = open(tmp_path / "sink.log", "wb")  # noqa: SIM115 - closed below
    workers = [_worker(env, f"w{i}", tmp_path) for i in (1, 2)]
    sink = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "sink", "--out", str(sink_out),
         "--audit", database],
        env=env, stdout=sink_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_until_both_own_inputs(workers)
        _produce(env, events)
        expected = {a["action_id"] for a in read_jsonl(replayed / "actions.jsonl")}
        # Playwright's sync API holds an event loop in this thread: Kafka is read in another
        with ThreadPoolExecutor(1) as thread:
            thread.submit(_wait_for_actions, kafka, PREFIX, tmp_path, workers, 240).result()
        deadline = time.monotonic() + 60
        while {a["action_id"] for a in read_jsonl(sink_out / "actions.jsonl")} != expected:
            assert sink.poll() is None, (tmp_path / "sink.log").read_text()
            assert time.monotonic() < deadline, "the sink did not write every action"
            time.sleep(0.5)
        kafka_env = {k: v for k, v in env.items() if k.startswith("LOCKSTEP_")}
        yield replayed, sink_out, kafka_env
    finally:
        _stop(workers)
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sink.kill()
        sink_log.close()
    logged = (tmp_path / "sink.log").read_text(errors="replace")
    assert "Traceback" not in logged, logged


def _trail_rows(url: str) -> list[tuple[str, dict[str, Any]]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute("SELECT kind, body FROM audit ORDER BY seq").fetchall()
    return [(kind, json.loads(body)) for kind, body in rows]


def test_a_reviewer_reverses_a_ring_members_throttle_on_a_distributed_deployment(
    deployment: tuple[Path, Path, dict[str, str]], database: str, tab: Tab
) -> None:
    replayed, sink_out, kafka_env = deployment
    (ring,) = _cases(replayed)["lockstep_group"]
    throttle_of = {a.subject_id: a.action_id for a in ring["actions"] if a.action == "throttle"}
    member = sorted(throttle_of)[0]
    before = len(_trail_rows(database))
    console = Console(sink_out, ("--audit", database, "--kafka"), **kafka_env)
    try:
        page = tab.page
        _log_in(tab, console.base, "li")
        page.keyboard.press("/")  # a member's id finds the group's case
        page.keyboard.type(member)
        page.keyboard.press("Enter")
        page.wait_for_selector(f'#queue tr.case-row.selected[data-case-id="{ring["case_id"]}"]')
        page.keyboard.press("Enter")  # opens it
        page.wait_for_selector("#activity-chart")
        assert page.inner_text("#explanation") == ring["explanation"]
        activity = _chart(tab, "activity-chart")  # the evidence the workers wrote
        assert activity is not None and activity["flagged"] == ring["findings"]
        picture = _chart(tab, "picture-chart")
        assert picture is not None and picture["labels"] == ring["size"]
        assert page.locator(f'#members tr[data-member="{member}"]').count() == 1
        _until(tab, "#chain-status", "Chain intact")
        tab.shot("distributed-ring")

        _filter(tab, "actions", member)
        page.click(f'tr[data-action-id="{throttle_of[member]}"] button[data-op="reverse"]')
        _reason(tab, "a fan who reposts everything, not a ring member")
        _until(tab, "#toast", "Reversed throttle: issued 1 revert")
        deadline = time.monotonic() + 60  # through Kafka to the sink
        reverts: list[dict[str, Any]] = []
        while not reverts:
            assert time.monotonic() < deadline, "the revert never reached the sink"
            time.sleep(0.5)
            reverts = [a for a in read_jsonl(sink_out / "actions.jsonl")
                       if a["action"] == "revert"]  # fmt: skip
        page.reload()
        page.wait_for_selector("#activity-chart")
        _filter(tab, "actions", member)
        _until(tab, f'tr[data-action-id="{throttle_of[member]}"] td.state', "reverted")
        _until(tab, "#chain-status", "Chain intact")
        tab.shot("distributed-reverted")
    finally:
        logged = console.stop()
    assert "Traceback" not in logged, logged
    time.sleep(2)  # a redelivery, were there one, would land by now
    assert [a["params"]["reverts"] for a in read_jsonl(sink_out / "actions.jsonl")
            if a["action"] == "revert"] == [throttle_of[member]]  # fmt: skip
    added = _trail_rows(database)[before:]
    assert sorted(kind for kind, _ in added) == ["action", "decision"]
    decision = next(body for kind, body in added if kind == "decision")
    assert (decision["action_id"], decision["reviewer"]) == (throttle_of[member], "li")
    verified = lockstep("audit", "verify", database)
    assert verified.returncode == 0, verified.stderr.decode()
    assert os.path.getsize(sink_out / "findings.jsonl") > 0
