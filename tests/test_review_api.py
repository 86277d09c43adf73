"""Review and appeals (Article 20) end to end: replay -> actions in review -> the review
API (a real server, closed without the bearer token) approves one, which is issued in
enforce mode; an appeal is filed; a reversal issues a `revert` delivered, signed, to the
webhook receiver; every step is in the audit trail, whose chain still holds. The desk lists
the measures that await a person, and its revert lifts a block at the throttling hook."""

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
        retry = httpx.post(f"{base}/v1/actions/{issued['action_id']}/reverse", headers=auth,
                           json={"reviewer": "zhao", "reason": "client retry"})  # fmt: skip
        assert retry.status_code == 409
        assert retry.json()["issued"] == [revert]  # the first decision's revert, issued again
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


def test_a_decision_whose_actions_could_not_be_published_is_issued_again_on_repeat(
    tmp_path: Path,
) -> None:
    """With `--kafka` the desk publishes after recording; when the broker fails, the
    reviewer gets a 503 and repeating the request publishes the same revert (a real
    aiohttp server over a real SQLite trail; the publisher is a stand-in that fails once)."""
    import asyncio

    from aiohttp import web

    from pipeline.contract.findings import Action
    from pipeline.enforcement.audit import open_audit
    from pipeline.serve.review_api import Reviews, app

    trail = open_audit(str(tmp_path / "audit.sqlite"))
    warned = Action(action_id="a1", action="warn", subject_type="account", subject_id="u1",
                    basis=["12", "19"], finding_ids=["f1"], mode="enforce", ts=T0)  # fmt: skip
    trail.append("action", [warned], "action_id")
    pending: list[Action] = []
    published: list[Action] = []
    attempts = []

    async def publish() -> None:
        attempts.append(len(pending))
        if len(attempts) == 1:
            raise ConnectionError("broker down")
        published.extend(pending)
        pending.clear()

    async def exercise() -> list[httpx.Response]:
        runner = web.AppRunner(app(Reviews(trail, pending.extend), TOKEN, publish))
        await runner.setup()
        port = _port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with httpx.AsyncClient() as client:
                url = f"http://127.0.0.1:{port}/v1/actions/a1/reverse"
                auth = {"Authorization": f"Bearer {TOKEN}"}
                body = {"reviewer": "li", "reason": "appeal upheld"}
                return [await client.post(url, headers=auth, json=body) for _ in range(2)]
        finally:
            await runner.cleanup()

    failed, repeated = asyncio.run(exercise())
    assert failed.status_code == 503 and "repeat the request" in failed.json()["error"]
    assert repeated.status_code == 409  # recorded the first time
    assert {a.action_id for a in published} == {repeated.json()["issued"][0]["action_id"]}
    assert published[0].action == "revert" and published[0].params["reverts"] == "a1"
    trail.close()


def test_the_desk_lists_what_awaits_a_person_and_its_revert_lifts_the_block(
    tmp_path: Path,
) -> None:
    from pipeline.contract.findings import Action, stable_id
    from pipeline.enforcement.audit import open_audit
    from pipeline.enforcement.measures import AWAITING_REVIEW
    from pipeline.serve.review_api import Reviews
    from pipeline.serve.throttle import ThrottleTable

    def action(action_id: str, measure: str, mode: str) -> Action:
        return Action(action_id=action_id, action=measure, subject_type="account",
                      subject_id="u1", basis=["18", "19"], finding_ids=["f1"], mode=mode,
                      ts=T0, params={"rule": "r"})  # fmt: skip

    trail = open_audit(str(tmp_path / "audit.sqlite"))
    trail.append("action", [action("a1", "warn", "enforce"), action("a2", "human_review",
                 "enforce"), action("a3", "close_account", "review")], "action_id")  # fmt: skip
    emitted: list[Action] = []

    def emit(actions: list[Action]) -> None:  # to the trail, as the desk's sinks do
        emitted.extend(actions)
        trail.append("action", actions, "action_id")

    reviews = Reviews(trail, emit)
    assert {"human_review"} == AWAITING_REVIEW
    assert [a["action_id"] for a in reviews.pending()] == ["a2", "a3"]

    assert reviews.decide("a2", "approve", "li", "")["issued"] == []  # enforced already
    reviews.decide("a3", "approve", "li", "closed")
    (approved,) = emitted
    assert approved.action_id == stable_id("approved", "a3") and approved.mode == "enforce"
    assert approved.params == {"rule": "r", "approves": "a3", "reviewer": "li"}
    assert reviews.pending() == []

    hook = ThrottleTable()
    hook.apply(emitted)
    assert hook.check("u1", "follow", T0 / 1000)[0].kind == "close_account"
    reviews.reverse(approved.action_id, "wang", "appeal upheld")
    revert = emitted[-1]
    assert revert.action == "revert" and revert.basis == ["18", "19", "20"]
    assert revert.params == {"reverts": approved.action_id, "reverted": "close_account",
                             "reviewer": "wang", "reason": "appeal upheld"}  # fmt: skip
    hook.apply([revert])
    assert hook.check("u1", "follow", T0 / 1000) is None
    trail.close()
