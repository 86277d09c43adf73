"""Cases as the console groups them (pipeline/console/cases.py), on real findings and
actions: a subject's findings within the policy's cooldown of the first are one case
(the incidents the policy charges), whatever order they arrive in; actions join the case
of the finding they rest on (a group's members' measures too); and a case's status follows
its actions, the trail's decisions, appeals and reversals."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from pipeline.console.cases import CaseBook, action_ref, case_id, finding_ref
from pipeline.contract.findings import Action, Finding, make_finding, stable_id
from pipeline.enforcement.policy import Enforcer, load_policy
from pipeline.serve.review_api import Appeal, AppealDecision, Decision, appeal_decision_id
from tests.helpers import MINUTE, T0

COOLDOWN_MS = 3600 * 1000
NOW = T0 + 24 * 3600 * 1000  # when the statuses are derived (the actions here have no end)


def _finding(subject: str, minute: int, detector: str = "follower_jump", *,
             subject_type: str = "account", members: list[str] | None = None,
             severity: str = "high", score: float = 0.9) -> Finding:  # fmt: skip
    start = T0 + minute * MINUTE
    return make_finding(
        detector=detector, article="12", subject_type=subject_type,  # type: ignore[arg-type]
        subject_id=subject, window_start=start, window_end=start + 5 * MINUTE, score=score,
        severity=severity, members=members or [],
        evidence={"observed": 300, "expected": 2.0, "explanation": f"{subject} at {minute}"},
    )  # fmt: skip


def _action(action_id: str, finding: Finding, measure: str = "warn", mode: str = "enforce",
            subject: str | None = None, **params: object) -> Action:  # fmt: skip
    return Action(
        action_id=action_id, action=measure, subject_type="account",
        subject_id=subject or finding.subject_id, basis=["12", "19"],
        finding_ids=[finding.finding_id], mode=mode,  # type: ignore[arg-type]
        ts=finding.ts, params={"rule": "r", **params},
    )  # fmt: skip


def _book(findings: Sequence[Finding], actions: Sequence[Action] = ()) -> CaseBook:
    book = CaseBook(COOLDOWN_MS)
    book.add_findings(finding_ref(f) for f in findings)
    book.add_actions(action_ref(a, offset=i) for i, a in enumerate(actions))
    book.settle(NOW)
    return book


def _decision(action_id: str, decision: str, reviewer: str = "li") -> Decision:
    prefix = "reverse" if decision == "reverse" else "decision"
    return Decision(decision_id=stable_id(prefix, action_id), action_id=action_id,
                    decision=decision, reviewer=reviewer, note="why", ts=T0)  # fmt: skip


def _partition(book: CaseBook) -> dict[str, list[str]]:
    return {c.case_id: list(c.finding_ids) for c in book.cases.values()}


def test_a_subjects_findings_within_the_cooldown_of_its_first_are_one_case() -> None:
    first, second, later = _finding("u1", 0), _finding("u1", 50), _finding("u1", 61)
    other = _finding("u2", 10)
    book = _book([first, second, later, other])
    assert _partition(book) == {
        case_id("account", "u1", first.finding_id): [first.finding_id, second.finding_id],
        case_id("account", "u1", later.finding_id): [later.finding_id],
        case_id("account", "u2", other.finding_id): [other.finding_id],
    }
    assert book.by_subject[("account", "u1")] == [
        case_id("account", "u1", first.finding_id),
        case_id("account", "u1", later.finding_id),
    ]


def test_cases_do_not_depend_on_the_order_findings_arrive_in() -> None:
    findings = [_finding("u1", m, members=[f"m{m}"]) for m in (0, 5, 30, 59, 60, 65, 200, 201)]
    findings += [_finding("g1", m, "lockstep_group", subject_type="group",
                          members=["a", "b", f"x{m}"]) for m in (0, 70, 75)]  # fmt: skip
    expected = _partition(_book(findings))
    members = {m: sorted(c) for m, c in _book(findings).by_member.items()}
    for seed in range(5):
        shuffled = list(findings)
        random.Random(seed).shuffle(shuffled)
        book = _book(shuffled)
        assert _partition(book) == expected
        assert {m: sorted(c) for m, c in book.by_member.items()} == members


def test_the_cases_are_the_incidents_the_policy_charges() -> None:
    """The real enforcer over one subject's findings: each time it starts a new incident
    (its record's `incident_start` moves), the console starts a new case."""
    policy = load_policy()
    enforcer = Enforcer(policy)
    record = enforcer.new_record()
    findings = [_finding("u1", m, severity="critical", score=0.97)
                for m in (0, 20, 59, 61, 90, 130, 300)]  # fmt: skip
    starts, actions = [], []
    for f in findings:
        actions += enforcer.decide(f, record)
        if record.incident_start == f.ts:
            starts.append(f.finding_id)
    assert len(starts) == 4  # at 0, 61, 130 and 300 minutes
    book = _book(findings, actions)
    assert sorted(book.cases) == sorted(case_id("account", "u1", s) for s in starts)
    for a in actions:  # each action is in the case of the finding it rests on
        case = book.case_of_action(a.action_id)
        assert case is not None and a.finding_ids[0] in case.finding_ids


def test_a_groups_measures_on_its_members_are_the_groups_case_and_members_find_it() -> None:
    group = _finding("ring1", 0, "lockstep_group", subject_type="group", members=["m1", "m2"])
    actions = [_action(f"t-{m}", group, "throttle", subject=m, descriptors=[
                   {"key": "account_id", "value": m}], requests_per_unit=20, unit="hour")
               for m in ("m1", "m2")]  # fmt: skip
    early = _action("early", group, "human_review", subject="m1")
    book = CaseBook(COOLDOWN_MS)
    book.add_actions([action_ref(early)])  # an action before its finding: it waits
    book.add_findings([finding_ref(group)])
    book.add_actions(action_ref(a) for a in actions)
    book.settle(NOW)
    (case,) = book.cases.values()
    assert case.action_ids == ["early", "t-m1", "t-m2"]
    assert case.members == {"m1", "m2"} and book.by_member["m2"] == {case.case_id}
    assert book.by_account["m1"] == ["early", "t-m1"]
    assert case.status == "needs_review" and case.pending == 1


@pytest.mark.parametrize(
    ("modes", "status"),
    [
        ([], "closed"),
        ([("warn", "enforce")], "enforced"),
        ([("warn", "shadow")], "shadow"),
        ([("restrict_functions", "review")], "needs_review"),
        ([("warn", "enforce"), ("human_review", "enforce")], "needs_review"),
        ([("warn", "shadow"), ("restrict_functions", "enforce")], "enforced"),
    ],
)
def test_a_cases_status_follows_its_actions_modes(
    modes: list[tuple[str, str]], status: str
) -> None:
    f = _finding("u1", 0)
    book = _book([f], [_action(f"a{i}", f, m, mode) for i, (m, mode) in enumerate(modes)])
    (case,) = book.cases.values()
    assert case.status == status


def test_a_held_action_approved_rejected_appealed_and_reversed() -> None:
    f = _finding("u1", 0)
    held = _action("held", f, "restrict_functions", "review")
    book = _book([f], [held])
    (case,) = book.cases.values()
    assert case.status == "needs_review" and book.state(book.actions["held"], NOW).pending

    book.add_reviews([_decision("held", "approve")])
    copy = _action(stable_id("approved", "held"), f, "restrict_functions", approves="held")
    book.add_actions([action_ref(copy, offset=1)])
    book.settle(NOW)
    assert case.status == "enforced" and case.pending == 0
    assert book.state(book.actions["held"], NOW).state == "approved"
    assert book.state(book.actions[copy.action_id], NOW).in_force
    assert case.modes == {"review"}  # the policy's mode; the copy is the desk's

    appeal = Appeal(appeal_id="ap1", action_id=copy.action_id, appellant="u1", reason="x", ts=T0)
    book.add_reviews([appeal])
    book.settle(NOW)
    assert case.status == "appealed" and book.appeal_state(appeal) == "open"
    book.add_reviews([AppealDecision(decision_id=appeal_decision_id("ap1"), appeal_id="ap1",
                                     action_id=copy.action_id, decision="uphold",
                                     reviewer="wang", note="stands", ts=T0)])  # fmt: skip
    book.settle(NOW)
    assert case.status == "enforced" and book.appeal_state(appeal) == "upheld"

    # a reversal of the copy, recorded before its reverts reach the actions file
    book.add_reviews([_decision(copy.action_id, "reverse")])
    book.settle(NOW)
    assert case.status == "reverted"
    assert (
        book.state(book.actions["held"], NOW).reverted
        and book.state(book.actions[copy.action_id], NOW).reverted
    )


def test_a_rejected_held_action_closes_its_case_and_an_overturned_appeal_reverts() -> None:
    f, g = _finding("u1", 0), _finding("u2", 0)
    book = _book([f, g], [_action("held", f, "restrict_functions", "review"),
                          _action("warned", g)])  # fmt: skip
    book.add_reviews([_decision("held", "reject")])
    appeal = Appeal(appeal_id="ap2", action_id="warned", appellant="u2", reason="x", ts=T0)
    book.add_reviews([appeal])
    book.settle(NOW)
    by_subject = {c.subject_id: c for c in book.cases.values()}
    assert by_subject["u1"].status == "closed"
    assert by_subject["u2"].status == "appealed"
    revert = Action(action_id=stable_id("revert", "warned"), action="revert",
                    subject_type="account", subject_id="u2", basis=["12", "19", "20"],
                    finding_ids=[g.finding_id], mode="enforce", ts=T0,
                    params={"reverts": "warned"})  # fmt: skip
    book.add_reviews([AppealDecision(decision_id=appeal_decision_id("ap2"), appeal_id="ap2",
                                     action_id="warned", decision="overturn", reviewer="li",
                                     note="promo", ts=T0)])  # fmt: skip
    book.add_actions([action_ref(revert, offset=9)])
    book.settle(NOW)
    assert by_subject["u2"].status == "reverted"
    assert book.appeal_state(appeal) == "overturned"
    assert book.state(book.actions[revert.action_id], NOW).state == "revert"


def test_the_queue_keys_severity_size_and_explanation_of_the_gravest() -> None:
    low = _finding("u1", 0, severity="medium", score=0.75, members=["a"])
    grave = _finding("u1", 10, severity="critical", score=0.97, members=["a", "b", "c"])
    book = _book([low, grave])
    (case,) = book.cases.values()
    summary = case.summary()
    assert summary["severity"] == "critical" and summary["score"] == 0.97
    assert summary["size"] == 3 and summary["findings"] == 2
    assert summary["explanation"] == "u1 at 10"
    assert summary["first_ts"] == low.ts and summary["last_ts"] == grave.ts
    assert book.counts() == {"needs_review": 0, "appealed": 0, "enforced": 0, "shadow": 0,
                             "reverted": 0, "closed": 1}  # fmt: skip
