"""The case console on a distributed deployment, in a real browser: two workers on a real
Kafka broker judge the console's world (tests/test_console_api.py), `lockstep sink`
writes their findings and actions to its output directory and to an audit trail in a
real PostgreSQL server, and `lockstep console --out SINK_OUT --audit postgresql://...
--kafka` serves them, as docker-compose.yml's `lockstep-console` does.

A reviewer works the story of tests/test_console_browser.py on it, screen by screen: finds
the ring's case by a member's id and reads its evidence as the workers wrote it (the
activity chart with its flagged windows, the lockstep picture, the members); reverses one
member's throttle; files an appeal against another's and overturns it; looks up a batch
member's account (its cases, nothing in force, the hook allowing it), approves its held
measure with a double click (one decision) and sees the approved copy in force once the
sink has taken it, the hook limiting it; looks up the burst's target (the subject of a
case, its measures in force); approves the ring as one with two members excluded; reads
the overview. Every revert and approved copy goes out on the actions topic; the sink
takes each, once, to its actions file and the PostgreSQL trail, beside the console's
decision records; the chain verifies there, and the page says so. A screenshot of each
screen is saved in tests/artifacts/console/ (ignored by git)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from pipeline.console.cases import NOT_MEASURES
from pipeline.contract.findings import stable_id
from pipeline.distributed.topics import Topics
from pipeline.serve.review_api import APPEAL_DECISION
from tests import test_console_api, test_console_browser
from tests.helpers import HOUR, lockstep, read_jsonl, write_lines
from tests.kafka import Broker
from tests.test_console_api import TOKEN, _cases
from tests.test_console_browser import (
    Console,
    Tab,
    _chart,
    _decide_excluding,
    _filter,
    _log_in,
    _read_overview,
    _reason,
    _reverse_and_overturn,
    _said,
    _until,
    _until_rows,
)
from tests.test_kafka_worker import (
    PARTITIONS,
    PORTS,
    _env,
    _produce,
    _read,
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


def _wait(done: Callable[[], bool], what: Callable[[], str], timeout: float = 60) -> None:
    """Wait until `done()` (asked every 0.2 s), for up to `timeout` seconds; past it, fail
    saying `what()`."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


def _off_thread(read: Callable[..., Any], *args: Any) -> Any:
    """`read(*args)` on a thread of its own: Playwright's sync API holds an event loop in
    this one, and the Kafka clients run one of their own."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(read, *args).result()


async def _behind(bootstrap: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    topic = Topics(PREFIX, PARTITIONS).actions
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await admin.start()
        try:
            ends = await consumer.end_offsets(parts)
            committed = await admin.list_consumer_group_offsets(f"{PREFIX}-sink", partitions=parts)
        finally:
            await admin.close()
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # aiokafka cancels its idle task
            await consumer.stop()
    done = {tp: max(0, c.offset) for tp, c in committed.items()}
    return sum(ends[tp] - done.get(tp, 0) for tp in parts)


def _sink_behind(bootstrap: str) -> int:
    """How many records on the actions topic the sink has not taken yet: it commits a batch
    once it has written it to every output, so at 0 whatever is on the topic (a decision's
    actions, a redelivery of them were there one) is in its files and trail."""
    return int(_off_thread(lambda: asyncio.run(_behind(bootstrap))))


def _in_force(console: Console, account: str) -> list[str]:
    """The actions in force on `account` as the console's API says now."""
    view = httpx.get(
        f"{console.base}/api/accounts/{account}", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    return sorted(a["action_id"] for a in view["in_force"])


def _ids(path: Path) -> list[str]:
    return [a["action_id"] for a in read_jsonl(path)]


def test_a_reviewer_works_a_ring_and_a_batch_on_a_distributed_deployment(
    deployment: tuple[Path, Path, dict[str, str]], database: str, kafka: Broker, tab: Tab
) -> None:
    """The browser test's story on the distributed deployment, screen by screen; then the
    actions topic, the sink's actions file and the PostgreSQL trail."""
    replayed, sink_out, kafka_env = deployment
    cases = _cases(replayed)
    (ring,) = cases["lockstep_group"]
    (burst,) = cases["follower_jump"]
    batch = max(cases["batch_registration"], key=lambda c: c["pending"])
    throttle_of = {a.subject_id: a.action_id for a in ring["actions"] if a.action == "throttle"}
    reversed_, appealed, *excluded = sorted(throttle_of)[:4]
    held = next(a for a in batch["actions"] if a.action == "restrict_functions")
    approved = stable_id("approved", held.action_id)  # the copy its approval issues
    reverts = {m: stable_id("revert", throttle_of[m]) for m in (reversed_, appealed, *excluded)}
    issued = sorted([approved, *reverts.values()])  # every action the decisions issue
    awaiting = [a for a in ring["actions"] if a.awaits_person]  # decided with the ring
    now_ms = int(time.time() * 1000)
    burst_in_force = sorted(
        a.action_id
        for a in burst["actions"]
        if a.mode == "enforce"
        and a.action not in NOT_MEASURES
        and (a.expires_at is None or a.expires_at > now_ms)
    )
    assert burst_in_force  # the world's burst leaves measures standing on its target
    actions_file = sink_out / "actions.jsonl"
    lines_before, trail_before = len(read_jsonl(actions_file)), len(_trail_rows(database))
    console = Console(sink_out, ("--audit", database, "--kafka"), **kafka_env)
    try:
        page = tab.page
        _log_in(tab, console.base, "li")
        tab.shot("1-queue")
        page.keyboard.press("/")  # a member's id finds the group's case
        page.keyboard.type(appealed)
        page.keyboard.press("Enter")
        _until_rows(tab, 1)
        assert page.get_attribute("#queue tr.case-row.selected", "data-case-id") == ring["case_id"]
        page.keyboard.press("Enter")  # opens it
        page.wait_for_selector("#activity-chart")
        assert page.inner_text("#explanation") == ring["explanation"]
        activity = _chart(tab, "activity-chart")  # the evidence the workers wrote
        assert activity is not None and activity["type"] == "line"
        assert activity["points"][0] >= 1 and activity["flagged"] == ring["findings"]
        picture = _chart(tab, "picture-chart")
        assert picture is not None and picture["labels"] == ring["size"] and sum(picture["points"])
        assert f"Members ({ring['size']})" in page.inner_text("#members-panel h2")
        assert page.locator(f'#members tr[data-member="{appealed}"]').count() == 1
        _until(tab, "#chain-status", "Chain intact")
        tab.shot("2-ring-case")

        _reverse_and_overturn(tab, throttle_of, reversed_, appealed)
        tab.shot("3-appeal-overturned")

        page.fill("#lookup-id", held.subject_id)  # a batch member's account, then its case
        page.press("#lookup-id", "Enter")
        page.wait_for_selector("#verdict")
        assert page.inner_text('#verdict tr[data-kind="follow"]').count("allowed") == 1
        assert page.locator("#in-force tr[data-action-id]").count() == 0  # held, not in force
        assert page.locator("#as-subject").count() == 0  # the subject of no case
        assert page.locator(f'#as-member tr[data-case-id="{batch["case_id"]}"]').count() == 1
        tab.shot("4-account-before")
        page.click(f'#as-member tr[data-case-id="{batch["case_id"]}"] a')
        page.wait_for_selector("#activity-chart")
        assert _chart(tab, "activity-chart")["points"][0] == batch["findings"]
        _filter(tab, "actions", held.subject_id)
        approve = f'tr[data-action-id="{held.action_id}"] button[data-op="approve"]'
        page.dblclick(approve)  # a double click opens one dialog
        _reason(tab, "one of 219 sign-ups on 9 devices", double=True)  # and sends one decision
        _said(tab, "Approved restrict_functions: issued 1 action in force")
        tab.shot("5-batch-case")
        # the approved copy goes out on the actions topic: in force once the sink wrote it
        _wait(
            lambda: approved in _ids(actions_file),
            lambda: f"the approved copy {approved} never reached the sink's actions file",
        )
        _wait(
            lambda: _in_force(console, held.subject_id) == [approved],
            lambda: (
                f"the console never saw {approved} in force: {_in_force(console, held.subject_id)}"
            ),
            timeout=30,
        )
        page.fill("#lookup-id", held.subject_id)
        page.press("#lookup-id", "Enter")
        page.wait_for_selector(f'#in-force tr[data-action-id="{approved}"]')
        assert page.locator("#in-force tr[data-action-id]").count() == 1
        assert "limited" in page.inner_text('#verdict tr[data-kind="follow"]')
        tab.shot("6-account-after")

        page.fill("#lookup-id", burst["subject_id"])  # the burst's target: a case's subject
        page.press("#lookup-id", "Enter")
        _until(tab, "#account-head h1", f"Account {burst['subject_id']}", exact=True)
        assert page.locator(f'#as-subject tr[data-case-id="{burst["case_id"]}"]').count() == 1
        assert page.locator("#as-member").count() == 0  # a member of no case
        shown = page.locator("#in-force tr[data-action-id]")
        assert sorted(shown.evaluate_all("(rows) => rows.map((r) => r.dataset.actionId)")) == (
            burst_in_force
        )
        assert "limited" not in page.inner_text("#verdict")  # nothing it holds limits it
        tab.shot("7-subject-account")

        ring_url = f"{console.base}/#/case/{ring['case_id']}"
        _decide_excluding(tab, ring_url, excluded, throttle_of)  # two members are fans
        tab.shot("8-ring-decided")
        _read_overview(tab, ring["pending"])
        tab.shot("9-overview")

        session = page.evaluate("fetch('/api/session').then((r) => r.json())")
        decisions = [(url, headers) for url, headers in tab.posts if "/api/" in url]
        assert len(decisions) == 5  # reverse, appeal, overturn, one approval, the case
        assert all(h.get("x-csrf-token") == session["csrf_token"] for _, h in decisions)

        # through Kafka to the sink: everything on the actions topic taken, the issued in it
        _wait(
            lambda: _sink_behind(kafka.bootstrap) == 0 and set(issued) <= set(_ids(actions_file)),
            lambda: (
                f"the sink is {_sink_behind(kafka.bootstrap)} record(s) behind; "
                f"missing: {set(issued) - set(_ids(actions_file))}"
            ),
            timeout=90,
        )
        page.goto(f"{console.base}/#/case/{ring['case_id']}")  # the reverts, as the sink wrote
        page.wait_for_selector("#activity-chart")
        for member, revert in reverts.items():
            _filter(tab, "actions", member)
            _until(tab, f'#actions tr[data-action-id="{throttle_of[member]}"] td.state', "reverted")
            page.wait_for_selector(f'#actions tr[data-action-id="{revert}"]')
        _until(tab, "#chain-status", "Chain intact")
        tab.shot("10-reverted")
    finally:
        logged = console.stop()
    assert "Traceback" not in logged, logged

    lines = read_jsonl(actions_file)  # exactly the issued actions, each once
    added = lines[lines_before:]
    assert sorted(a["action_id"] for a in added) == issued
    assert sorted(a["params"]["reverts"] for a in added if a["action"] == "revert") == sorted(
        throttle_of[m] for m in reverts
    )
    (copy,) = (a for a in added if a["action_id"] == approved)
    assert (copy["action"], copy["mode"], copy["subject_id"]) == (
        "restrict_functions",
        "enforce",
        held.subject_id,
    )
    assert (copy["params"]["approves"], copy["params"]["reviewer"]) == (held.action_id, "li")
    workers = set(_ids(replayed / "actions.jsonl"))
    on_topic = _off_thread(_read, kafka.bootstrap, Topics(PREFIX, PARTITIONS).actions)
    assert sorted({a["action_id"] for a in on_topic} - workers) == issued  # the console's

    rows = _trail_rows(database)[trail_before:]  # the console's records, the sink's actions
    kinds = Counter(kind for kind, _ in rows)
    assert kinds == {
        "decision": 5 + len(awaiting),
        "appeal": 1,
        APPEAL_DECISION: 1,
        "action": len(issued),
    }
    assert sorted(body["action_id"] for kind, body in rows if kind == "action") == issued
    decided = [body for kind, body in rows if kind == "decision"]
    assert {body["reviewer"] for body in decided} == {"li"}
    assert sorted(b["action_id"] for b in decided if b["decision"] == "reverse") == sorted(
        throttle_of[m] for m in reverts
    )
    assert [b["decision"] for b in decided if b["action_id"] == held.action_id] == ["approve"]
    ring_steps = Counter(
        (b["decision"], a.subject_id in excluded)
        for b in decided
        for a in awaiting
        if a.action_id == b["action_id"]
    )
    left_out = sum(a.subject_id in excluded for a in awaiting)
    assert ring_steps == {("approve", False): len(awaiting) - left_out, ("reject", True): left_out}
    (overturn,) = (body for kind, body in rows if kind == APPEAL_DECISION)
    assert (overturn["decision"], overturn["reviewer"]) == ("overturn", "li")
    verified = lockstep("audit", "verify", database)
    assert verified.returncode == 0, verified.stderr.decode()
    assert "chain intact" in verified.stdout.decode()
    assert os.path.getsize(sink_out / "findings.jsonl") > 0
