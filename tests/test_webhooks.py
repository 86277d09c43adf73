"""Alert webhooks against a real local HTTP receiver that verifies Standard Webhooks
signatures and fails on purpose: replay -> actions -> signed CloudEvents received once per
webhook-id; a receiver down then up gets everything once from the outbox; 5xx and 429 are
retried with backoff honouring Retry-After; a spent budget or a 4xx is a dead letter."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from pipeline.outputs.webhooks import retry_after_s
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


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path: Path, port: int, **policy: float) -> Path:
    settings = {"max_attempts": 6, "first_backoff_s": 0.05, "max_backoff_s": 0.5, "wait_s": 20}
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
        summary = _replay(events, tmp_path / "a", _config(tmp_path, port, max_attempts=3))
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
