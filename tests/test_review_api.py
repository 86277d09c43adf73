"""Review and appeals (Article 20) end to end: replay -> actions in review -> the review
API (a real server, closed without the bearer token) approves one, which is issued in
enforce mode; an appeal is filed; a reversal issues a `revert` delivered, signed, to the
webhook receiver; every step is in the audit trail, whose chain still holds."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, lockstep, read_jsonl, write_lines
from tests.test_webhooks import SECRET, Receiver, _port

TOKEN = "review-desk-token"


def _policy(tmp_path: Path) -> Path:
    """The default policy with fabricated engagement sent to review."""
    text = (Path(__file__).parent.parent / "config" / "policy.yaml").read_text()
    path = tmp_path / "review-policy.yaml"
    path.write_text(text.replace("mode: enforce", "mode: review", 1))
    return path


def test_review_appeal_and_reversal_reach_the_sinks_and_the_trail(tmp_path: Path) -> None:
    b = StreamBuilder(seed=61)
    for i in range(20):
        b.poisson_follows(f"other{i}", T0, T0 + 6 * HOUR, rate_per_hour=1 + i)
    b.burst("bought", T0 + 2 * HOUR, 300, 4 * MINUTE)
    events = write_lines(tmp_path / "events.jsonl", b.sorted_lines())
    hook_port = _port()
    config = tmp_path / "hooks.yaml"
    config.write_text(
        "webhooks:\n"
        f'  endpoints: [{{url: "http://127.0.0.1:{hook_port}/h", secret: "env:HOOK_SECRET"}}]\n'
        "  wait_s: 10\n  first_backoff_s: 0.05\n"
    )
    env = {**os.environ, "HOOK_SECRET": SECRET, "LOCKSTEP_REVIEW_TOKEN": TOKEN}
    receiver = Receiver(hook_port)
    out = tmp_path / "out"
    port = _port()
    server = None
    try:
        proc = lockstep("replay", str(events), "--out", str(out), "--config", str(config),
                        "--policy", str(_policy(tmp_path)), env=env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode()
        actions = read_jsonl(out / "actions.jsonl")
        assert set(receiver.seen) == {a["action_id"] for a in actions}
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "review", "serve", "--out", str(out),
             "--config", str(config), "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 30
        while True:
            try:
                closed = httpx.get(f"{base}/v1/reviews")
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
        assert closed.status_code == 401
        bad = httpx.get(f"{base}/v1/reviews", headers={"Authorization": "Bearer guess"})
        assert bad.status_code == 401

        pending = httpx.get(f"{base}/v1/reviews", headers=auth).json()["pending"]
        warn = next(a for a in pending if a["action"] == "warn")
        assert warn["mode"] == "review"
        decision = {"decision": "approve", "reviewer": "li", "note": "bought"}
        approved = httpx.post(f"{base}/v1/reviews/{warn['action_id']}", headers=auth, json=decision)
        assert approved.status_code == 200
        issued = approved.json()["issued"][0]
        assert issued["mode"] == "enforce" and issued["params"]["approves"] == warn["action_id"]
        again = httpx.post(f"{base}/v1/reviews/{warn['action_id']}", headers=auth,
                           json={"decision": "reject"})  # fmt: skip
        assert again.status_code == 409
        after = httpx.get(f"{base}/v1/reviews", headers=auth).json()["pending"]
        assert warn["action_id"] not in {a["action_id"] for a in after}

        filed = {"action_id": issued["action_id"], "appellant": "bought", "reason": "promo"}
        appeal = httpx.post(f"{base}/v1/appeals", headers=auth, json=filed)
        assert appeal.status_code == 200
        reversed_ = httpx.post(f"{base}/v1/actions/{issued['action_id']}/reverse", headers=auth,
                               json={"reviewer": "wang", "reason": "appeal upheld"})  # fmt: skip
        assert reversed_.status_code == 200
        revert = reversed_.json()["issued"][0]
        assert revert["action"] == "revert" and revert["params"]["reverts"] == issued["action_id"]
        assert "20" in revert["basis"]
        appeals = httpx.get(f"{base}/v1/appeals", headers=auth).json()["appeals"]
        assert [a["state"] for a in appeals] == ["reversed"]
        missing = httpx.post(f"{base}/v1/actions/nope/reverse", headers=auth, json={})
        assert missing.status_code == 404
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        receiver.stop()
    # the revert (and the approved action) reached every sink
    assert receiver.seen[revert["action_id"]] == 1 and receiver.seen[issued["action_id"]] == 1
    assert receiver.events[revert["action_id"]]["type"] == "org.lockstep.action.revert"
    written = {a["action_id"] for a in read_jsonl(out / "actions.jsonl")}
    assert {issued["action_id"], revert["action_id"]} <= written
    check = lockstep("audit", "verify", str(out / "audit.sqlite"))
    assert check.returncode == 0, check.stderr.decode()
    with sqlite3.connect(out / "audit.sqlite") as db:
        kinds = sorted({row[0] for row in db.execute("SELECT kind FROM audit")})
    assert kinds == ["action", "appeal", "decision", "finding"]
