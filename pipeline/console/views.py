"""What the console shows of one case, of one account, and of the run as a whole.

A case view puts together what a reviewer needs to decide: the one-line explanation and
the numbers behind it, the subject's activity over time (`series`), the members and what
is known of each, what they share, for a ring the rounds it worked (`picture`), the actions
with where each stands, the appeals, the case's records in the audit trail with the
chain's last verification, and the cases related to it. Only the case's own records are
read again from the files (by their offsets), so a view costs what the case holds, not
what the run does; long lists are cut at a bound and say how long they were.

The activity series is the finding's own when its evidence carries one (`evidence.series`:
`{"t": [epoch ms...], "value": [...], "expected": [...]}`, the recent windows of the subject
the detector judged, an optional field); otherwise it is drawn from the case's findings,
one point per window: the count the detector judged and the level it expected.

What is known of each member comes from the findings' optional `evidence.member_facts`
(`{account: {"created_at": ms, "network": str, "device": str}}`, only the fields known, a
later finding's facts over an earlier one's): each listed member gets its creation time,
its age when it was found, its network and its device. What the members share is what the
evidence says they share (`SHARED_KEYS`) and, from those facts, the networks and devices
several members came from and when they were created (`member_networks`,
`member_devices`, `member_created`). A ring's picture carries `evidence.member_rounds`
when the finding has it (`{member: [[index of a listed round, ts of its first action in
it], ...]}`), so each member is drawn at the rounds it acted in, not only counted; and
`evidence.member_items` when a group finding gives its members by item (`lockstep_ring`,
`duplicate_content`: `{"members": [...], "items": [{"content_id": ...}, ...], "acts":
[[member index, item index, ts], ...]}`), drawn as a matrix of member by item.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import msgspec

from pipeline.console.cases import ActionRef, Case, CaseBook
from pipeline.console.index import ConsoleIndex
from pipeline.console.trail import ChainStatus, rows_of
from pipeline.contract.findings import Finding
from pipeline.enforcement.policy import Policy
from pipeline.serve.review_api import appeal_decision_id
from pipeline.serve.throttle import ANY, ThrottleTable

MAX_FINDINGS = 200  # findings of a case shown whole (the latest)
MAX_MEMBERS = 500
MAX_ACTIONS = 1000
MAX_RELATED = 20
MAX_AUDIT = 2000  # audit records of a case listed
MAX_CASES = 200  # cases of an account listed
MAX_POINTS = 200  # buckets of a chart of the overview
MAX_SHARED = 10  # networks (devices) shared by several members listed
# The count each detector judges a window by, as its evidence names it (first found).
SERIES_KEYS = (
    "observed", "events", "follows", "forced", "registrations", "quick_undos", "dormant",
    "silent", "accounts", "members",
)  # fmt: skip
# What a finding's evidence says its members have in common.
SHARED_KEYS = (
    "source", "networks", "target", "targets", "owner", "owners", "items", "centre_text",
    "distinct_devices", "distinct_addresses", "distinct_networks", "young_share",
    "network_crowding", "device_crowding", "devices_per_registration",
)  # fmt: skip
FACTS = ("network", "device", "created_at", "age_s")  # what a member's facts may hold
CHECKED_ACTIONS = ("follow", "unfollow", "click", "repost", "comment", ANY)


def _builtins(record: Any) -> Any:
    return msgspec.to_builtins(record) if record is not None else None


def case_view(index: ConsoleIndex, case_id: str, chain: ChainStatus, now_ms: int) -> Any:
    """Everything about one case at `now_ms`, or None if there is no such case (its
    findings as decoded, for msgspec to encode with the rest)."""
    book = index.book
    book.settle(now_ms)
    case = book.cases.get(case_id)
    if case is None:
        return None
    findings = index.findings(case.finding_ids[-MAX_FINDINGS:])
    gravest = max(findings, key=lambda f: (f.score, f.ts), default=None)
    evidence = gravest.evidence if gravest is not None else {}
    facts = _facts(findings)
    return {
        "case": case.summary(),
        "explanation": case.explanation,
        "numbers": {
            k: v
            for k, v in evidence.items()
            if k != "explanation" and isinstance(v, int | float | bool | str) and len(str(v)) < 200
        },
        "findings": findings,  # as they are: encoded with the answer
        "findings_total": len(case.finding_ids),
        "series": _series(findings),
        "members": _members(book, case, findings, facts, now_ms),
        "members_total": len(case.members),
        "shared": {
            **{k: evidence[k] for k in SHARED_KEYS if k in evidence},
            **_member_shared(facts, case.members),
        },
        "picture": _picture(findings),
        "actions": [_action(book, book.actions[a], now_ms) for a in case.action_ids[:MAX_ACTIONS]],
        "actions_total": len(case.action_ids),
        "appeals": [_appeal(book, appeal) for appeal in book.case_appeals(case)],
        "audit": {"records": _audit_rows(index, case), "chain": chain.as_json()},
        "related": _related(book, case),
    }


def _series(findings: list[Finding]) -> dict[str, Any]:
    """The subject's activity over time with its expected level, and the flagged windows."""
    flagged = [[f.window_start, f.window_end, f.finding_id] for f in findings]
    for f in reversed(findings):  # the latest finding's own series, if it has one
        own = f.evidence.get("series")
        if isinstance(own, dict) and _valid_series(own):
            return {"source": "evidence", **{k: own[k] for k in ("t", "value", "expected")
                                             if k in own}, "flagged": flagged}  # fmt: skip
    # a point where its window was judged (its end): a group's windows share their start
    points = sorted(
        (f.window_end, value, f.evidence.get("expected"))
        for f in findings
        if (value := _judged(f)) is not None
    )
    return {
        "source": "findings",
        "t": [p[0] for p in points],
        "value": [p[1] for p in points],
        "expected": [p[2] if isinstance(p[2], int | float) else None for p in points],
        "flagged": flagged,
    }


def _valid_series(series: dict[str, Any]) -> bool:
    t, value = series.get("t"), series.get("value")
    expected = series.get("expected", value)
    return (
        isinstance(t, list)
        and isinstance(value, list)
        and isinstance(expected, list)
        and len(t) == len(value) == len(expected)
    )


def _judged(f: Finding) -> float | None:
    """The count `f`'s detector judged its window by."""
    for key in SERIES_KEYS:
        value = f.evidence.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def _facts(findings: list[Finding]) -> dict[str, dict[str, Any]]:
    """What the findings' `member_facts` say of each member (the later finding's word on
    a field over an earlier one's), with its age when the finding that described it was
    made (`age_s`). The findings are read latest first, each field taken where it is
    first found: a case's findings describe the same members again and again, and one
    whose every field a later finding gave is passed over at once."""
    facts: dict[str, dict[str, Any]] = {}
    whole: set[str] = set()  # members with every field found
    for f in sorted(findings, key=lambda f: (f.ts, f.finding_id), reverse=True):
        described = f.evidence.get("member_facts")
        if not isinstance(described, dict):
            continue
        for member, known in described.items():
            if member in whole or not isinstance(known, dict):
                continue
            mine = facts.setdefault(member, {})
            for field in ("network", "device"):
                if field not in mine and isinstance(known.get(field), str):
                    mine[field] = known[field]
            created = known.get("created_at")
            if "created_at" not in mine and _is_int(created):
                mine["created_at"] = created
                mine["age_s"] = max(0, f.ts - created) // 1000
            if len(mine) == len(FACTS):
                whole.add(member)
    return facts


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _member_shared(facts: dict[str, dict[str, Any]], members: set[str]) -> dict[str, Any]:
    """What several of the members have in common by their facts: the networks and the
    devices more than one came from (most first, with how many), and when the described
    ones were created (the first, the last, the span)."""
    described = [facts[m] for m in sorted(members) if m in facts]
    shared: dict[str, Any] = {}
    for field, key in (("network", "member_networks"), ("device", "member_devices")):
        counts = Counter(k[field] for k in described if field in k)
        several = [(v, n) for v, n in counts.most_common() if n > 1][:MAX_SHARED]
        if several:
            shared[key] = dict(several)
    created = sorted(k["created_at"] for k in described if "created_at" in k)
    if len(created) > 1:
        shared["member_created"] = {
            "first": created[0],
            "last": created[-1],
            "span_s": (created[-1] - created[0]) // 1000,
            "members": len(created),
        }
    return shared


def _members(
    book: CaseBook,
    case: Case,
    findings: list[Finding],
    facts: dict[str, dict[str, Any]],
    now_ms: int,
) -> list[dict[str, Any]]:
    """The members, each with its bot-likeness where a detector computed it, what is
    known of its account (`facts`), its actions in this case (how many in force and
    waiting at `now_ms`) and how many other cases it is in (as a member or a subject)."""
    bots: dict[str, float] = {}
    for f in findings:
        scores = f.evidence.get("bot_scores")
        if isinstance(scores, dict):
            bots.update({m: s for m, s in scores.items() if isinstance(s, int | float)})
    acted: dict[str, list[str]] = {}
    for a in case.action_ids:
        ref = book.actions[a]
        if ref.subject_type == "account" and ref.subject_id in case.members:
            acted.setdefault(ref.subject_id, []).append(a)
    listed = sorted(case.members, key=lambda m: (-bots.get(m, -1.0), m))[:MAX_MEMBERS]
    members = []
    for m in listed:
        states = [book.state(book.actions[a], now_ms) for a in acted.get(m, [])]
        known = facts.get(m, {})
        members.append({
            "account_id": m,
            "bot_score": bots.get(m),
            "created_at": known.get("created_at"),
            "age_s": known.get("age_s"),
            "network": known.get("network"),
            "device": known.get("device"),
            "other_cases": _other_cases(book, m, case.case_id),
            "actions": acted.get(m, []),
            "in_force": sum(s.in_force for s in states),
            "pending": sum(s.pending for s in states),
        })  # fmt: skip
    return members


def _other_cases(book: CaseBook, member: str, case_id: str) -> int:
    """How many cases but `case_id` `member` is in, as a member or as the subject (most
    members are the subject of none: counted without a set made)."""
    as_member = book.by_member.get(member, frozenset())
    as_subject = book.by_subject.get(("account", member))
    if as_subject:
        return len((as_member | set(as_subject)) - {case_id})
    return len(as_member) - (case_id in as_member)


def _picture(findings: list[Finding]) -> dict[str, Any] | None:
    """A ring's rounds (items by time, with how many members acted in each), and which
    members acted in which round when the finding says (`member_rounds`), if any; and a
    group's members by item when the latest finding with one gives it (`member_items`,
    with the id of that finding as `items_finding_id`). `kind` is `rounds` when there are
    rounds, `items` when there is only the members by item."""
    picture: dict[str, Any] | None = None
    for f in reversed(findings):
        rounds = f.evidence.get("rounds")
        if isinstance(rounds, list) and rounds:
            picture = {"kind": "rounds", "finding_id": f.finding_id, "rounds": rounds}
            acted = f.evidence.get("member_rounds")
            if isinstance(acted, dict):
                picture["member_rounds"] = acted
            break
    for f in reversed(findings):
        grid = f.evidence.get("member_items")
        if _valid_member_items(grid):
            if picture is None:
                picture = {"kind": "items", "finding_id": f.finding_id}
            picture["member_items"] = grid
            picture["items_finding_id"] = f.finding_id
            break
    return picture


def _valid_member_items(grid: Any) -> bool:
    """Whether `grid` is a members-by-item picture the console can draw: members (names),
    items (each with a `content_id`), and acts `[member index, item index, ts]` within
    them."""
    if not isinstance(grid, dict):
        return False
    members, items, acts = grid.get("members"), grid.get("items"), grid.get("acts")
    if not (isinstance(members, list) and isinstance(items, list) and isinstance(acts, list)):
        return False
    if not all(isinstance(m, str) for m in members):
        return False
    if not all(isinstance(c, dict) and isinstance(c.get("content_id"), str) for c in items):
        return False
    return bool(acts) and all(
        isinstance(a, list)
        and len(a) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) for x in a)
        and 0 <= a[0] < len(members)
        and 0 <= a[1] < len(items)
        for a in acts
    )


def _action(book: CaseBook, a: ActionRef, now_ms: int) -> dict[str, Any]:
    """An action as the views list it, where it stands at `now_ms`."""
    state = book.state(a, now_ms)
    return {
        "action_id": a.action_id,
        "action": a.action,
        "mode": a.mode,
        "subject_type": a.subject_type,
        "subject_id": a.subject_id,
        "ts": a.ts,
        "expires_at": a.expires_at,
        "expired": state.expired,
        "rule": a.rule,
        "reverts": a.reverts or None,
        "approves": a.approves or None,
        "state": state.state,
        "in_force": state.in_force,
        "pending": state.pending,
        "decision": _builtins(book.reviewed.get(a.action_id)),
        "reversal": _builtins(book.reversal(a)),
        "appeals": list(book.appeals_of.get(a.action_id, [])),
    }


def _appeal(book: CaseBook, appeal: Any) -> dict[str, Any]:
    return {
        **msgspec.to_builtins(appeal),
        "state": book.appeal_state(appeal),
        "decision": _builtins(book.appeal_decisions.get(appeal.appeal_id)),
    }


def _audit_rows(index: ConsoleIndex, case: Case) -> list[dict[str, Any]]:
    """The case's records in the trail: its findings, actions, decisions, appeals."""
    book = index.book
    wanted = [("finding", f) for f in case.finding_ids]
    for a in case.action_ids:
        wanted.append(("action", a))
        for kept in (book.reviewed, book.reversals):
            if (d := kept.get(a)) is not None:
                wanted.append(("decision", d.decision_id))
        for appeal_id in book.appeals_of.get(a, []):
            wanted += [("appeal", appeal_id), ("appeal_decision", appeal_decision_id(appeal_id))]
    rows = rows_of(index.audit, dict.fromkeys(wanted[:MAX_AUDIT]))
    keys = ("seq", "kind", "record_id", "ts", "hash")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _related(book: CaseBook, case: Case) -> list[dict[str, Any]]:
    """Other cases of the same subject, sharing members, or about the same target."""
    why: dict[str, set[str]] = {}
    for other in book.by_subject.get((case.subject_type, case.subject_id), ()):
        why.setdefault(other, set()).add("same subject")
    shared: Counter[str] = Counter()
    for m in sorted(case.members)[:MAX_MEMBERS]:
        shared.update(book.by_member.get(m, ()))
    for other, _ in shared.most_common(MAX_RELATED + 1):
        why.setdefault(other, set()).add("shared members")
    targets = set(case.targets)
    if case.subject_type == "account":
        targets.add(case.subject_id)
    for t in sorted(targets):
        for other in (*book.by_target.get(t, ()), *book.by_subject.get(("account", t), ())):
            why.setdefault(other, set()).add("same target")
    why.pop(case.case_id, None)
    ranked = sorted(why, key=lambda c: (-shared.get(c, 0), -book.cases[c].last_ts, c))
    return [
        {
            "case_id": c,
            "subject_type": book.cases[c].subject_type,
            "subject_id": book.cases[c].subject_id,
            "status": book.cases[c].status,
            "severity": book.cases[c].severity,
            "why": sorted(why[c]),
            "shared_members": shared.get(c, 0),
        }
        for c in ranked[:MAX_RELATED]
    ]


def account_view(index: ConsoleIndex, account_id: str, now_ms: int) -> dict[str, Any]:
    """Everything about one account: its cases as the subject and as a member, its actions
    with those in force now, and the throttling hook's verdict for it now (the hook's own
    table over the account's actions; a throttle's count of requests is the hook's, so a
    throttled action shows as allowed with its limit listed)."""
    book = index.book
    book.settle(now_ms)
    as_subject = [book.cases[c] for c in book.by_subject.get(("account", account_id), ())]
    as_member = sorted(
        (book.cases[c] for c in book.by_member.get(account_id, ())),
        key=lambda c: (-c.last_ts, c.case_id),
    )
    action_ids = book.by_account.get(account_id, [])
    refs = [book.actions[a] for a in action_ids]
    table = ThrottleTable()
    table.apply([a for ref in refs if (a := index.action(ref.action_id)) is not None])
    verdicts = {}
    for kind in CHECKED_ACTIONS:
        hit = table.check(account_id, kind, now_ms / 1000)
        if hit is None:
            verdicts[kind] = {"limited": False}
        else:
            limit, wait = hit
            retry = None if math.isinf(wait) else max(1, math.ceil(wait))
            verdicts[kind] = {"limited": True, "reason": limit.kind,
                              "action_id": limit.action_id, "retry_after_s": retry}  # fmt: skip
    actions = [_action(book, ref, now_ms) for ref in refs[-MAX_ACTIONS:]]
    return {
        "account_id": account_id,
        "cases_as_subject": [c.summary() for c in as_subject[-MAX_CASES:]],
        "cases_as_member": [c.summary() for c in as_member[:MAX_CASES]],
        "member_of_total": len(as_member),
        "actions": actions,
        "actions_total": len(refs),
        "in_force": [a for a in actions if a["in_force"]],
        "verdict": verdicts,
        "limits": _limits(table, account_id, now_ms),
    }


def overview(index: ConsoleIndex, policy: Policy, now_ms: int) -> dict[str, Any]:
    """The run at a glance: findings and actions over time by detector, article, measure
    and mode; the review backlog and the time decisions took; the policy's rules with
    how many actions each issued in each mode; cases per status at `now_ms`."""
    book = index.book
    book.settle(now_ms)
    hours = [h for h, _, _ in book.findings_by_hour] + [h for h, _, _ in book.actions_by_hour]
    span = (max(hours) - min(hours) + 1) if hours else 1
    per = max(1, -(-span // MAX_POINTS))  # hours a bucket
    bucket_ms = per * 3_600_000

    def series(counts: Counter[tuple[int, str, str]], part: int) -> dict[str, list[list[int]]]:
        by: dict[str, Counter[int]] = {}
        for key, n in counts.items():
            by.setdefault(key[part], Counter())[key[0] // per * bucket_ms] += n
        return {name: sorted(map(list, c.items())) for name, c in sorted(by.items())}

    waiting = [c for c in book.cases.values() if c.pending]
    waits = sorted(
        (d.ts - book.actions[d.action_id].ts) / 1000
        for kept in (book.reviewed, book.reversals)
        for d in kept.values()
        if d.action_id in book.actions
    )
    by_mode: Counter[str] = Counter()
    for (_, _, mode), n in book.actions_by_hour.items():
        by_mode[mode] += n
    return {
        "bucket_ms": bucket_ms,
        "findings": {
            "by_detector": series(book.findings_by_hour, 1),
            "by_article": series(book.findings_by_hour, 2),
        },
        "actions": {
            "by_action": series(book.actions_by_hour, 1),
            "by_mode": series(book.actions_by_hour, 2),
        },
        "backlog": {
            "pending_actions": sum(c.pending for c in waiting),
            "cases": sum(1 for c in book.cases.values() if c.status == "needs_review"),
            "oldest_ts": min((c.pending_since or 0 for c in waiting), default=None),
        },
        "time_to_decision": {
            "decisions": len(waits),
            "p50_s": _quantile(waits, 0.5),
            "p90_s": _quantile(waits, 0.9),
        },
        "policy": {
            "cooldown_s": policy.cooldown_s,
            "rules": [_rule(book, rule.name, rule.mode) for rule in policy.rules],
            "actions_by_mode": {m: by_mode.get(m, 0) for m in ("enforce", "shadow", "review")},
        },
        "statuses": book.counts(),
        "cases": len(book.cases),
        "findings_total": len(book.findings),
        "actions_total": len(book.actions),
    }


def _limits(table: ThrottleTable, account_id: str, now_ms: int) -> list[dict[str, Any]]:
    """The limits the hook's table holds on the account now, per action it limits (the
    table keeps a lapsed one, which its check passes over: not listed)."""
    now = now_ms / 1000
    return [
        {
            "action": kind,
            "action_id": limit.action_id,
            "measure": limit.kind,
            "expires_at": None if limit.expires_at is None else int(limit.expires_at * 1000),
            "requests_per_unit": limit.per_unit or None,
            "unit_s": limit.unit_s or None,
        }
        for (who, kind), held in sorted(table.limits.items())
        if who == account_id
        for limit in held
        if limit.expires_at is None or now < limit.expires_at
    ]


def _rule(book: CaseBook, name: str, mode: str) -> dict[str, Any]:
    """A rule of the policy in force, with the actions it issued in each mode."""
    issued = {m: book.actions_by_rule.get((name, m), 0) for m in ("enforce", "shadow", "review")}
    return {"rule": name, "mode": mode, "actions": issued}


def _quantile(values: list[float], q: float) -> float | None:
    """The `q` quantile of sorted `values` (nearest rank), or None for none."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
