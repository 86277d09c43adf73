"""A measure's term in the console (pipeline/console/cases.py, views.py, index.py, api.py):
one whose `expires_at` has passed is not in force, wherever the console says what is.
It no longer makes its case `enforced`, nor counts in force for a member in the case view
or for the account in its lookup; one whose term runs on does. The queue's status filters
and counts and the overview say what each case view says, and a term that ends while the
console runs changes its case's status with no record written.

"Now" is the wall clock (pipeline/console/clock.py), so the run here is written around
it, as a run beside the console writes it: findings, actions and the trail holding both.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from pipeline.console.cases import STATUSES, CaseBook, action_ref, case_id, finding_ref
from pipeline.console.clock import now_ms
from pipeline.contract.findings import Action, Finding
from pipeline.enforcement.audit import open_audit
from pipeline.serve.throttle import ANY
from tests.helpers import HOUR, MINUTE
from tests.test_console_coverage import _action, _finding, _ok, _with_console

# -- in the book, at instants given


def _case_of(book: CaseBook, f: Finding) -> str:
    return book.cases[case_id(f.subject_type, f.subject_id, f.finding_id)].status


def test_a_cases_status_follows_its_measures_terms_at_each_instant() -> None:
    """A throttle and a restriction in force until they end: the case is `enforced` while
    either runs, `closed` once both are over (the last instant included), and `enforced`
    again at an earlier instant, all without a record coming in."""
    base = 1_767_225_600_000
    f = _finding(base, "account", "u1", 0, "follower_jump")
    short = _action("throttle", "u1", f, expires_at=f.ts + HOUR)
    long = _action("restrict_functions", "u1", f, expires_at=f.ts + 2 * HOUR)
    book = CaseBook(HOUR)
    book.add_findings([finding_ref(f)])
    book.add_actions(action_ref(a, offset=i) for i, a in enumerate([short, long]))
    seen = {}
    for label, at in [("issued", f.ts), ("one over", f.ts + HOUR), ("both", f.ts + 2 * HOUR),
                      ("back", f.ts + HOUR + 1)]:  # fmt: skip
        book.settle(at)
        states = [book.state(book.actions[a.action_id], at) for a in (short, long)]
        seen[label] = (_case_of(book, f), [(s.in_force, s.expired) for s in states])
    assert seen == {
        "issued": ("enforced", [(True, False), (True, False)]),
        "one over": ("enforced", [(False, True), (True, False)]),
        "both": ("closed", [(False, True), (False, True)]),
        "back": ("enforced", [(False, True), (True, False)]),
    }
    assert book.counts()["enforced"] == 1


def test_a_lapsed_measure_leaves_a_reversed_or_shadowed_case_as_that() -> None:
    """Once its measure's term is over a case is what its other actions make it: reverted
    if one was reversed, shadow if one was only recorded."""
    base = 1_767_225_600_000
    rev, sh = (
        _finding(base, "account", "r1", 0, "churn"),
        _finding(base, "account", "s1", 0, "churn"),
    )
    lapsing = [_action("warn", "r1", rev), _action("throttle", "r1", rev, expires_at=rev.ts + 1),
               _action("throttle", "s1", sh, expires_at=sh.ts + 1),
               _action("warn", "s1", sh, "shadow")]  # fmt: skip
    revert = Action(
        action_id="revert-warn",
        action="revert",
        subject_type="account",
        subject_id="r1",
        basis=["20"],
        finding_ids=[rev.finding_id],
        mode="enforce",
        ts=rev.ts,
        params={"reverts": lapsing[0].action_id},
    )
    book = CaseBook(HOUR)
    book.add_findings([finding_ref(rev), finding_ref(sh)])
    book.add_actions(action_ref(a, offset=i) for i, a in enumerate([*lapsing, revert]))
    book.settle(rev.ts)
    assert (_case_of(book, rev), _case_of(book, sh)) == ("enforced", "enforced")
    book.settle(rev.ts + 1)
    assert (_case_of(book, rev), _case_of(book, sh)) == ("reverted", "shadow")


# -- through the API, around the wall clock


def _write(out: Path, findings: list[Finding], actions: dict[str, Action]) -> None:
    out.mkdir(parents=True)
    encode = msgspec.json.encode
    (out / "findings.jsonl").write_bytes(b"".join(encode(f) + b"\n" for f in findings))
    (out / "actions.jsonl").write_bytes(b"".join(encode(a) + b"\n" for a in actions.values()))
    audit = open_audit(out / "audit.sqlite")
    try:
        audit.append("finding", findings, "finding_id")
        audit.append("action", list(actions.values()), "action_id")
    finally:
        audit.close()


def _case(f: Finding) -> str:
    return case_id(f.subject_type, f.subject_id, f.finding_id)


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """Two accounts throttled, one lapsed an hour ago and one for two hours more; a ring
    whose members' throttles are one lapsed, one running; a ring whose members' have all
    lapsed. Returns the outputs, the cases and the actions by the test's names."""
    now = now_ms() // MINUTE * MINUTE
    base = now - 6 * HOUR
    lapsed = _finding(base, "account", "lapsed", 0, "follower_jump")
    standing = _finding(base, "account", "standing", 0, "follower_jump")
    ring_a = _finding(base, "group", "ring-a", 10, "lockstep_group", ["a1", "a2"])
    ring_b = _finding(base, "group", "ring-b", 20, "lockstep_group", ["b1", "b2"])
    actions = {
        "lapsed": _action("throttle", "lapsed", lapsed, expires_at=now - HOUR),
        "standing": _action("throttle", "standing", standing, expires_at=now + 2 * HOUR),
        "a1": _action("throttle", "a1", ring_a, expires_at=now - HOUR),
        "a2": _action("throttle", "a2", ring_a, expires_at=now + 2 * HOUR),
        "b1": _action("throttle", "b1", ring_b, expires_at=now - HOUR),
        "b2": _action("restrict_functions", "b2", ring_b, expires_at=now - 1),
    }
    out = tmp_path / "out"
    _write(out, [lapsed, standing, ring_a, ring_b], actions)
    cases = {"lapsed": _case(lapsed), "standing": _case(standing), "ring-a": _case(ring_a),
             "ring-b": _case(ring_b)}  # fmt: skip
    return out, cases, {name: a.action_id for name, a in actions.items()}


def test_an_expired_measure_neither_enforces_its_case_nor_counts_in_force(
    run: tuple[Path, dict[str, str], dict[str, str]],
) -> None:
    """The lapsed throttles are shown expired and not in force: the lapsed account's case
    and the ring whose every throttle lapsed are `closed`, their members count none in
    force, the accounts hold no limit. The running ones are in force: their cases are
    `enforced`, the member and the account count them."""
    out, cases, ids = run

    async def exercise(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
        views = {n: _ok(await client.get(f"{base}/api/cases/{c}")) for n, c in cases.items()}
        accounts = {n: _ok(await client.get(f"{base}/api/accounts/{n}"))
                    for n in ("lapsed", "standing", "a1", "a2", "b1")}  # fmt: skip
        return {"views": views, "accounts": accounts}

    got = _with_console(out, exercise)
    views, accounts = got["views"], got["accounts"]
    assert {n: v["case"]["status"] for n, v in views.items()} == {
        "lapsed": "closed", "standing": "enforced", "ring-a": "enforced", "ring-b": "closed",
    }  # fmt: skip
    shown = {a["action_id"]: a for v in views.values() for a in v["actions"]}
    assert {n: (shown[x]["expired"], shown[x]["in_force"], shown[x]["state"])
            for n, x in ids.items()} == {
        "lapsed": (True, False, "enforced"), "standing": (False, True, "enforced"),
        "a1": (True, False, "enforced"), "a2": (False, True, "enforced"),
        "b1": (True, False, "enforced"), "b2": (True, False, "enforced"),
    }  # fmt: skip
    members = {m["account_id"]: m for n in ("ring-a", "ring-b") for m in views[n]["members"]}
    assert {m: (members[m]["actions"], members[m]["in_force"]) for m in members} == {
        "a1": ([ids["a1"]], 0), "a2": ([ids["a2"]], 1),
        "b1": ([ids["b1"]], 0), "b2": ([ids["b2"]], 0),
    }  # fmt: skip
    in_force = {n: [a["action_id"] for a in v["in_force"]] for n, v in accounts.items()}
    assert in_force == {"lapsed": [], "standing": [ids["standing"]], "a1": [], "a2": [ids["a2"]],
                        "b1": []}  # fmt: skip
    assert [lim["action_id"] for lim in accounts["standing"]["limits"]] == [ids["standing"]]
    assert accounts["lapsed"]["limits"] == [] and accounts["b1"]["limits"] == []
    assert accounts["lapsed"]["verdict"][ANY] == {"limited": False}
    # an account's cases say the status their views say
    assert [c["status"] for c in accounts["lapsed"]["cases_as_subject"]] == ["closed"]
    assert [c["status"] for c in accounts["a1"]["cases_as_member"]] == ["enforced"]
    assert [c["status"] for c in accounts["b1"]["cases_as_member"]] == ["closed"]


def test_the_queues_status_filters_and_counts_agree_with_the_case_views(
    run: tuple[Path, dict[str, str], dict[str, str]],
) -> None:
    """Each status filter lists the cases whose view says that status, the counts are
    theirs, and so are the overview's."""
    out, cases, _ = run

    async def exercise(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
        pages = {s: _ok(await client.get(f"{base}/api/cases", params={"status": s}))
                 for s in STATUSES}  # fmt: skip
        views = {c: _ok(await client.get(f"{base}/api/cases/{c}")) for c in cases.values()}
        return {"pages": pages, "views": views,
                "overview": _ok(await client.get(f"{base}/api/overview"))}  # fmt: skip

    got = _with_console(out, exercise)
    said = {c: v["case"]["status"] for c, v in got["views"].items()}
    for status, page in got["pages"].items():
        listed = {c["case_id"]: c["status"] for c in page["cases"]}
        assert listed == {c: s for c, s in said.items() if s == status}, status
        assert page["counts"] == {s: Counter(said.values()).get(s, 0) for s in STATUSES}
    assert got["overview"]["statuses"] == got["pages"]["enforced"]["counts"]
    assert said[cases["lapsed"]] == "closed" and said[cases["standing"]] == "enforced"


def test_a_term_that_ends_while_the_console_runs_changes_its_case_with_no_record(
    tmp_path: Path,
) -> None:
    """A throttle ending two seconds after the console starts: its case is `enforced` and
    listed under that filter; past its end, with nothing written meanwhile, the case is
    `closed` in the queue and in its view, and the throttle is shown expired."""
    ends = now_ms() + 2_000
    f = _finding(ends - HOUR, "account", "soon", 0, "follower_jump")
    throttle = _action("throttle", "soon", f, expires_at=ends)
    out = tmp_path / "out"
    _write(out, [f], {"soon": throttle})
    case = _case(f)

    async def exercise(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
        queue = f"{base}/api/cases"
        before = _ok(await client.get(queue, params={"status": "enforced"}))
        deadline = time.monotonic() + 15
        while now_ms() <= ends and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return {
            "before": before,
            "enforced": _ok(await client.get(queue, params={"status": "enforced"})),
            "closed": _ok(await client.get(queue, params={"status": "closed"})),
            "view": _ok(await client.get(f"{queue}/{case}")),
        }

    got = _with_console(out, exercise)
    assert [c["case_id"] for c in got["before"]["cases"]] == [case]
    assert got["enforced"]["cases"] == [] and got["enforced"]["counts"]["closed"] == 1
    assert [c["case_id"] for c in got["closed"]["cases"]] == [case]
    assert got["view"]["case"]["status"] == "closed"
    (shown,) = got["view"]["actions"]
    assert (shown["expired"], shown["in_force"]) == (True, False)
