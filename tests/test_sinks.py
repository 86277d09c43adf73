"""The outputs as sinks: the fan-out hands every batch to every sink in order and stops,
error raised, at the first that fails; `Fanout.from_settings` builds the files and the
audit trail, the webhook outbox only with endpoints and Kafka only with a broker, without
importing their libraries otherwise; each sink writes what the contract says."""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from pipeline.contract.deadletter import DeadLetter, dead_letter
from pipeline.contract.findings import Action, Finding, make_finding
from pipeline.core.settings import Settings, load_settings
from pipeline.enforcement.audit import SqliteAudit
from pipeline.outputs.audit_sink import AuditSink
from pipeline.outputs.fanout import Fanout
from pipeline.outputs.jsonl_sink import JsonlSink
from pipeline.outputs.sink import Results, Sink
from pipeline.outputs.webhook_sink import WebhookSink
from tests.helpers import MINUTE, T0, read_jsonl


@dataclass
class Batch:
    findings: list[Finding] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def _batch(subject: str = "bought") -> Batch:
    finding = make_finding(
        detector="follower_jump", article="12", subject_type="account", subject_id=subject,
        window_start=T0, window_end=T0 + 10 * MINUTE, score=0.91, severity="high",
        members=[], evidence={"new_followers": 300},
    )  # fmt: skip
    action = Action(
        action_id=f"act-{subject}", action="human_review", subject_type="account",
        subject_id=subject, basis=["12"], finding_ids=[finding.finding_id], mode="enforce",
        ts=finding.ts,
    )  # fmt: skip
    refused = dead_letter("invalid_json", "truncated", "events.jsonl", 7, b'{"ts": 1', 8192)
    return Batch([finding], [action], [refused])


class Recording(Sink):
    """Notes each call in a log the test shares between sinks; `fail` names a call to
    refuse."""

    def __init__(
        self, name: str, log: list[tuple[str, str, Results | None]], fail: str = ""
    ) -> None:
        self.name, self.log, self.fail = name, log, fail

    def _note(self, call: str, results: Results | None = None) -> None:
        self.log.append((self.name, call, results))
        if call == self.fail:
            raise OSError(f"{self.name} cannot {call}")

    def write(self, results: Results) -> None:
        self._note("write", results)

    def flush(self) -> None:
        self._note("flush")

    def close(self) -> None:
        self._note("close")


def test_the_fanout_gives_every_sink_each_batch_in_order() -> None:
    log: list[tuple[str, str, Results | None]] = []
    fanout = Fanout([Recording(name, log) for name in ("files", "trail", "hooks")])
    first, second = _batch("a"), _batch("b")
    fanout.write(first)
    fanout.write(second)
    fanout.flush()
    fanout.close()
    assert [(name, call) for name, call, _ in log] == [
        (name, call)
        for call in ("write", "write", "flush", "close")
        for name in ("files", "trail", "hooks")
    ]
    assert [r for _, call, r in log if call == "write"] == [first] * 3 + [second] * 3


def test_a_sink_that_fails_stops_the_batch_there_and_its_error_is_raised() -> None:
    log: list[tuple[str, str, Results | None]] = []
    fanout = Fanout(
        [Recording("files", log), Recording("trail", log, fail="write"), Recording("hooks", log)]
    )
    with pytest.raises(OSError, match="trail cannot write"):
        fanout.write(_batch())
    assert [name for name, _, _ in log] == ["files", "trail"]  # no webhook for it


def test_closing_closes_every_sink_and_raises_the_first_failure() -> None:
    log: list[tuple[str, str, Results | None]] = []
    fanout = Fanout(
        [Recording("files", log, fail="close"), Recording("trail", log, fail="close"),
         Recording("hooks", log)]
    )  # fmt: skip
    with pytest.raises(OSError, match="files cannot close"):
        fanout.close()
    assert [name for name, _, _ in log] == ["files", "trail", "hooks"]


def _settings(**overrides: object) -> Settings:
    return load_settings(overrides=overrides or None)


def test_the_files_and_the_trail_by_default_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fanout = Fanout.from_settings(_settings(), out)
    assert [type(s) for s in fanout.sinks] == [JsonlSink, AuditSink]
    assert fanout.webhooks is None
    batch = _batch()
    fanout.write(batch)
    fanout.write(batch)  # a batch seen again (a restart): the trail takes it once
    fanout.close()
    encode = msgspec.json.encode
    assert (out / "findings.jsonl").read_bytes() == 2 * (encode(batch.findings[0]) + b"\n")
    assert (out / "actions.jsonl").read_bytes() == 2 * (encode(batch.actions[0]) + b"\n")
    assert read_jsonl(out / "dead_letter.jsonl") == 2 * [msgspec.to_builtins(batch.dead_letters[0])]
    trail = SqliteAudit(out / "audit.sqlite")
    assert [(kind, rid) for _, kind, rid, *_ in trail.rows()] == [
        ("finding", batch.findings[0].finding_id),
        ("action", batch.actions[0].action_id),
    ]
    assert trail.verify() == (2, None)
    trail.close()


def test_append_adds_to_the_files_and_fresh_starts_the_default_trail_anew(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first, second = _batch("a"), _batch("b")
    for batch, options in ((first, {}), (second, {"append": True})):
        fanout = Fanout.from_settings(_settings(), out, **options)
        fanout.write(batch)
        fanout.close()
    assert [a["subject_id"] for a in read_jsonl(out / "actions.jsonl")] == ["a", "b"]
    assert len(list(SqliteAudit(out / "audit.sqlite").rows())) == 4  # the trail keeps both
    fanout = Fanout.from_settings(_settings(), out, fresh=True)
    fanout.write(second)
    fanout.close()
    assert [a["subject_id"] for a in read_jsonl(out / "actions.jsonl")] == ["b"]
    assert len(list(SqliteAudit(out / "audit.sqlite").rows())) == 2


def test_webhook_endpoints_add_the_outbox_after_the_trail(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(b"s" * 24).decode()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{free.getsockname()[1]}/hooks"  # no one listens: pending
    settings = _settings(webhooks={"endpoints": [{"url": url, "secret": secret}]})
    out = tmp_path / "out"
    fanout = Fanout.from_settings(settings, out)
    assert [type(s) for s in fanout.sinks] == [JsonlSink, AuditSink, WebhookSink]
    assert fanout.webhooks is fanout.sinks[2]
    batch = _batch()
    fanout.write(batch)
    fanout.write(batch)  # queued once per (webhook-id, endpoint)
    assert fanout.webhooks.deliver(0) == {"pending": 1}
    fanout.close()
    db = sqlite3.connect(out / "webhook_outbox.sqlite")
    rows = list(db.execute("SELECT webhook_id, url, body, attempts FROM outbox"))
    db.close()
    assert [(wid, u, n) for wid, u, _, n in rows] == [(batch.actions[0].action_id, url, 1)]
    event = json.loads(rows[0][2])
    assert event["type"] == "org.lockstep.action.human_review"
    assert event["data"] == msgspec.to_builtins(batch.actions[0])


def test_outputs_not_asked_for_do_not_import_their_libraries(tmp_path: Path) -> None:
    """A replay without endpoints or broker starts without the HTTP client, the signing
    library, aiokafka or psycopg (a fresh process: this one may hold them already)."""
    script = (
        "import sys, pathlib\n"
        "from pipeline.core.settings import load_settings\n"
        "from pipeline.outputs.fanout import Fanout\n"
        f"fanout = Fanout.from_settings(load_settings(), pathlib.Path({str(tmp_path)!r}))\n"
        "fanout.close()\n"
        "heavy = ('httpx', 'standardwebhooks', 'aiokafka', 'psycopg')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    assert done.stdout.decode().strip() == "", done.stdout.decode()
