"""Decisions made in the console: through the review desk's own code, so that a decision
made here and one made through the review API (`lockstep review serve`) are the same
records in the audit trail and the same actions to every sink.

An approval, a rejection, a reversal and an appeal are `review_api.Reviews`' own (with the
reviewer who is logged in, and the reason as its note). Two decisions are the console's:

- an appeal decided (`review_api.AppealDecision`, listed by the desk too): upheld, the
  measure stands; overturned, it
  is recorded and the action reversed through the desk;
- a case decided as one: approving a case approves each action in it that awaits a
  person; rejecting it rejects those and reverses its measures; a member excluded from
  an approval has its actions rejected and its measures reversed. A measure whose term
  is over is reversed too: a reversal undoes the decision, not only what is left of its
  term (the record says the measure was wrong), and the plan does not depend on the
  clock, so a repeat plans the steps the first did. The plan is checked whole against
  what was decided before, and nothing is done if any step conflicts with it.

Every decision is idempotent, as the desk's are (ids are deterministic): the same decision
again records nothing new and answers as the first did, marked `repeated` (a double click
is one decision); a different decision on what was decided is a 409 saying by whom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from pipeline.console.cases import NOT_MEASURES, ActionRef
from pipeline.console.clock import now_ms
from pipeline.console.index import ConsoleIndex
from pipeline.serve.review_api import APPEAL_DECISION, AppealDecision, Reviews, appeal_decision_id

Op = Literal["approve", "reject", "reverse"]


@dataclass(frozen=True)
class Answer:
    """What a decision answers: an HTTP status and its JSON body."""

    status: int
    body: dict[str, Any]


def _error(status: int, error: str, **more: Any) -> Answer:
    return Answer(status, {"error": error, **more})


class ConsoleDesk:
    """The console's decisions over `reviews` (the desk's state in the trail), with the
    index read again before each (to plan on what was decided) and after (to show it)."""

    def __init__(self, reviews: Reviews, index: ConsoleIndex) -> None:
        self.reviews, self.index = reviews, index

    def _builtins(self, record: Any) -> Any:
        return msgspec.to_builtins(record) if record is not None else None

    # -- one action

    def decide(self, action_id: str, decision: str, reviewer: str, reason: str) -> Answer:
        """Approve or reject one action, as POST /v1/reviews/{action_id} does."""
        result = self.reviews.decide(action_id, decision, reviewer, reason)
        self.index.follow()
        return self._answered(result, self.index.book.reviewed.get(action_id))

    def reverse(self, action_id: str, reviewer: str, reason: str) -> Answer:
        """Reverse one action, as POST /v1/actions/{action_id}/reverse does."""
        result = self.reviews.reverse(action_id, reviewer, reason)
        self.index.follow()
        named = self.index.book.actions.get(action_id)
        return self._answered(result, self.index.book.reversal(named) if named else None)

    def _answered(self, result: dict[str, Any], recorded: Any) -> Answer:
        """The desk's result as the console answers it: a repeat of the decision on
        record (the desk's 409 carrying what it issued) is the decision, `repeated`."""
        status = result.pop("status", 200)
        if status == 409 and "issued" in result and "decision" not in result:
            body = {"decision": self._builtins(recorded), "issued": result["issued"]}
            return Answer(200, {**body, "repeated": True})
        if "error" in result:
            return Answer(status, result)
        return Answer(200, {**result, "repeated": False})

    # -- appeals

    def appeal(self, action_id: str, appellant: str, reason: str) -> Answer:
        """File an appeal against an action, as POST /v1/appeals does."""
        result = self.reviews.appeal(action_id, appellant, reason)
        if "error" in result:
            return Answer(result.pop("status", 400), result)
        appeal_id = result["appeal"]["appeal_id"]
        repeated = appeal_id in self.index.book.appeals
        self.index.follow()
        recorded = self.index.book.appeals.get(appeal_id)
        appeal = self._builtins(recorded) if recorded is not None else result["appeal"]
        return Answer(200, {"appeal": appeal, "repeated": repeated})

    def decide_appeal(self, appeal_id: str, decision: str, reviewer: str, reason: str) -> Answer:
        """Uphold an appeal (the measure stands) or overturn it (the action reversed)."""
        self.index.follow()
        book = self.index.book
        appeal = book.appeals.get(appeal_id)
        if appeal is None:
            return _error(404, f"no appeal {appeal_id}")
        before = book.appeal_decisions.get(appeal_id)
        if before is not None and before.decision != decision:
            return _error(409, f"appeal {appeal_id} was already decided by {before.reviewer!r}: "
                          f"{before.decision}", decision=self._builtins(before))  # fmt: skip
        action = book.actions.get(appeal.action_id)
        reversal = book.reversal(action) if action is not None else None
        if before is None and decision == "uphold" and reversal is not None:
            error = f"{appeal.action_id} was reversed by {reversal.reviewer!r}: nothing to uphold"
            return _error(409, error)
        record = AppealDecision(
            decision_id=appeal_decision_id(appeal_id),
            appeal_id=appeal_id,
            action_id=appeal.action_id,
            decision="uphold" if decision == "uphold" else "overturn",
            reviewer=reviewer,
            note=reason,
            ts=now_ms(),
        )
        if before is None and not self.reviews.audit.append(
            APPEAL_DECISION, [record], "decision_id"
        ):
            self.index.follow()  # recorded meanwhile, by another console: answer as that one
            recorded = book.appeal_decisions.get(appeal_id)
            if recorded is None or recorded.decision != decision:
                return _error(409, f"appeal {appeal_id} was decided meanwhile",
                              decision=self._builtins(recorded))  # fmt: skip
        issued: list[Any] = []
        if decision == "overturn":  # again on a repeat: the desk issues the same reverts
            reversed_ = self.reviews.reverse(appeal.action_id, reviewer, reason)
            issued = reversed_.get("issued", [])
        self.index.follow()
        recorded = self.index.book.appeal_decisions.get(appeal_id) or record
        body = {"decision": self._builtins(recorded), "issued": issued}
        return Answer(200, {**body, "repeated": before is not None})

    # -- a case as one

    def decide_case(
        self, case_id: str, decision: str, exclude: list[str], reviewer: str, reason: str
    ) -> Answer:
        """Approve or reject a case as one, its excluded members' measures reversed."""
        self.index.follow()
        book = self.index.book
        case = book.cases.get(case_id)
        if case is None:
            return _error(404, f"no case {case_id}")
        if exclude and decision != "approve":
            return _error(422, "members are excluded from an approval: a rejection takes in all")
        if strangers := sorted(set(exclude) - case.members):
            return _error(422, f"not members of case {case_id}: {', '.join(strangers[:10])}")
        plan = self._plan([book.actions[a] for a in case.action_ids], decision, set(exclude))
        if not plan:
            return _error(422, f"nothing in case {case_id} awaits a decision or is in force")
        if conflicts := self._conflicts(plan):
            return _error(409, f"case {case_id} was decided otherwise before", conflicts=conflicts)
        applied, issued = [], []
        for op, a in plan:
            if op == "reverse":
                result = self.reviews.reverse(a.action_id, reviewer, reason)
            else:
                result = self.reviews.decide(a.action_id, op, reviewer, reason)
            applied.append({"action_id": a.action_id, "op": op, **_outcome(result)})
            issued += [x for x in result.get("issued", []) if x not in issued]
        self.index.follow()
        repeated = all(step["outcome"] == "repeated" for step in applied)
        refused = any(step["outcome"] == "refused" for step in applied)
        body = {"case_id": case_id, "decision": decision, "excluded": sorted(set(exclude))}
        body |= {"applied": applied, "issued": issued, "repeated": repeated}
        if refused:  # decided meanwhile elsewhere (the review API): the rest stands, as done
            return Answer(409, {"error": f"steps of case {case_id} were refused", **body})
        return Answer(200, body)

    def _plan(
        self, actions: list[ActionRef], decision: str, exclude: set[str]
    ) -> list[tuple[Op, ActionRef]]:
        """What deciding the case means for each of its actions (an approved copy and a
        revert are decided through the action they stand for)."""
        book = self.index.book
        plan: list[tuple[Op, ActionRef]] = []
        for a in actions:
            if a.reverts or a.approves:
                continue
            refused = decision == "reject" or (
                a.subject_type == "account" and a.subject_id in exclude
            )
            reverted = book.reverted(a)
            if a.awaits_person and not (refused and reverted):  # a reversal already refused it
                plan.append(("reject" if refused else "approve", a))
            if refused and a.mode == "enforce" and a.action not in NOT_MEASURES:
                plan.append(("reverse", a))
        return plan

    def _conflicts(self, plan: list[tuple[Op, ActionRef]]) -> list[dict[str, Any]]:
        """The steps of `plan` that contradict a decision on record, or cannot be made."""
        book = self.index.book
        conflicts = []
        for op, a in plan:
            recorded = book.reviewed.get(a.action_id)
            reversal = book.reversal(a)
            if op != "reverse" and recorded is not None and recorded.decision != op:
                conflicts.append({"action_id": a.action_id, "op": op,
                                  "recorded": self._builtins(recorded)})  # fmt: skip
            elif op == "approve" and reversal is not None:
                conflicts.append({"action_id": a.action_id, "op": op,
                                  "recorded": self._builtins(reversal)})  # fmt: skip
            elif op == "approve" and not _lasts(a):
                conflicts.append({"action_id": a.action_id, "op": op, "recorded": None,
                                  "error": "it expires when it is issued"})  # fmt: skip
        return conflicts


def _outcome(result: dict[str, Any]) -> dict[str, str]:
    """One step of a case decision as the desk answered it: recorded, the same decision
    repeated (the desk's 409 carrying what it issued), or refused, and why."""
    status = result.get("status", 200)
    if status == 200:
        return {"outcome": "recorded"}
    if status == 409 and "issued" in result and "decision" not in result:
        return {"outcome": "repeated"}
    return {"outcome": "refused", "error": str(result.get("error", ""))}


def _lasts(a: ActionRef) -> bool:
    """Whether `a` is in force for some time once issued (the desk approves only those)."""
    return a.expires_at is None or a.expires_at > a.ts
