"""Alert webhooks against a real local HTTP receiver that verifies Standard Webhooks
signatures and fails on purpose: replay -> actions -> signed CloudEvents received once per
webhook-id; a receiver down then up gets everything once from the outbox; 5xx and 429 are
retried with backoff honouring Retry-After; a spent budget or a 4xx is a dead letter; a
receiver that never answers, or answers a byte at a time, holds up only its own deliveries,
each attempt ending by its deadline."""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import socketserver
import sqlite3
import threading
import time
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from pipeline.contract.findings import Action
from pipeline.core.settings import ConfigError, load_settings
from pipeline.outputs import webhooks
from pipeline.outputs.webhook_sink import WebhookSink
from pipeline.outputs.webhooks import Endpoint, Outbox, Sender, WebhookPolicy, retry_after_s
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, lockstep, read_jsonl, write_lines

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


class Receiver:
    """A webhook receiver on loopback: checks each signature (401 if wrong), answers the
    first `fail` requests with `status` (and Retry-After), then 200."""

    def __init__(self, port: int, fail: int = 0, status: int = 503, retry_after: str = "") -> None:
        self.seen: Counter[str] = Counter()  # webhook-id -> accepted deliveries
        self.events: dict[str, dict] = {}
        self.requests = 0
        self.bad_signatures = 0
        self.last_accepted = 0.0  # time.monotonic() of the last accepted delivery
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.requests += 1
                try:
                    Webhook(SECRET).verify(body, dict(self.headers))
                except Exception:
                    outer.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if outer.requests <= fail or fail < 0:
                    self.send_response(status)
                    if retry_after:
                        self.send_header("Retry-After", retry_after)
                    self.end_headers()
                    return
                event = json.loads(body)
                outer.seen[self.headers["webhook-id"]] += 1
                outer.events[self.headers["webhook-id"]] = event
                outer.last_accepted = time.monotonic()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


class Stalling:
    """A receiver on loopback that reads each request, then never answers or (`trickle`)
    answers a header byte every 0.1 s, not finishing for 5 s; notes how long each client
    stayed."""

    def __init__(self, trickle: bool) -> None:
        self.spans: list[tuple[float, float]] = []  # time.monotonic(): request, client gone
        self.released = threading.Event()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(65536)
                start = time.monotonic()
                self.request.settimeout(0.1)
                if trickle:
                    self.request.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not outer.released.is_set() and time.monotonic() - start < 5:
                    try:
                        if trickle:
                            self.request.sendall(b"z")
                        if self.request.recv(1) == b"":  # the client hung up
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                outer.spans.append((start, time.monotonic()))

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, port: int, **policy: object) -> Path:
    settings: dict[str, object] = {"retry_schedule_s": [0.05, 0.1, 0.2, 0.4, 0.5], "wait_s": 20}
    settings.update(policy)
    lines = "\n".join(f"  {k}: {v}" for k, v in settings.items())
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "webhooks:\n"
        f'  endpoints: [{{url: "http://127.0.0.1:{port}/hooks", secret: "env:HOOK_SECRET"}}]\n'
        f"{lines}\n"
    )
    return path


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    b = StreamBuilder(seed=51)
    for i in range(20):
        b.poisson_follows(f"other{i}", T0, T0 + 6 * HOUR, rate_per_hour=1 + i)
    b.burst("bought", T0 + 2 * HOUR, 300, 4 * MINUTE)
    return write_lines(tmp_path_factory.mktemp("hooks") / "events.jsonl", b.sorted_lines())


def _replay(events: Path, out: Path, config: Path) -> dict:
    env = {**os.environ, "HOOK_SECRET": SECRET}
    proc = lockstep("replay", str(events), "--out", str(out), "--config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads((out / "summary.json").read_text())


def test_replay_delivers_each_action_once_signed_as_a_cloud_event_through_failures(
    events: Path, tmp_path: Path
) -> None:
    port = _port()
    receiver = Receiver(port, fail=3, status=503, retry_after="1")
    try:
        summary = _replay(events, tmp_path / "out", _config(tmp_path, port))
    finally:
        receiver.stop()
    actions = read_jsonl(tmp_path / "out" / "actions.jsonl")
    assert actions and summary["webhook_deliveries"] == {"delivered": len(actions)}
    assert set(receiver.seen) == {a["action_id"] for a in actions}
    assert set(receiver.seen.values()) == {1}  # once per webhook-id
    assert receiver.bad_signatures == 0 and receiver.requests == len(actions) + 3
    event = receiver.events[actions[0]["action_id"]]
    assert event["specversion"] == "1.0" and event["id"] == actions[0]["action_id"]
    assert event["type"] == f"org.lockstep.action.{actions[0]['action']}"
    assert event["data"] == actions[0] and event["subject"] == "account:bought"


def test_a_receiver_down_then_up_gets_everything_once_from_the_outbox(
    events: Path, tmp_path: Path
) -> None:
    port = _port()  # nothing listens yet
    summary = _replay(events, tmp_path / "out", _config(tmp_path, port, wait_s=0.5))
    actions = read_jsonl(tmp_path / "out" / "actions.jsonl")
    assert summary["webhook_deliveries"] == {"pending": len(actions)}
    receiver = Receiver(port)
    env = {**os.environ, "HOOK_SECRET": SECRET}
    outbox = str(tmp_path / "out" / "webhook_outbox.sqlite")
    args = ("webhooks", "deliver", "--outbox", outbox, "--config", str(tmp_path / "hooks.yaml"))
    try:
        first = lockstep(*args, env=env)
        again = lockstep(*args, env=env)
    finally:
        receiver.stop()
    assert first.returncode == 0 and f"{len(actions)} delivered".encode() in first.stdout
    assert again.returncode == 0
    assert set(receiver.seen) == {a["action_id"] for a in actions}
    assert set(receiver.seen.values()) == {1}  # nothing sent twice, even run again


def test_a_spent_budget_or_a_client_error_is_a_dead_letter_with_its_reason(
    events: Path, tmp_path: Path
) -> None:
    port = _port()
    receiver = Receiver(port, fail=-1, status=500)
    try:
        summary = _replay(
            events, tmp_path / "a", _config(tmp_path, port, retry_schedule_s=[0.05, 0.1])
        )
    finally:
        receiver.stop()
    actions = read_jsonl(tmp_path / "a" / "actions.jsonl")
    assert summary["webhook_deliveries"] == {"dead": len(actions)}
    assert receiver.requests == 3 * len(actions) and not receiver.seen
    port = _port()
    receiver = Receiver(port, fail=-1, status=410)
    env = {**os.environ, "HOOK_SECRET": SECRET}
    try:
        _replay(events, tmp_path / "b", _config(tmp_path, port))
        outbox = str(tmp_path / "b" / "webhook_outbox.sqlite")
        report = lockstep("webhooks", "deliver", "--outbox", outbox,
                          "--config", str(tmp_path / "hooks.yaml"), env=env)  # fmt: skip
    finally:
        receiver.stop()
    assert receiver.requests == len(actions)  # a 410 is not retried
    assert b"HTTP 410: not retried" in report.stderr


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert retry_after_s("7", now=0.0) == 7.0
    assert retry_after_s(None, now=0.0) == 0.0 and retry_after_s("soon", now=0.0) == 0.0
    assert 9.0 <= retry_after_s(formatdate(1_000_010, usegmt=True), now=1_000_000.0) <= 10.0


def test_a_missing_secret_is_one_line(events: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOOK_SECRET"}
    config = _config(tmp_path, _port())
    proc = lockstep("replay", str(events), "--out", str(tmp_path / "x"), "--config", str(config),
                    env=env)  # fmt: skip
    assert proc.returncode == 2 and b"HOOK_SECRET is not set" in proc.stderr


def test_a_live_run_delivers_in_the_background_and_keeps_the_trail(
    events: Path, tmp_path: Path
) -> None:
    port = _port()
    receiver = Receiver(port, fail=2, status=429, retry_after="1")
    env = {**os.environ, "HOOK_SECRET": SECRET}
    out = tmp_path / "live"
    try:
        proc = lockstep("run", "-", "--out", str(out), "--metrics-port", "0",
                        "--config", str(_config(tmp_path, port)),
                        input=events.read_bytes(), env=env)  # fmt: skip
    finally:
        receiver.stop()
    assert proc.returncode == 0, proc.stderr.decode()
    actions = read_jsonl(out / "actions.jsonl")
    assert actions and set(receiver.seen) == {a["action_id"] for a in actions}
    assert set(receiver.seen.values()) == {1}
    check = lockstep("audit", "verify", str(out / "audit.sqlite"))
    assert check.returncode == 0 and b"chain intact" in check.stdout


def _action(subject: str) -> Action:
    return Action(
        action_id=f"act-{subject}", action="human_review", subject_type="account",
        subject_id=subject, basis=["12"], finding_ids=[f"f-{subject}"], mode="enforce", ts=T0,
    )  # fmt: skip


def _actions(n: int, tag: str) -> list[Action]:
    return [_action(f"{tag}{i}") for i in range(n)]


@pytest.fixture
def three_receivers() -> object:
    """A healthy receiver, one that hangs and one that trickles, each its own endpoint."""
    port = _port()
    healthy, hanging, trickling = Receiver(port), Stalling(False), Stalling(True)
    urls = [f"http://127.0.0.1:{port}/hooks", hanging.url, trickling.url]
    yield healthy, hanging, trickling, [Endpoint(url, SECRET) for url in urls]
    for receiver in (healthy, hanging, trickling):
        receiver.stop()


def test_a_hanging_and_a_trickling_receiver_delay_only_their_own_deliveries(
    tmp_path: Path, three_receivers: tuple
) -> None:
    healthy, hanging, trickling, endpoints = three_receivers
    policy = WebhookPolicy(retry_schedule_s=(0.05,), timeout_s=0.5)  # 2 attempts
    outbox = Outbox(tmp_path / "outbox.sqlite")
    actions = _actions(3, "a")
    outbox.enqueue(actions, endpoints, time.time())
    sender = Sender(outbox, endpoints, policy)
    start = time.monotonic()
    counts = sender.run(wait_s=10)
    took = time.monotonic() - start
    sender.close()
    assert set(healthy.seen) == {a.action_id for a in actions}
    assert set(healthy.seen.values()) == {1}  # once per webhook-id
    stalled = hanging.spans + trickling.spans
    assert healthy.last_accepted < min(gone for _, gone in stalled)  # behind no stalled attempt
    assert len(hanging.spans) == len(trickling.spans) == 2 * len(actions)
    assert max(gone - asked for asked, gone in stalled) < policy.timeout_s + 0.5  # deadline
    assert took < 2 * len(actions) * policy.timeout_s + 2.0  # the stalled ones side by side
    assert counts == {"delivered": 3, "dead": 6}
    dead = outbox.dead()
    assert {(url, n) for _, url, n, _ in dead} == {(e.url, 2) for e in endpoints[1:]}
    assert {error for *_, error in dead} == {"no complete response within 0.5 s after 2 attempts"}
    outbox.close()


def test_background_delivery_keeps_a_healthy_receiver_current_while_others_stall(
    tmp_path: Path, three_receivers: tuple
) -> None:
    healthy, hanging, trickling, endpoints = three_receivers
    policy = WebhookPolicy(retry_schedule_s=(0.05,) + (0.1,) * 6, timeout_s=1.0)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    sink = WebhookSink(outbox, Sender(outbox, endpoints, policy))
    sink.deliver_in_background()
    sent: list[Action] = []
    for batch in range(3):  # a batch every 0.3 s, while the stalled attempts last 1 s each
        written = time.monotonic()
        sent += _actions(4, f"b{batch}-")
        sink.outbox.enqueue(sent[-4:], endpoints, time.time())
        while len(healthy.seen) < len(sent) and time.monotonic() - written < 2:
            time.sleep(0.01)
        assert len(healthy.seen) == len(sent), f"batch {batch} held up"
        assert healthy.last_accepted - written < 0.8
        time.sleep(0.3)
    closing = time.monotonic()
    sink.close()  # once the attempts in flight are done: none is sent unrecorded
    assert time.monotonic() - closing < policy.timeout_s + 0.5
    time.sleep(0.2)  # the stalled receivers notice their last client gone within 0.1 s
    assert set(healthy.seen) == {a.action_id for a in sent} and set(healthy.seen.values()) == {1}
    assert max(gone - asked for asked, gone in hanging.spans + trickling.spans) < 1.5
    check = Outbox(tmp_path / "outbox.sqlite")
    rows = list(
        check.db.execute(
            "SELECT url, state, COUNT(*), SUM(attempts) FROM outbox GROUP BY url, state"
        )
    )
    check.close()
    assert sorted(rows) == sorted(
        [(endpoints[0].url, "delivered", 12, 12),
         (hanging.url, "pending", 12, len(hanging.spans)),
         (trickling.url, "pending", 12, len(trickling.spans))]
    )  # fmt: skip


def test_background_delivery_that_fails_says_so_at_once_and_its_close_raises(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    endpoints = [Endpoint(f"http://127.0.0.1:{_port()}/hooks", SECRET)]
    sink = WebhookSink(outbox, Sender(outbox, endpoints, WebhookPolicy()))
    sink.deliver_in_background()
    outbox.db.executescript("DROP TABLE outbox; CREATE TABLE outbox (x)")  # a broken file
    deadline = time.monotonic() + 2
    while "background delivery stopped" not in capfd.readouterr().err:
        assert time.monotonic() < deadline, "the failure was not reported"
        time.sleep(0.05)
    # the thread may query between the DROP and the CREATE: either break is the failure
    with pytest.raises(sqlite3.OperationalError, match=r"no such (column|table)"):
        sink.close()


class _Clock:
    """`time.time()` run ahead on demand, for the outbox's schedule: hours of retries in
    a moment, against a real receiver (only what is due is sent, so jumping to each due
    time replays the schedule exactly)."""

    monotonic = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead

    def until(self, when: float) -> None:
        self.ahead = max(self.ahead, when - time.time())


DAY_S = 86400.0


@pytest.mark.parametrize(
    ("down_s", "state"),
    [(44.0, "delivered"), (3600.0, "delivered"), (DAY_S, "delivered"), (2 * DAY_S, "dead")],
)
def test_the_default_schedule_outlasts_a_receiver_down_for_a_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, down_s: float, state: str
) -> None:
    """The fault campaign's case: 8 attempts doubling from 1 s were over in minutes, so a
    receiver down for an hour got dead letters; now only one down for over a day does."""
    port = _port()  # refusing connections until `down_s` has passed
    url = f"http://127.0.0.1:{port}/hooks"
    cfg = load_settings(overrides={"webhooks": {"endpoints": [{"url": url, "secret": SECRET}]}})
    clock = _Clock()
    monkeypatch.setattr(webhooks, "time", clock)
    hooks = webhooks.from_settings(cfg.webhooks, tmp_path / "outbox.sqlite")
    assert hooks is not None
    outbox, sender = hooks
    start = clock.time()
    outbox.enqueue([_action("down")], sender.endpoints, start)
    receiver: Receiver | None = None
    try:
        while (due := outbox.next_due(url)) is not None:
            clock.until(due)
            if receiver is None and clock.time() - start >= down_s:
                receiver = Receiver(port)
            sender.deliver_due()
        assert outbox.counts() == {state: 1}
        dead = outbox.dead()
    finally:
        sender.close()
        outbox.close()
        if receiver is not None:
            receiver.stop()
    if state == "delivered":
        assert receiver is not None and receiver.seen == {"act-down": 1}
    else:
        assert receiver is None and len(dead) == 1
        assert dead[0][2] == 8 and dead[0][3].endswith("after 8 attempts")


def test_a_receiver_503_past_the_old_attempt_count_still_gets_the_delivery(
    tmp_path: Path,
) -> None:
    """Ten 503s, more than the 8 attempts that used to be all: still pending, then once."""
    port = _port()
    receiver = Receiver(port, fail=10, status=503)
    endpoints = [Endpoint(f"http://127.0.0.1:{port}/hooks", SECRET)]
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.enqueue([_action("late")], endpoints, time.time())
    sender = Sender(outbox, endpoints, WebhookPolicy(retry_schedule_s=(0.02,) * 12))
    try:
        counts = sender.run(wait_s=4)
        attempts = outbox.db.execute("SELECT attempts FROM outbox").fetchone()[0]
    finally:
        sender.close()
        outbox.close()
        receiver.stop()
    assert counts == {"delivered": 1} and attempts == 11
    assert receiver.requests == 11 and receiver.seen == {"act-late": 1}


def test_a_retry_waits_its_scheduled_delay_with_jitter_and_any_longer_retry_after(
    tmp_path: Path,
) -> None:
    plain, slow = _port(), _port()
    receivers = [Receiver(plain, fail=-1), Receiver(slow, fail=-1, retry_after="100")]
    endpoints = [Endpoint(f"http://127.0.0.1:{p}/hooks", SECRET) for p in (plain, slow)]
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.enqueue([_action("s")], endpoints, time.time())
    sender = Sender(outbox, endpoints, WebhookPolicy(retry_schedule_s=(10, 20)))
    before = time.time()
    try:
        assert sender.deliver_due() == 2
        after = time.time()
        plain_due, slow_due = (outbox.next_due(e.url) for e in endpoints)
    finally:
        sender.close()
        outbox.close()
        for receiver in receivers:
            receiver.stop()
    assert plain_due is not None and before + 10 <= plain_due <= after + 10 * 1.2
    assert slow_due is not None and before + 100 <= slow_due <= after + 100


@pytest.mark.parametrize(
    "schedule", [[], [0], [-5], [math.inf], [5, math.nan], 5, ["soon"]], ids=repr
)
def test_a_retry_schedule_must_be_positive_finite_delays(schedule: object) -> None:
    with pytest.raises(ConfigError, match=r"at `\$\.webhooks\.retry_schedule_s"):
        load_settings(overrides={"webhooks": {"retry_schedule_s": schedule}})


def test_the_replaced_retry_keys_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown field `max_attempts`"):
        load_settings(overrides={"webhooks": {"max_attempts": 8}})


def _deliver(outbox: Path, config: Path, *options: str):
    env = {**os.environ, "HOOK_SECRET": SECRET}
    return lockstep("webhooks", "deliver", "--outbox", str(outbox), "--config", str(config),
                    *options, env=env)  # fmt: skip


def test_dead_letters_sent_again_with_dead_reach_the_receiver_once_each(tmp_path: Path) -> None:
    port = _port()
    endpoints = [Endpoint(f"http://127.0.0.1:{port}/hooks", SECRET)]
    actions = _actions(4, "d")
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue(actions, endpoints, time.time())
    failing = Receiver(port, fail=-1, status=500)
    sender = Sender(outbox, endpoints, WebhookPolicy(retry_schedule_s=(0.02,)))
    try:
        assert sender.run(wait_s=4) == {"dead": 4}
    finally:
        sender.close()
        outbox.close()
        failing.stop()
    config = _config(tmp_path, port)
    receiver = Receiver(port)  # back up
    try:
        plain = _deliver(path, config, "--wait-s", "2")
        assert plain.returncode == 0 and b"4 dead" in plain.stdout and receiver.requests == 0
        resent = _deliver(path, config, "--dead")
        again = _deliver(path, config, "--dead")
    finally:
        receiver.stop()
    assert resent.returncode == 0, resent.stderr.decode()
    assert b"4 dead letters resent" in resent.stdout and b"4 delivered" in resent.stdout
    log = resent.stderr.decode().splitlines()
    assert len(log) == 4 and all("(was: HTTP 500 after 2 attempts)" in line for line in log)
    assert f"resending dead letter: act-d0 to {endpoints[0].url}" in log[0]
    assert again.returncode == 0 and b"0 dead letters resent" in again.stdout
    assert receiver.seen == Counter({a.action_id: 1 for a in actions})  # exactly once each
    assert receiver.requests == 4 and receiver.bad_signatures == 0


def test_now_sends_pending_rows_before_their_due_time(tmp_path: Path) -> None:
    """Three rows told to come back in an hour (Retry-After) go out at once with --now."""
    port = _port()
    endpoints = [Endpoint(f"http://127.0.0.1:{port}/hooks", SECRET)]
    actions = _actions(3, "n")
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue(actions, endpoints, time.time())
    receiver = Receiver(port, fail=3, status=503, retry_after="3600")
    sender = Sender(outbox, endpoints, WebhookPolicy())
    try:
        assert sender.deliver_due() == 3
        assert outbox.counts() == {"pending": 3}
        assert (outbox.next_due(endpoints[0].url) or 0) > time.time() + 3500
        sender.close()
        outbox.close()
        config = _config(tmp_path, port)
        waiting = _deliver(path, config, "--wait-s", "2")
        assert waiting.returncode == 0 and b"3 pending" in waiting.stdout
        assert receiver.requests == 3  # not due: not sent
        now = _deliver(path, config, "--now")
    finally:
        receiver.stop()
    assert now.returncode == 0, now.stderr.decode()
    assert b"3 pending sent now" in now.stdout and b"3 delivered" in now.stdout
    assert receiver.seen == Counter({a.action_id: 1 for a in actions})
    assert receiver.requests == 6


def test_deliver_without_an_outbox_is_one_line(tmp_path: Path) -> None:
    proc = _deliver(tmp_path / "missing.sqlite", _config(tmp_path, _port()), "--dead", "--now")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == [
        f"lockstep: no outbox at {tmp_path / 'missing.sqlite'}"
    ]
