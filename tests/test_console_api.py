"""The console's API end to end: a small simulated world replayed with the shipped policy
(a follower burst, a repost ring, a registration batch that then lies dormant), and the
console (pipeline/console/api.py) serving its outputs on loopback, in this process, over
the real files and SQLite trail. Searches, filters and pages; the case view; decisions on
actions, appeals and whole cases, which land in the trail and the actions file exactly as
the review API's do, each once however often it is asked; logins, sessions and CSRF
tokens, and viewers who cannot decide; and the index following the files as they grow."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from pipeline.console.api import console_app
from pipeline.console.auth import COOKIE, hash_password
from pipeline.console.index import ConsoleIndex
from pipeline.core.settings import Settings, load_settings, policy_path
from pipeline.enforcement.audit import open_audit
from pipeline.enforcement.policy import load_policy
from tests.helpers import lockstep, read_jsonl
from tests.test_review_api import _serving

TOKEN = "console-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PASSWORDS = {"li": "li-password", "vera": "vera-password"}  # a reviewer and a viewer
HASHES = {name: hash_password(pw) for name, pw in PASSWORDS.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outputs of `lockstep replay` on a four-hour world (about 7,000 events)."""
    work = tmp_path_factory.mktemp("world")
    sim = lockstep(
        "simulate",
        "--minutes",
        "240",
        "--seed",
        "5",
        "--scale",
        "0.05",
        "--scenario",
        "follower_burst",
        "--scenario",
        "repost_ring",
        "--scenario",
        "batch_registration",
        "--out",
        str(work / "world.jsonl"),
        "--labels",
        str(work / "labels.json"),
    )
    assert sim.returncode == 0, sim.stderr.decode()
    rep = lockstep("replay", str(work / "world.jsonl"), "--out", str(work / "out"))
    assert rep.returncode == 0, rep.stderr.decode()
    return work / "out"


@pytest.fixture
def out(world: Path, tmp_path: Path) -> Path:
    """A copy of the world's outputs, for a test to decide on."""
    return Path(shutil.copytree(world, tmp_path / "out"))


def _settings(tmp_path: Path) -> Settings:
    config = tmp_path / "console.yaml"
    config.write_text(
        "console:\n  refresh_s: 0.2\n  users:\n"
        f'    - {{name: li, role: reviewer, password: "{HASHES["li"]}"}}\n'
        f'    - {{name: vera, role: viewer, password: "{HASHES["vera"]}"}}\n'
    )
    return load_settings(config)


def _console(out: Path) -> Any:
    settings = _settings(out.parent)
    policy = load_policy(policy_path(settings))
    return console_app(out, str(out / "audit.sqlite"), settings, policy, TOKEN)


async def _login(client: httpx.AsyncClient, base: str, name: str) -> str:
    """Log `client` in as `name`; the session's CSRF token."""
    answer = await client.post(f"{base}/login", json={"name": name, "password": PASSWORDS[name]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["csrf_token"])


class Browser:
    """A browser logged in to the console: its cookie, and the session's CSRF token sent
    with each POST, as the console's pages will send it."""

    def __init__(self, client: httpx.AsyncClient, base: str, csrf: str) -> None:
        self.client, self.base, self.csrf = client, base, csrf

    @classmethod
    async def logged_in(cls, client: httpx.AsyncClient, base: str, name: str) -> Browser:
        return cls(client, base, await _login(client, base, name))

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(self.base + path)

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(self.base + path, json=body,
                                      headers={"X-CSRF-Token": self.csrf})  # fmt: skip


def _cases(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The world's cases by detector, from an index over `out` (no server)."""
    index = ConsoleIndex(out, str(out / "audit.sqlite"), load_policy().cooldown_s * 1000)
    index.refresh()
    by: dict[str, list[dict[str, Any]]] = {}
    for case in index.book.cases.values():
        for detector in case.detectors:
            by.setdefault(detector, []).append(
                {
                    **case.summary(),
                    "members": sorted(case.members),
                    "action_ids": list(case.action_ids),
                    "actions": [index.book.actions[a] for a in case.action_ids],
                }
            )
    index.close()
    return by


def _trail(out: Path) -> list[tuple[str, str, dict[str, Any]]]:
    with sqlite3.connect(out / "audit.sqlite") as db:
        rows = db.execute("SELECT kind, record_id, body FROM audit ORDER BY seq").fetchall()
    return [(kind, record_id, json.loads(body)) for kind, record_id, body in rows]


def _kinds(out: Path) -> dict[str, int]:
    counted: dict[str, int] = {}
    for kind, _, _ in _trail(out):
        counted[kind] = counted.get(kind, 0) + 1
    return counted


# -- reading


def test_a_member_id_finds_its_case_and_so_do_the_subject_and_the_case_id(out: Path) -> None:
    (ring,) = _cases(out)["lockstep_group"]
    member = ring["members"][3]

    async def exercise() -> list[dict[str, Any]]:
        async with _serving(_console(out)) as base, httpx.AsyncClient(headers=AUTH) as client:
            asked = [member, ring["subject_id"], ring["case_id"], "nobody-at-all"]
            return [(await client.get(f"{base}/api/cases", params={"q": q})).json() for q in asked]

    by_member, by_subject, by_id, nobody = asyncio.run(exercise())
    assert [c["case_id"] for c in by_member["cases"]] == [ring["case_id"]]
    assert [c["case_id"] for c in by_subject["cases"]] == [ring["case_id"]]
    assert [c["case_id"] for c in by_id["cases"]] == [ring["case_id"]]
    assert by_member["cases"][0]["detectors"] == ["lockstep_group"]
    assert nobody["cases"] == [] and nobody["total"] == 0


def test_filters_counts_and_pages_of_the_queue_are_bounded(out: Path) -> None:
    async def exercise() -> dict[str, Any]:
        async with _serving(_console(out)) as base, httpx.AsyncClient(headers=AUTH) as client:
            get = lambda **q: client.get(f"{base}/api/cases", params=q)  # noqa: E731
            everything = (await get(page_size=200)).json()
            pages = [(await get(page_size=2, page=p, sort="-time")).json() for p in (1, 2, 3, 4)]
            return {
                "all": everything,
                "pages": pages,
                "batch": (await get(detector="batch_registration")).json(),
                "article": (await get(article="18(8)")).json(),
                "review": (await get(status="needs_review", severity="critical")).json(),
                "enforce": (await get(mode="enforce")).json(),
                "by_size": (await get(sort="-size")).json(),
                "too_many": await get(page_size=201),
                "bad_status": await get(status="done"),
                "bad_page": await get(page="0"),
                "twice": await client.get(f"{base}/api/cases?sort=time&sort=size"),
            }

    got = asyncio.run(exercise())
    everything = got["all"]
    total = everything["total"]
    assert total == len(everything["cases"]) >= 5
    assert sum(everything["counts"].values()) == total
    severities = [c["severity"] for c in everything["cases"]]  # the gravest first
    ranks = ["low", "medium", "high", "critical"]
    assert [ranks.index(s) for s in severities] == sorted(
        map(ranks.index, severities), reverse=True
    )
    paged = [c["case_id"] for p in got["pages"] for c in p["cases"]]
    assert all(len(p["cases"]) <= 2 for p in got["pages"]) and got["pages"][0]["pages"] == -(
        -total // 2
    )
    assert len(paged) == len(set(paged)) == min(total, 8)
    times = [c["last_ts"] for p in got["pages"] for c in p["cases"]]
    assert times == sorted(times, reverse=True)
    assert {d for c in got["batch"]["cases"] for d in c["detectors"]} >= {"batch_registration"}
    assert all("batch_registration" in c["detectors"] for c in got["batch"]["cases"])
    assert (
        all("18(8)" in c["articles"] for c in got["article"]["cases"]) and got["article"]["total"]
    )
    review = got["review"]
    assert review["total"] == review["counts"]["needs_review"] > 0
    assert all(
        c["status"] == "needs_review" and c["severity"] == "critical" for c in review["cases"]
    )
    assert all("enforce" in c["modes"] for c in got["enforce"]["cases"])
    sizes = [c["size"] for c in got["by_size"]["cases"]]
    assert sizes == sorted(sizes, reverse=True)
    for refused in ("too_many", "bad_status", "bad_page", "twice"):
        assert got[refused].status_code == 400, got[refused].text
        assert got[refused].json()["error"]


def test_the_case_view_has_members_actions_series_audit_and_related(out: Path) -> None:
    cases = _cases(out)
    (ring,) = cases["lockstep_group"]
    (burst,) = cases["follower_jump"]
    hoard = cases["hoarded_accounts"][0]

    async def exercise() -> list[Any]:
        async with _serving(_console(out)) as base, httpx.AsyncClient(headers=AUTH) as client:
            deadline = time.monotonic() + 10
            while True:  # the chain is verified in the background, once at the start
                view = (await client.get(f"{base}/api/cases/{ring['case_id']}")).json()
                if view["audit"]["chain"]["verified"] is not None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            account = (await client.get(f"{base}/api/cases/{burst['case_id']}")).json()
            hoarded = (await client.get(f"{base}/api/cases/{hoard['case_id']}")).json()
            return [view, account, hoarded, await client.get(f"{base}/api/cases/none")]

    view, account, hoarded, missing = asyncio.run(exercise())
    assert view["case"]["case_id"] == ring["case_id"] and view["explanation"]
    assert view["members_total"] == len(ring["members"]) == len(view["members"])
    # a member the ring's throttles hold (a member who joined after them has its review only)
    throttled = {a["action_id"] for a in view["actions"] if a["action"] == "throttle"}
    member = next(m for m in view["members"] if throttled & set(m["actions"]))
    assert member["actions"] and member["pending"] >= 1  # throttle, review
    # the world's events are of March 2026: by the wall clock (the console's now) its
    # throttle's day is over, and the member's count of measures in force says so
    mine = [a for a in view["actions"] if a["action_id"] in member["actions"]]
    assert member["in_force"] == sum(a["in_force"] for a in mine) == 0
    assert any(a["action"] == "throttle" and a["expired"] for a in mine)
    assert {a["action"] for a in view["actions"]} == {"throttle", "human_review"}
    assert {a["state"] for a in view["actions"]} == {"enforced", "pending"}
    assert view["picture"]["kind"] == "rounds" and view["picture"]["rounds"]
    assert view["shared"]["target"] == view["findings"][-1]["evidence"]["target"]
    assert view["numbers"]["members"] == len(view["findings"][-1]["members"])
    series = view["series"]
    # a group's own chart: its account's regroupings, up to its latest flagged window
    assert series["source"] == "evidence" and len(series["t"]) == len(series["value"]) >= 1
    assert series["t"][-1] == max(end for _, end, _ in series["flagged"])
    assert len(series["flagged"]) == view["findings_total"]
    records = view["audit"]["records"]
    assert {r["kind"] for r in records} == {"finding", "action"}
    assert len([r for r in records if r["kind"] == "action"]) == len(ring["action_ids"])
    assert view["audit"]["chain"]["verified"] is True
    assert account["series"]["expected"][0] is not None  # follower_jump expects a level
    # the detectors' own evidence: the account's windows up to the flagged one, the ring's
    # members at the rounds they acted in, what is known of the members and what they share
    own = account["series"]
    latest = max(account["findings"], key=lambda f: (f["ts"], f["finding_id"]))
    assert own["source"] == "evidence" and own["t"][-1] == latest["window_end"]
    assert len(own["t"]) == len(own["value"]) == len(own["expected"]) <= 48
    acted = view["picture"]["member_rounds"]
    assert acted and set(acted) <= set(ring["members"])
    assert all(0 <= i < len(view["picture"]["rounds"]) for m in acted for i, _ in acted[m])
    described = [m for m in view["members"] if m["network"] is not None]
    assert described and all(m["age_s"] is None or m["age_s"] >= 0 for m in view["members"])
    shared = hoarded["shared"]  # a batch: one source, registered within minutes
    kind, _, source = hoard["subject_id"].partition(":")
    (several,) = shared["member_networks" if kind == "net" else "member_devices"].items()
    assert shared["source"] == hoard["subject_id"] and several[0] == source and several[1] > 1
    created = shared["member_created"]
    assert created["first"] <= created["last"] and created["members"] > 1
    assert created["span_s"] == (created["last"] - created["first"]) // 1000
    dated = [m for m in hoarded["members"] if m["created_at"] is not None]
    assert len(dated) >= min(len(hoard["members"]), 100) and created["members"] == len(dated)
    assert {d for f in account["findings"] for d in [f["detector"]]} >= {"follower_jump"}
    batch = next(
        c
        for c in cases["batch_registration"]
        if c["subject_id"] == hoard["subject_id"] and set(c["members"]) & set(hoard["members"])
    )
    related = {r["case_id"]: r for r in hoarded["related"]}
    assert related[batch["case_id"]]["why"] == ["same subject", "shared members"]
    assert related[batch["case_id"]]["shared_members"] > 0
    assert missing.status_code == 404 and missing.json()["error"]


def test_an_account_lookup_and_the_overview(out: Path) -> None:
    """A member of a registration batch: its case, its held measure (not in force: the hook
    lets it act), then approved (the copy is in force now: the hook refuses it); the
    overview counts the run, the backlog and the time the decision took."""
    batch = _cases(out)["batch_registration"][0]
    held = next(a for a in batch["actions"] if a.action == "restrict_functions")
    member = held.subject_id

    async def exercise() -> list[dict[str, Any]]:
        async with _serving(_console(out)) as base, httpx.AsyncClient(headers=AUTH) as client:
            before = (await client.get(f"{base}/api/accounts/{member}")).json()
            first = (await client.get(f"{base}/api/overview")).json()
            url = f"{base}/api/actions/{held.action_id}/decision"
            await client.post(url, json={"decision": "approve", "reason": "bulk"})
            after = (await client.get(f"{base}/api/accounts/{member}")).json()
            nobody = (await client.get(f"{base}/api/accounts/nobody")).json()
            return [before, after, nobody, first, (await client.get(f"{base}/api/overview")).json()]

    before, after, nobody, first, then = asyncio.run(exercise())
    member_of = [c["case_id"] for c in before["cases_as_member"]]  # the batch, then its hoard
    assert batch["case_id"] in member_of and before["member_of_total"] == len(member_of)
    assert [c["last_ts"] for c in before["cases_as_member"]] == sorted(
        (c["last_ts"] for c in before["cases_as_member"]), reverse=True
    )
    assert before["cases_as_subject"] == [] and before["in_force"] == []
    assert before["verdict"]["follow"] == {"limited": False}
    (copy,) = after["in_force"]
    assert copy["approves"] == held.action_id and copy["action"] == "restrict_functions"
    assert after["verdict"]["follow"]["limited"] is True
    assert after["verdict"]["*"]["reason"] == "restrict_functions"
    assert after["verdict"]["*"]["action_id"] == copy["action_id"]
    assert nobody["cases_as_member"] == [] and nobody["verdict"]["*"] == {"limited": False}
    summary = json.loads((out / "summary.json").read_text())
    assert first["findings_total"] == summary["findings"]
    assert first["actions_total"] == summary["actions"]
    counted = {
        d: sum(n for _, n in points) for d, points in first["findings"]["by_detector"].items()
    }
    assert counted == {key.split(" ")[0]: n for key, n in summary["findings_by_detector"].items()}
    assert first["backlog"]["pending_actions"] > then["backlog"]["pending_actions"]
    assert first["time_to_decision"]["decisions"] == 0
    assert then["time_to_decision"]["decisions"] == 1 and then["time_to_decision"]["p50_s"] > 0
    rules = {r["rule"]: r for r in first["policy"]["rules"]}
    assert rules["bulk-registration"]["mode"] == "review"
    assert rules["bulk-registration"]["actions"]["review"] > 0
    assert rules["coordinated-accounts"]["actions"]["enforce"] > 0
    assert sum(first["statuses"].values()) == first["cases"]


# -- deciding


def _strip_times(record: Any) -> Any:
    """A record without its times (a decision's is when it was made)."""
    if isinstance(record, dict):
        return {k: _strip_times(v) for k, v in record.items() if k not in ("ts", "expires_at")}
    if isinstance(record, list):
        return [_strip_times(v) for v in record]
    return record


def test_console_decisions_are_the_records_the_review_api_makes(out: Path, tmp_path: Path) -> None:
    """The same four requests, to the console over one copy of the outputs and to the review
    desk over another: the same records in the trail and the same lines in actions.jsonl."""
    from pipeline.serve.review_api import desk

    other = Path(shutil.copytree(out, tmp_path / "other"))
    batch = _cases(out)["batch_registration"][0]
    held = [a for a in batch["actions"] if a.action == "restrict_functions"]
    ring = _cases(out)["lockstep_group"][0]
    throttle = next(a for a in ring["actions"] if a.action == "throttle")
    steps = [  # (console path, body; review API path, body)
        (
            f"/api/actions/{held[0].action_id}/decision",
            {"decision": "approve", "reason": "bulk"},
            f"/v1/reviews/{held[0].action_id}",
            {"decision": "approve", "note": "bulk"},
        ),
        (
            f"/api/actions/{held[1].action_id}/decision",
            {"decision": "reject", "reason": "real"},
            f"/v1/reviews/{held[1].action_id}",
            {"decision": "reject", "note": "real"},
        ),
        (
            f"/api/actions/{throttle.action_id}/reverse",
            {"reason": "a fan"},
            f"/v1/actions/{throttle.action_id}/reverse",
            {"reason": "a fan"},
        ),
        (
            "/api/appeals",
            {"action_id": held[0].action_id, "appellant": "x", "reason": "mine"},
            "/v1/appeals",
            {"action_id": held[0].action_id, "appellant": "x", "reason": "mine"},
        ),
    ]

    async def exercise() -> None:
        review_trail = open_audit(str(other / "audit.sqlite"))
        try:
            async with (
                _serving(_console(out)) as console,
                _serving(desk(other, review_trail, _settings(other.parent), TOKEN)) as review,
                httpx.AsyncClient(headers=AUTH) as client,
            ):
                for path, body, review_path, review_body in steps:
                    mine = await client.post(console + path, json={**body, "reviewer": "li"})
                    theirs = await client.post(
                        review + review_path, json={**review_body, "reviewer": "li"}
                    )
                    assert mine.status_code == theirs.status_code == 200, (mine.text, theirs.text)
                    issued = [a["action_id"] for a in mine.json().get("issued", [])]
                    assert issued == [a["action_id"] for a in theirs.json().get("issued", [])]
        finally:
            review_trail.close()

    asyncio.run(exercise())
    mine, theirs = _trail(out), _trail(other)
    assert [(k, r) for k, r, _ in mine] == [(k, r) for k, r, _ in theirs]
    assert [_strip_times(b) for *_, b in mine] == [_strip_times(b) for *_, b in theirs]
    assert {"decision", "appeal"} <= {k for k, _, _ in mine}
    lines, other_lines = read_jsonl(out / "actions.jsonl"), read_jsonl(other / "actions.jsonl")
    assert [_strip_times(a) for a in lines] == [_strip_times(a) for a in other_lines]
    assert [a["action"] for a in lines[-2:]] == ["restrict_functions", "revert"]  # copy, revert
    assert lockstep("audit", "verify", str(out / "audit.sqlite")).returncode == 0


def test_appeals_are_filed_upheld_and_overturned(out: Path) -> None:
    (ring,) = _cases(out)["lockstep_group"]
    throttles = [a for a in ring["actions"] if a.action == "throttle"]

    async def exercise() -> dict[str, Any]:
        async with _serving(_console(out)) as base, httpx.AsyncClient() as client:
            li = await Browser.logged_in(client, base, "li")
            filed = [
                await li.post("/api/appeals", {"action_id": a.action_id, "reason": why})
                for a, why in ((throttles[0], "mine"), (throttles[1], "a fan"))
            ]
            kept, lifted = (
                f"/api/appeals/{f.json()['appeal']['appeal_id']}/decision" for f in filed
            )
            appealed = (await li.get(f"/api/cases/{ring['case_id']}")).json()
            got = {
                "uphold": await li.post(kept, {"decision": "uphold", "reason": "rounds"}),
                "overturn": await li.post(lifted, {"decision": "overturn", "reason": "a fan"}),
                "again": await li.post(lifted, {"decision": "overturn", "reason": "twice"}),
                "contrary": await li.post(kept, {"decision": "overturn", "reason": "no"}),
            }
            after = (await li.get(f"/api/cases/{ring['case_id']}")).json()
            return {**got, "appealed": appealed, "after": after}

    got = asyncio.run(exercise())
    assert got["appealed"]["case"]["status"] == "appealed"
    assert [a["state"] for a in got["appealed"]["appeals"]] == ["open", "open"]
    assert got["uphold"].status_code == 200 and got["uphold"].json()["issued"] == []
    assert got["uphold"].json()["decision"]["reviewer"] == "li"
    overturn = got["overturn"].json()
    (revert,) = overturn["issued"]
    assert revert["action"] == "revert" and revert["params"]["reverts"] == throttles[1].action_id
    assert got["again"].status_code == 200 and got["again"].json()["repeated"] is True
    assert got["again"].json()["issued"] == overturn["issued"]
    assert got["contrary"].status_code == 409
    states = {a["action_id"]: a["state"] for a in got["after"]["actions"]}
    assert states[throttles[0].action_id] == "enforced"
    assert states[throttles[1].action_id] == "reverted"
    assert [a["state"] for a in got["after"]["appeals"]] == ["upheld", "overturned"]
    assert got["after"]["case"]["status"] == "needs_review"  # its human reviews still wait
    kinds = _kinds(out)
    assert kinds["appeal"] == 2 and kinds["appeal_decision"] == 2 and kinds["decision"] == 1
    assert sum(1 for a in read_jsonl(out / "actions.jsonl") if a["action"] == "revert") == 1


def test_a_group_case_decision_excludes_members_one_by_one(out: Path) -> None:
    """A registration batch (held measures on each member): approved but for two members,
    whose measures are rejected. A repeat is one decision; a contrary one is refused
    whole. A ring (throttles in force): approved but for one member, whose throttle is
    reversed."""
    batch = max(_cases(out)["batch_registration"], key=lambda c: c["pending"])
    (ring,) = _cases(out)["lockstep_group"]
    throttled = sorted({a.subject_id for a in ring["actions"] if a.action == "throttle"})
    spared, ring_spared = batch["members"][:2], throttled[:1]
    lines_before = len(read_jsonl(out / "actions.jsonl"))

    async def exercise() -> dict[str, Any]:
        async with _serving(_console(out)) as base, httpx.AsyncClient(headers=AUTH) as client:
            url = f"{base}/api/cases/{batch['case_id']}/decision"
            body = {"decision": "approve", "reason": "one source", "exclude": spared}
            first = await client.post(url, json=body)
            trail_after_first = len(_trail(out))
            again = await client.post(url, json={**body, "reason": "double click"})
            contrary = await client.post(url, json={"decision": "reject", "reason": "no"})
            stranger = await client.post(url, json={**body, "exclude": ["not-a-member"]})
            trail_after = len(_trail(out))
            ring_url = f"{base}/api/cases/{ring['case_id']}/decision"
            ring_body = {"decision": "approve", "reason": "a ring", "exclude": ring_spared}
            ring_first = await client.post(ring_url, json=ring_body)
            view = (await client.get(f"{base}/api/cases/{batch['case_id']}")).json()
            return {
                "first": first,
                "again": again,
                "contrary": contrary,
                "stranger": stranger,
                "ring": ring_first,
                "view": view,
                "grew": trail_after - trail_after_first,
            }

    got = asyncio.run(exercise())
    first = got["first"].json()
    assert got["first"].status_code == 200 and first["repeated"] is False, first
    assert first["excluded"] == sorted(spared)
    ops = {(s["action_id"], s["op"]) for s in first["applied"]}
    for a in batch["actions"]:
        if not a.awaits_person:
            continue
        expected = "reject" if a.subject_id in spared else "approve"
        assert (a.action_id, expected) in ops
    copies = {x["params"]["approves"] for x in first["issued"]}
    held = [a for a in batch["actions"] if a.mode == "review"]  # its human reviews too
    assert copies == {a.action_id for a in held if a.subject_id not in spared}
    assert all(x["subject_id"] not in spared and x["mode"] == "enforce" for x in first["issued"])
    again = got["again"].json()
    assert got["again"].status_code == 200 and again["repeated"] is True
    assert again["issued"] == first["issued"]
    assert got["contrary"].status_code == 409 and got["contrary"].json()["conflicts"]
    assert got["stranger"].status_code == 422
    assert got["grew"] == 0  # the repeat, the contrary and the stranger recorded nothing
    assert got["view"]["case"]["status"] == "enforced" and got["view"]["case"]["pending"] == 0
    ring_answer = got["ring"].json()
    (revert,) = [x for x in ring_answer["issued"] if x["action"] == "revert"]
    assert revert["subject_id"] == ring_spared[0] and revert["params"]["reverted"] == "throttle"
    decisions = [b for k, _, b in _trail(out) if k == "decision"]
    by_action = {d["action_id"]: d for d in decisions}
    for a in ring["actions"]:
        if a.action == "human_review":
            wanted = "reject" if a.subject_id in ring_spared else "approve"
            assert by_action[a.action_id]["decision"] == wanted
            assert by_action[a.action_id]["reviewer"] == "review-token"
    lines = read_jsonl(out / "actions.jsonl")
    assert len(lines) == lines_before + len(first["issued"]) + len(ring_answer["issued"])
    assert len({a["action_id"] for a in lines}) == len(lines)


def test_a_double_post_is_one_decision(out: Path) -> None:
    batch = _cases(out)["batch_registration"][0]
    held = next(a for a in batch["actions"] if a.action == "restrict_functions")

    async def exercise() -> list[httpx.Response]:
        async with _serving(_console(out)) as base, httpx.AsyncClient() as client:
            csrf = await _login(client, base, "li")
            url = f"{base}/api/actions/{held.action_id}/decision"
            body = {"decision": "approve", "reason": "bulk"}
            return await asyncio.gather(
                *(client.post(url, json=body, headers={"X-CSRF-Token": csrf}) for _ in range(10))
            )

    answers = asyncio.run(exercise())
    assert [a.status_code for a in answers] == [200] * 10
    assert sorted(a.json()["repeated"] for a in answers) == [False] + [True] * 9
    (copy,) = {a.json()["issued"][0]["action_id"] for a in answers}
    assert {a.json()["decision"]["decision_id"] for a in answers} == {
        answers[0].json()["decision"]["decision_id"]
    }
    assert _kinds(out)["decision"] == 1
    assert [a["action_id"] for a in read_jsonl(out / "actions.jsonl")].count(copy) == 1
    (decision,) = [b for k, _, b in _trail(out) if k == "decision"]
    assert decision["reviewer"] == "li" and decision["note"] == "bulk"


# -- access


def _state_changing_requests(out: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every state-changing request of the console (but the login itself), on real ids."""
    batch = _cases(out)["batch_registration"][0]
    held = next(a for a in batch["actions"] if a.action == "restrict_functions")
    return [
        (f"/api/actions/{held.action_id}/decision", {"decision": "approve", "reason": "r"}),
        (f"/api/actions/{held.action_id}/reverse", {"reason": "r"}),
        ("/api/appeals", {"action_id": held.action_id, "reason": "r"}),
        ("/api/appeals/some-appeal/decision", {"decision": "uphold", "reason": "r"}),
        (f"/api/cases/{batch['case_id']}/decision", {"decision": "approve", "reason": "r"}),
        ("/logout", {}),
    ]


def test_every_state_changing_request_without_a_login_or_csrf_token_is_refused(out: Path) -> None:
    requests = _state_changing_requests(out)
    application = _console(out)
    served = {r.resource.canonical for r in application.router.routes() if r.method == "POST"}
    assert served - {"/login"} == {
        "/api/actions/{action_id}/decision",
        "/api/actions/{action_id}/reverse",
        "/api/appeals",
        "/api/appeals/{appeal_id}/decision",
        "/api/cases/{case_id}/decision",
        "/logout",
    }
    before = _trail(out)
    lines = (out / "actions.jsonl").read_bytes()

    async def exercise() -> dict[str, list[int]]:
        async with _serving(application) as base, httpx.AsyncClient() as client:
            anonymous = [(await client.post(base + p, json=b)).status_code for p, b in requests]
            forger = httpx.AsyncClient(cookies={COOKIE: "eyJuIjoibGkifQ.c2lnbmVk"})
            forged = [(await forger.post(base + p, json=b)).status_code for p, b in requests]
            wrong_token = [
                (
                    await client.post(base + p, json=b, headers={"Authorization": "Bearer guess"})
                ).status_code
                for p, b in requests
            ]
            csrf = await _login(client, base, "li")
            no_csrf = [(await client.post(base + p, json=b)).status_code for p, b in requests]
            bad_csrf = [
                (
                    await client.post(base + p, json=b, headers={"X-CSRF-Token": csrf[:-2]})
                ).status_code
                for p, b in requests
            ]
            other_site = await client.post(
                f"{base}/login",
                headers={"Origin": "https://evil.example"},
                json={"name": "li", "password": PASSWORDS["li"]},
            )
            gets = [
                (await httpx.AsyncClient().get(base + p)).status_code
                for p in (
                    "/api/cases",
                    "/api/overview",
                    "/api/session",
                    "/",
                    "/static/x.js",
                    "/api/accounts/u1",
                    "/api/cases/x",
                )
            ]
            return {
                "anonymous": anonymous,
                "forged": forged,
                "wrong_token": wrong_token,
                "no_csrf": no_csrf,
                "bad_csrf": bad_csrf,
                "gets": gets,
                "other_site": [other_site.status_code],
            }

    got = asyncio.run(exercise())
    n = len(requests)
    assert got["anonymous"] == got["forged"] == got["wrong_token"] == [401] * n, got
    assert got["no_csrf"] == got["bad_csrf"] == [403] * n, got
    assert got["other_site"] == [403]
    assert got["gets"] == [401] * len(got["gets"])
    assert _trail(out) == before and (out / "actions.jsonl").read_bytes() == lines

    async def with_csrf() -> list[int]:  # the same requests, with the session's token: taken
        async with _serving(_console(out)) as base, httpx.AsyncClient() as client:
            csrf = await _login(client, base, "li")
            headers = {"X-CSRF-Token": csrf}
            return [
                (await client.post(base + p, json=b, headers=headers)).status_code
                for p, b in requests
            ]

    assert [s not in (401, 403) for s in asyncio.run(with_csrf())] == [True] * n


def test_a_viewer_reads_but_cannot_decide(out: Path) -> None:
    requests = _state_changing_requests(out)[:-1]  # a viewer may log out

    async def exercise() -> tuple[dict[str, Any], list[int], int, dict[str, Any]]:
        async with _serving(_console(out)) as base, httpx.AsyncClient() as client:
            csrf = await _login(client, base, "vera")
            session = (await client.get(f"{base}/api/session")).json()
            page = await client.get(f"{base}/api/cases")
            refused = [
                (await client.post(base + p, json=b, headers={"X-CSRF-Token": csrf})).status_code
                for p, b in requests
            ]
            return session, refused, page.status_code, page.json()

    session, refused, read, page = asyncio.run(exercise())
    assert session == {
        "name": "vera",
        "role": "viewer",
        "via": "session",
        "csrf_token": session["csrf_token"],
    }
    assert read == 200 and page["total"] > 0
    assert refused == [403] * len(requests)
    assert "decision" not in _kinds(out) and "appeal" not in _kinds(out)


def test_a_session_is_httponly_strict_and_ends_at_logout(out: Path) -> None:
    async def exercise() -> dict[str, Any]:
        async with _serving(_console(out)) as base, httpx.AsyncClient() as client:
            wrong = await client.post(f"{base}/login", json={"name": "li", "password": "guess"})
            nobody = await client.post(f"{base}/login", json={"name": "x", "password": "guess"})
            by_token = await httpx.AsyncClient().post(f"{base}/login", json={"token": TOKEN})
            logged = await client.post(
                f"{base}/login", json={"name": "li", "password": PASSWORDS["li"]}
            )
            cookie = logged.cookies[COOKIE]
            csrf = logged.json()["csrf_token"]
            inside = await client.get(f"{base}/api/session")
            out_ = await client.post(f"{base}/logout", headers={"X-CSRF-Token": csrf})
            replaying = httpx.AsyncClient(cookies={COOKIE: cookie})
            replayed = await replaying.get(f"{base}/api/session")
            form = await httpx.AsyncClient().post(
                f"{base}/login", data={"name": "li", "password": PASSWORDS["li"]}
            )
            return {
                "wrong": wrong,
                "nobody": nobody,
                "token": by_token,
                "logged": logged,
                "inside": inside,
                "out": out_,
                "replayed": replayed,
                "form": form,
            }

    got = asyncio.run(exercise())
    assert got["wrong"].status_code == got["nobody"].status_code == 401
    assert got["token"].status_code == 200 and got["token"].json()["role"] == "reviewer"
    set_cookie = got["logged"].headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    assert got["inside"].json()["name"] == "li" and got["inside"].json()["via"] == "session"
    assert got["out"].status_code == 200
    assert got["replayed"].status_code == 401
    assert got["form"].status_code == 303 and got["form"].headers["location"] == "/"


# -- following the outputs


def test_the_index_follows_the_files_as_they_grow_and_starts_over_when_rewritten(
    out: Path,
) -> None:
    findings = (out / "findings.jsonl").read_bytes().splitlines(keepends=True)
    actions = (out / "actions.jsonl").read_bytes()
    (out / "findings.jsonl").write_bytes(b"".join(findings[:3]))
    index = ConsoleIndex(out, str(out / "audit.sqlite"), load_policy().cooldown_s * 1000)
    index.refresh()
    assert len(index.book.findings) == 3
    cases_before = set(index.book.cases)
    with open(out / "findings.jsonl", "ab") as handle:  # a writer mid-line: a torn last line
        handle.write(b"".join(findings[3:-1]) + findings[-1][:40])
    index.refresh()
    assert len(index.book.findings) == len(findings) - 1
    with open(out / "findings.jsonl", "ab") as handle:
        handle.write(findings[-1][40:] + b'{"not": "a finding"}\n')
    index.refresh()
    assert len(index.book.findings) == len(findings)
    assert index.refused["findings.jsonl"] == 1
    assert cases_before < set(index.book.cases)
    assert len(index.book.actions) == len(actions.splitlines())
    last = msgspec.json.decode(findings[-1])
    assert index.finding(last["finding_id"]).evidence == last["evidence"]  # read again whole

    (out / "findings.jsonl").write_bytes(b"".join(findings[:2]))  # rewritten in place
    index.refresh()
    assert len(index.book.findings) == 2 and index.refused["findings.jsonl"] == 0
    replacement = out / "findings.new"
    replacement.write_bytes(b"".join(findings[:5]))
    replacement.replace(out / "findings.jsonl")  # replaced: another inode
    index.refresh()
    assert len(index.book.findings) == 5
    index.close()


def test_the_console_over_a_postgresql_trail(world: Path, postgres: Any, tmp_path: Path) -> None:
    """A deployment's trail in PostgreSQL (a real server): the console reads its decisions
    since the last record it saw, lists a case's rows and verifies the chain there, and
    its decisions land there."""
    import psycopg

    with psycopg.connect(postgres.url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS audit")
    out = tmp_path / "out"
    rep = lockstep("replay", str(world.parent / "world.jsonl"), "--out", str(out),
                   "--audit", postgres.url)  # fmt: skip
    assert rep.returncode == 0, rep.stderr.decode()
    settings = _settings(tmp_path)
    application = console_app(out, postgres.url, settings, load_policy(), TOKEN)
    index = ConsoleIndex(out, postgres.url, load_policy().cooldown_s * 1000)
    index.refresh()
    (ring,) = [c for c in index.book.cases.values() if "lockstep_group" in c.detectors]
    throttles = [a for a in ring.action_ids if index.book.actions[a].action == "throttle"]
    index.close()

    async def exercise() -> list[Any]:
        async with _serving(application) as base, httpx.AsyncClient(headers=AUTH) as client:
            url = f"{base}/api/cases/{ring.case_id}/decision"
            decided = await client.post(url, json={"decision": "reject", "reason": "fans"})
            deadline = time.monotonic() + 10
            while True:
                view = (await client.get(f"{base}/api/cases/{ring.case_id}")).json()
                if view["audit"]["chain"]["verified"] is not None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            return [decided, view]

    decided, view = asyncio.run(exercise())
    assert decided.status_code == 200, decided.text
    assert view["case"]["status"] == "reverted" and view["case"]["pending"] == 0
    kinds = {r["kind"] for r in view["audit"]["records"]}
    assert kinds == {"finding", "action", "decision"}
    assert view["audit"]["chain"]["verified"] is True
    with psycopg.connect(postgres.url, autocommit=True) as db:
        reverts = db.execute("SELECT count(*) FROM audit WHERE kind = 'action' AND body LIKE "
                             "'%\"action\": \"revert\"%'").fetchone()  # fmt: skip
        decisions = db.execute("SELECT count(*) FROM audit WHERE kind = 'decision'").fetchone()
    assert reverts is not None and decisions is not None
    assert reverts[0] == len(throttles) > 0  # each throttle reversed
    assert decisions[0] == len(ring.action_ids)  # and each review rejected
    assert lockstep("audit", "verify", postgres.url).returncode == 0


# -- the command line


def test_the_command_line_hashes_passwords_and_refuses_what_it_cannot_serve(
    tmp_path: Path,
) -> None:
    import os

    from pipeline.console.auth import check_password

    hashed = lockstep("console", "hash-password", "--stdin", input=b"s3cret\n")
    assert hashed.returncode == 0, hashed.stderr.decode()
    made = hashed.stdout.decode().strip()
    assert made.startswith("scrypt$") and check_password("s3cret", made)
    assert not check_password("secret", made)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}
    token = {**env, "LOCKSTEP_REVIEW_TOKEN": TOKEN}
    refusals = [
        (lockstep("console", env=env), "needs --out"),
        (lockstep("console", "--out", str(tmp_path), env=env), "nobody can log in"),
        (lockstep("console", "--out", str(tmp_path / "no"), env=token), "no directory"),
        (lockstep("console", "--out", str(tmp_path), env=token), "no audit store"),
    ]
    for proc, says in refusals:
        assert proc.returncode == 2, proc.stderr.decode()
        assert says in proc.stderr.decode() and proc.stderr.decode().count("\n") == 1


@pytest.mark.parametrize(
    ("console", "says"),
    [
        ({"page_size": 300}, "page_size must be at most max_page_size"),
        ({"max_page_size": 5000}, "<= 1000"),
        ({"users": [{"name": "li", "role": "reviewer", "password": "x"}] * 2}, "one name"),
        ({"users": [{"name": "review-token", "role": "viewer", "password": "x"}]}, "token's"),
        ({"users": [{"name": "li", "role": "admin", "password": "x"}]}, "role"),
        ({"refresh_s": 0}, "refresh_s"),
    ],
)
def test_the_console_block_of_the_settings_is_checked(console: dict[str, Any], says: str) -> None:
    from pipeline.core.settings import ConfigError

    with pytest.raises(ConfigError, match=re.escape(says)):
        load_settings(overrides={"console": console})
