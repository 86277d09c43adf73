"""The console's JSON API (pipeline/console/api.py, views.py, index.py, trail.py) where the
other console tests do not look: what a case's members carry (their bot-likeness from the
case's own findings, their other cases), which actions are in force now and which have
expired, the audit chain's verification before and after its store is tampered with, a
search by a content's or a group's id, and the queue's status filters besides
needs_review, each state made through the console's own decision endpoints.

Most tests run over a small run written by hand (findings, actions and the SQLite trail
holding both, as `lockstep replay` leaves them), its times set around the wall clock,
which is what the console judges expiry by; the chain's test tampers with the trail of
the simulated world that tests/test_console_api.py replays."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from pipeline.console.api import console_app
from pipeline.console.cases import STATUSES, case_id
from pipeline.contract.findings import Action, Finding, make_finding, stable_id
from pipeline.core.settings import load_settings, policy_path
from pipeline.enforcement.audit import open_audit
from pipeline.enforcement.policy import load_policy
from tests import test_console_api
from tests.helpers import HOUR, MINUTE
from tests.test_console_api import AUTH, HASHES, TOKEN
from tests.test_review_api import _serving

world = test_console_api.world  # the simulated world, replayed once for this module

# -- a run written by hand


def _finding(base: int, subject_type: str, subject: str, minute: int, detector: str,
             members: list[str] | None = None, **evidence: Any) -> Finding:  # fmt: skip
    start = base + minute * MINUTE
    return make_finding(
        detector=detector,
        article="18(4)" if subject_type != "account" else "12",
        subject_type=subject_type,  # type: ignore[arg-type]
        subject_id=subject,
        window_start=start,
        window_end=start + 5 * MINUTE,
        score=0.9,
        severity="high",
        members=members or [],
        evidence={"explanation": f"{subject} at {minute}", **evidence},
    )


def _action(measure: str, subject: str, on: Finding, mode: str = "enforce",
            expires_at: int | None = None, subject_type: str = "account") -> Action:  # fmt: skip
    params: dict[str, Any] = {"rule": "hand-written"}
    if measure == "throttle":
        params |= {"descriptors": [{"key": "account_id", "value": subject},
                                   {"key": "action", "value": "follow"}],
                   "requests_per_unit": 20, "unit": "hour"}  # fmt: skip
    return Action(
        action_id=stable_id("hand", measure, subject, on.finding_id),
        action=measure,
        subject_type=subject_type,  # type: ignore[arg-type]
        subject_id=subject,
        basis=["18(4)", "19"],
        finding_ids=[on.finding_id],
        mode=mode,  # type: ignore[arg-type]
        ts=on.ts,
        expires_at=expires_at,
        params=params,
    )


@dataclass
class Run:
    """A run's outputs in `out`, and the ids the tests ask about."""

    out: Path
    now: int  # the time its times are set around (epoch ms, a whole minute)
    cases: dict[str, str]  # a name of the test's -> the case id
    actions: dict[str, str]  # a name of the test's -> the action id


def _write_run(out: Path, now: int) -> Run:
    """Two rings sharing a member (m1), whose members have bot-likeness in the findings'
    evidence, one of them (m3) also the subject of a case of its own; a content's case;
    and one account case per status to be made, its first window six hours before `now`.
    The first ring's measures: m1's throttle in force for two hours more, m2's throttle
    and restriction lapsed an hour ago, m3's warning without an end."""
    base = now - 6 * HOUR
    ring1 = _finding(base, "group", "ring-g1", 0, "lockstep_group", ["m1", "m2", "m3"],
                     bot_scores={"m1": 0.5, "m2": 0.35})  # fmt: skip
    ring1_later = _finding(base, "group", "ring-g1", 20, "lockstep_group", ["m1", "m2", "m3"],
                           bot_scores={"m1": 0.91})  # fmt: skip
    ring2 = _finding(base, "group", "ring-g2", 30, "lockstep_group", ["m1", "m4"],
                     bot_scores={"m1": 0.8, "m4": "unknown"})  # fmt: skip
    m3 = _finding(base, "account", "m3", 40, "follower_jump")
    post = _finding(base, "content", "post-77", 10, "duplicate_content", ["c1", "c2"],
                    target="owner-9")  # fmt: skip
    solo = {name: _finding(base, "account", name, 50, "follower_jump")
            for name in ("enf", "sh", "app", "ovt", "rev", "held-ok", "held-no", "wait",
                         "quiet")}  # fmt: skip
    findings = [ring1, ring1_later, ring2, m3, post, *solo.values()]
    week = 7 * 24 * HOUR

    def held(name: str, expires_at: int) -> Action:
        return _action("restrict_functions", name, solo[name], "review", expires_at)

    actions = {
        "m1-throttle": _action("throttle", "m1", ring1, expires_at=now + 2 * HOUR),
        "m2-throttle": _action("throttle", "m2", ring1, expires_at=now - HOUR),
        "m2-restrict": _action("restrict_functions", "m2", ring1, expires_at=now - HOUR),
        "m3-warn": _action("warn", "m3", ring1),
        "post-warn": _action("warn", "post-77", post, "shadow", subject_type="content"),
        "enf": _action("warn", "enf", solo["enf"]),
        "sh": _action("warn", "sh", solo["sh"], "shadow"),
        "app": _action("warn", "app", solo["app"]),
        "ovt": _action("throttle", "ovt", solo["ovt"], expires_at=now + week),
        "rev": _action("throttle", "rev", solo["rev"], expires_at=now + week),
        "rev-shadow": _action("warn", "rev", solo["rev"], "shadow"),  # reverted wins over it
        # held for review: held-ok's term (5 h from its own time) lapsed 5 minutes ago
        "held-ok": held("held-ok", solo["held-ok"].ts + 5 * HOUR),  # ts: now - 5 h 5 min
        "held-no": held("held-no", now + week),
        "wait": held("wait", now + week),
    }
    out.mkdir(parents=True)
    encode = msgspec.json.encode
    (out / "findings.jsonl").write_bytes(b"".join(encode(f) + b"\n" for f in findings))
    (out / "actions.jsonl").write_bytes(b"".join(encode(a) + b"\n" for a in actions.values()))
    audit = open_audit(out / "audit.sqlite")  # as a run keeps them: findings, then actions
    try:
        audit.append("finding", findings, "finding_id")
        audit.append("action", list(actions.values()), "action_id")
    finally:
        audit.close()
    first = {"ring-g1": ring1, "ring-g2": ring2, "m3": m3, "post-77": post, **solo}
    cases = {name: case_id(f.subject_type, f.subject_id, f.finding_id) for name, f in first.items()}
    return Run(out, now, cases, {name: a.action_id for name, a in actions.items()})


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """A run whose times are set around now (when the test starts, not the session)."""
    return _write_run(tmp_path / "out", int(time.time() * 1000) // MINUTE * MINUTE)


def _console(out: Path) -> Any:
    """The console over `out`, its chain verified every 0.2 s."""
    config = out.parent / "console.yaml"
    config.write_text(
        "console:\n  refresh_s: 0.2\n  verify_every_s: 0.2\n  users:\n"
        f'    - {{name: li, role: reviewer, password: "{HASHES["li"]}"}}\n'
    )
    settings = load_settings(config)
    policy = load_policy(policy_path(settings))
    return console_app(out, str(out / "audit.sqlite"), settings, policy, TOKEN)


Exercise = Callable[[httpx.AsyncClient, str], Awaitable[Any]]


def _with_console(out: Path, exercise: Exercise) -> Any:
    """What `exercise` returns, run against the console over `out` with the review token."""

    async def serving() -> Any:
        async with _serving(_console(out)) as base, httpx.AsyncClient(headers=AUTH) as client:
            return await exercise(client, base)

    return asyncio.run(serving())


def _ok(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


# -- 1. the members of a case


def test_a_cases_members_carry_their_bot_scores_and_their_other_cases(run: Run) -> None:
    """Bot-likeness from the case's own findings (the later finding's over the earlier's,
    a value that is not a number none), most bot-like first; a member of two rings counts
    the other, which the view relates and the member's account lists; a member that is the
    subject of a case of its own counts that one."""
    ring1, ring2 = run.cases["ring-g1"], run.cases["ring-g2"]

    async def exercise(client: httpx.AsyncClient, base: str) -> list[dict[str, Any]]:
        post = run.cases["post-77"]
        paths = [f"/api/cases/{ring1}", f"/api/cases/{ring2}", f"/api/cases/{post}",
                 "/api/accounts/m1", "/api/accounts/m3"]  # fmt: skip
        return [_ok(await client.get(base + p)) for p in paths]

    first, second, post, m1, m3 = _with_console(run.out, exercise)
    members = {m["account_id"]: m for m in first["members"]}
    assert [m["account_id"] for m in first["members"]] == ["m1", "m2", "m3"]  # most bot-like
    assert [m["bot_score"] for m in first["members"]] == [0.91, 0.35, None]
    assert {m: members[m]["other_cases"] for m in members} == {"m1": 1, "m2": 0, "m3": 1}
    assert {m: members[m]["actions"] for m in members} == {
        "m1": [run.actions["m1-throttle"]],
        "m2": [run.actions["m2-throttle"], run.actions["m2-restrict"]],
        "m3": [run.actions["m3-warn"]],
    }
    assert first["members_total"] == 3 and first["case"]["size"] == 3
    # the other ring: m1's score is that ring's own finding's, m4's is no number
    assert [(m["account_id"], m["bot_score"], m["other_cases"]) for m in second["members"]] == [
        ("m1", 0.8, 1),
        ("m4", None, 0),
    ]
    related = {r["case_id"]: r for r in first["related"]}
    assert related[ring2]["why"] == ["shared members"] and related[ring2]["shared_members"] == 1
    assert {r["case_id"] for r in second["related"]} == {ring1}
    assert [(m["account_id"], m["bot_score"], m["other_cases"]) for m in post["members"]] == [
        ("c1", None, 0),
        ("c2", None, 0),
    ]
    assert {c["case_id"] for c in m1["cases_as_member"]} == {ring1, ring2}
    assert m1["member_of_total"] == 2 and m1["cases_as_subject"] == []
    assert [c["case_id"] for c in m3["cases_as_subject"]] == [run.cases["m3"]]
    assert [c["case_id"] for c in m3["cases_as_member"]] == [ring1]


# -- 2. what is in force now


def test_an_expired_action_is_not_in_force_and_one_expiring_later_is(run: Run) -> None:
    """The console judges expiry by the clock at the request. In the ring's case m1's
    throttle (two hours left) is in force, m2's throttle and restriction (lapsed an hour
    ago) are shown expired and not in force, and m3's warning (no end) is in force. At
    the accounts: m1 holds its throttle's limit; m2 holds none, and the restriction that
    would block its every action lets it act. A held restriction whose own term lapsed,
    approved, is issued for its term from the approval: in force, and it blocks."""
    ring1, held, now = run.cases["ring-g1"], run.cases["held-ok"], run.now

    async def exercise(client: httpx.AsyncClient, base: str) -> list[dict[str, Any]]:
        before = _ok(await client.get(f"{base}/api/cases/{held}"))
        url = f"{base}/api/actions/{run.actions['held-ok']}/decision"
        approved = _ok(await client.post(url, json={"decision": "approve", "reason": "bulk"}))
        paths = [f"/api/cases/{ring1}", "/api/accounts/m1", "/api/accounts/m2",
                 f"/api/cases/{held}", "/api/accounts/held-ok"]  # fmt: skip
        return [before, approved, *[_ok(await client.get(base + p)) for p in paths]]

    before, approved, view, m1, m2, after, held_account = _with_console(run.out, exercise)
    shown = {a["action_id"]: a for a in view["actions"]}
    seen = {
        name: (shown[run.actions[name]]["expires_at"], shown[run.actions[name]]["expired"],
               shown[run.actions[name]]["in_force"])
        for name in ("m1-throttle", "m2-throttle", "m2-restrict", "m3-warn")
    }  # fmt: skip
    assert seen == {
        "m1-throttle": (now + 2 * HOUR, False, True),
        "m2-throttle": (now - HOUR, True, False),
        "m2-restrict": (now - HOUR, True, False),
        "m3-warn": (None, False, True),
    }
    assert {shown[run.actions[n]]["state"] for n in seen} == {"enforced"}  # none reversed
    assert view["case"]["status"] == "enforced"
    assert [a["action_id"] for a in m1["in_force"]] == [run.actions["m1-throttle"]]
    assert m1["limits"] == [
        {"action": "follow", "action_id": run.actions["m1-throttle"], "measure": "throttle",
         "expires_at": now + 2 * HOUR, "requests_per_unit": 20, "unit_s": 3600}
    ]  # fmt: skip
    assert [a["action_id"] for a in m2["actions"]] == [
        run.actions["m2-throttle"],
        run.actions["m2-restrict"],
    ]
    assert [a["expired"] for a in m2["actions"]] == [True, True] and m2["in_force"] == []
    assert m2["verdict"]["*"] == m2["verdict"]["follow"] == {"limited": False}
    assert m2["limits"] == []  # nothing it held is in force now
    # the held restriction: its own term lapsed; the copy approval issued holds from now
    (was,) = before["actions"]
    assert was["expired"] is True and was["in_force"] is False and was["state"] == "pending"
    (copy,) = approved["issued"]
    assert copy["mode"] == "enforce" and copy["expires_at"] - copy["ts"] == 5 * HOUR
    assert copy["expires_at"] > now
    states = {a["action_id"]: a for a in after["actions"]}
    assert (states[copy["action_id"]]["expired"], states[copy["action_id"]]["in_force"]) == (
        False,
        True,
    )
    assert states[run.actions["held-ok"]]["state"] == "approved"
    assert after["case"]["status"] == "enforced"
    assert [a["action_id"] for a in held_account["in_force"]] == [copy["action_id"]]
    blocked = held_account["verdict"]["*"]
    assert blocked["limited"] is True and blocked["action_id"] == copy["action_id"]
    assert blocked["reason"] == "restrict_functions"
    assert 4 * 3600 < blocked["retry_after_s"] <= 5 * 3600


# -- 3. the audit chain


@pytest.fixture
def world_out(world: Path, tmp_path: Path) -> Path:
    """A copy of the simulated world's outputs, its trail to be tampered with."""
    return Path(shutil.copytree(world, tmp_path / "out"))


def _tamper(trail: Path, seq: int, how: str) -> None:
    """Change record `seq` of an SQLite trail in place, or remove it: the deliberate act
    the store's triggers are there to make deliberate."""
    with sqlite3.connect(trail) as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("DROP TRIGGER audit_no_delete")
        if how == "modified":
            db.execute(
                'UPDATE audit SET body = replace(body, \'"mode": "enforce"\', '
                '\'"mode": "shadow"\') WHERE seq = ?',
                (seq,),
            )
        else:
            db.execute("DELETE FROM audit WHERE seq = ?", (seq,))
        assert db.total_changes == 1
    db.close()


@pytest.mark.parametrize(
    ("how", "says"),
    [("modified", "does not match its hash"), ("removed", "a record was removed or inserted")],
)
def test_the_case_view_says_whether_the_audit_chain_verifies(
    world_out: Path, how: str, says: str
) -> None:
    """Over the replay's intact trail the case view says the chain verifies, with every
    record counted; once one of the case's own action records is changed (or removed) in
    the SQLite store, the next verification says it is broken, and where."""
    trail = world_out / "audit.sqlite"
    with sqlite3.connect(trail) as db:
        (total,) = db.execute("SELECT count(*) FROM audit").fetchone()
    db.close()
    (ring,) = test_console_api._cases(world_out)["lockstep_group"]

    async def until(client: httpx.AsyncClient, url: str, done: Callable[[Any], bool]) -> Any:
        deadline = time.monotonic() + 15
        while True:
            view = _ok(await client.get(url))
            if done(view["audit"]["chain"]) or time.monotonic() > deadline:
                return view
            await asyncio.sleep(0.05)

    async def exercise(client: httpx.AsyncClient, base: str) -> list[Any]:
        url = f"{base}/api/cases/{ring['case_id']}"
        intact = await until(client, url, lambda chain: chain["verified"] is not None)
        record = next(r for r in intact["audit"]["records"] if r["kind"] == "action")
        tampered_at = int(time.time() * 1000)
        _tamper(trail, record["seq"], how)
        broken = await until(
            client,
            url,
            lambda chain: (
                chain["checked_at"] is not None
                and chain["checked_at"] > tampered_at
                and chain["verified"] is not None
            ),
        )
        return [intact, record, broken]

    intact, record, broken = _with_console(world_out, exercise)
    chain = intact["audit"]["chain"]
    assert chain == {**chain, "verified": True, "records": total, "problem": None, "error": None}
    assert record["seq"] > 1  # the case's records come after the run's first
    after = broken["audit"]["chain"]
    assert after["verified"] is False and after["error"] is None, after
    assert after["records"] == record["seq"] - 1  # those before the broken link hold
    if how == "modified":  # the changed record is where the chain breaks
        assert after["problem"].startswith(f"record {record['seq']} (action {record['record_id']})")
    else:  # the record after the removed one no longer follows its predecessor
        assert after["problem"].startswith(f"record {record['seq'] + 1} ")
        assert f"does not follow record {record['seq']}" in after["problem"]
        assert record not in broken["audit"]["records"]
    assert says in after["problem"]


# -- 4. searching by a content's and a group's id


def test_a_search_by_a_content_id_or_a_group_id_finds_its_case(run: Run) -> None:
    """`q` names a case by its subject of any type (content, group, account), its members
    or its id, whole: a prefix finds nothing; the other filters still apply."""

    async def exercise(client: httpx.AsyncClient, base: str) -> dict[str, dict[str, Any]]:
        asked = {
            "content": {"q": "post-77"},
            "content member": {"q": "c2"},
            "group": {"q": "ring-g1"},
            "other group": {"q": "ring-g2"},
            "shared member": {"q": "m1"},
            "subject and member": {"q": "m3"},
            "prefix": {"q": "post-7"},
            "owner": {"q": "owner-9"},  # the content's owner: not a subject nor a member
            "content shadow": {"q": "post-77", "status": "shadow"},
            "content enforced": {"q": "post-77", "status": "enforced"},
            "group detector": {"q": "ring-g1", "detector": "follower_jump"},
        }
        return {k: _ok(await client.get(f"{base}/api/cases", params=q)) for k, q in asked.items()}

    got = _with_console(run.out, exercise)
    found = {k: sorted(c["case_id"] for c in page["cases"]) for k, page in got.items()}
    c = run.cases
    assert found["content"] == found["content member"] == [c["post-77"]]
    (post,) = got["content"]["cases"]
    assert (post["subject_type"], post["subject_id"], post["status"]) == (
        "content",
        "post-77",
        "shadow",
    )
    assert found["group"] == [c["ring-g1"]] and found["other group"] == [c["ring-g2"]]
    assert got["group"]["cases"][0]["subject_type"] == "group"
    assert found["shared member"] == sorted([c["ring-g1"], c["ring-g2"]])
    assert found["subject and member"] == sorted([c["ring-g1"], c["m3"]])
    assert found["prefix"] == found["owner"] == [] and got["prefix"]["total"] == 0
    assert found["content shadow"] == [c["post-77"]]
    assert found["content enforced"] == [] and got["content enforced"]["total"] == 0
    assert got["content enforced"]["counts"]["shadow"] == 1  # counted, though filtered out
    assert found["group detector"] == []


# -- 5. the queue's statuses


def test_each_status_filter_returns_exactly_the_cases_in_that_status(run: Run) -> None:
    """The states made through the console's own endpoints: an appeal filed (appealed),
    an appeal filed and overturned and an action reversed (reverted, though the latter's
    case has a shadow action too), a held measure approved (enforced) and one rejected
    (closed); before and after, the queue's filter for each status returns those cases
    and no other, and its counts agree."""
    a = run.actions

    async def exercise(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
        async def queue() -> dict[str, dict[str, Any]]:
            return {
                s: _ok(await client.get(f"{base}/api/cases", params={"status": s}))
                for s in ("", *STATUSES)
            }

        before = await queue()
        post = lambda path, body: client.post(base + path, json=body)  # noqa: E731
        filed = _ok(await post("/api/appeals", {"action_id": a["app"], "appellant": "app",
                                                "reason": "it was me"}))  # fmt: skip
        lifted = _ok(await post("/api/appeals", {"action_id": a["ovt"], "appellant": "ovt",
                                                 "reason": "a fan"}))  # fmt: skip
        overturned = _ok(await post(f"/api/appeals/{lifted['appeal']['appeal_id']}/decision",
                                    {"decision": "overturn", "reason": "a fan"}))  # fmt: skip
        reversed_ = _ok(await post(f"/api/actions/{a['rev']}/reverse", {"reason": "wrong"}))
        approved = _ok(await post(f"/api/actions/{a['held-ok']}/decision",
                                  {"decision": "approve", "reason": "bulk"}))  # fmt: skip
        rejected = _ok(await post(f"/api/actions/{a['held-no']}/decision",
                                  {"decision": "reject", "reason": "real"}))  # fmt: skip
        decided = [filed, overturned, reversed_, approved, rejected]
        return {"before": before, "after": await queue(), "decided": decided}

    got = _with_console(run.out, exercise)
    c = run.cases
    expected_before = {
        "needs_review": {c["held-ok"], c["held-no"], c["wait"]},
        "appealed": set(),
        "enforced": {c["ring-g1"], c["enf"], c["app"], c["ovt"], c["rev"]},
        "shadow": {c["post-77"], c["sh"]},
        "reverted": set(),
        "closed": {c["ring-g2"], c["m3"], c["quiet"]},
    }
    expected_after = {
        "needs_review": {c["wait"]},
        "appealed": {c["app"]},
        "enforced": {c["ring-g1"], c["enf"], c["held-ok"]},
        "shadow": {c["post-77"], c["sh"]},
        "reverted": {c["ovt"], c["rev"]},
        "closed": {c["ring-g2"], c["m3"], c["held-no"], c["quiet"]},
    }
    filed, overturned, reversed_, approved, rejected = got["decided"]
    assert filed["appeal"]["action_id"] == run.actions["app"] and filed["repeated"] is False
    assert [x["action"] for x in overturned["issued"]] == ["revert"]
    assert [x["params"]["reverts"] for x in reversed_["issued"]] == [run.actions["rev"]]
    assert [x["params"]["approves"] for x in approved["issued"]] == [run.actions["held-ok"]]
    assert rejected["issued"] == [] and rejected["decision"]["decision"] == "reject"
    for when, expected in (("before", expected_before), ("after", expected_after)):
        pages = got[when]
        everything = pages[""]
        assert everything["total"] == len(c) == sum(everything["counts"].values())
        assert everything["counts"] == {s: len(ids) for s, ids in expected.items()}, when
        for status, ids in expected.items():
            page = pages[status]
            listed = [case["case_id"] for case in page["cases"]]
            assert set(listed) == ids and len(listed) == len(ids), (when, status)
            assert all(case["status"] == status for case in page["cases"]), (when, status)
            assert page["total"] == len(ids) and page["counts"] == everything["counts"]
