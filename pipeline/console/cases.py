"""Cases: the findings and actions of a run grouped as a reviewer works them (no I/O).

A **case** is one subject's incident as the policy counts it (`pipeline.enforcement.policy`):
the subject's findings from its first for `cooldown_s` (any detector, any window), with the
actions they led to (an action belongs to the case of the finding it rests on, so the
measures a group finding put on each member are the group's case; an approved copy and a
`revert` rest on the same findings). Findings are taken in the order the enforcement stage
decides them (time, then window length, then id), so a case is the same whatever order the
files were written in, and its id is a hash of its subject and its first finding.

A case's **status** is the one thing a reviewer must know first, in this order:
`appealed` (an appeal on one of its actions is open), `needs_review` (an action awaits a
person: mode `review`, or a `human_review`, undecided), `enforced` (a measure in mode
`enforce` stands: not reverted, and its term, if it has one, not over), `reverted` (its
measures were reversed), `shadow` (its actions were only recorded, mode `shadow`), `closed`
(nothing stands and nothing waits: no action, the held ones were rejected, or the
measures' terms are over). A status is so derived at an instant, the console's now
(`pipeline.console.clock`): the book derives again the cases something happened to and
those whose measures' terms ended since.

`CaseBook` keeps the cases as findings, actions and the trail's decisions come in, with
what the queue and search need precomputed: each case's severity, size (its members),
status, and an index from every member, subject and target to its cases. A run holds
hundreds of thousands of findings and actions: what the book keeps of each is a small
record the collector does not track (no cycle runs through one), and the members a
subject's findings name over and over are kept once.
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from msgspec import Struct

from pipeline.contract.findings import SEVERITIES, Action, Finding, stable_id
from pipeline.enforcement.measures import AWAITING_REVIEW
from pipeline.serve.review_api import Appeal, AppealDecision, Decision

STATUSES: tuple[str, ...] = (
    "needs_review",
    "appealed",
    "enforced",
    "shadow",
    "reverted",
    "closed",
)
RANK = {name: i for i, name in enumerate(SEVERITIES)}  # low 0 .. critical 3
HOUR_MS = 3_600_000
NOT_MEASURES = frozenset({"revert", "human_review"})  # nothing a reversal lifts


def case_id(subject_type: str, subject_id: str, first_finding_id: str) -> str:
    """A case's id: its subject and the finding that opened it, so the same every run."""
    return stable_id("case", subject_type, subject_id, first_finding_id)


class FindingRef(Struct, gc=False):
    """What the console keeps of a finding: all but its evidence (read again from the file
    by `offset` when a case is opened), with the one-line explanation."""

    finding_id: str
    detector: str
    article: str
    subject_type: str
    subject_id: str
    severity: str
    score: float
    window_start: int
    window_end: int
    ts: int
    members: tuple[str, ...]
    explanation: str
    target: str  # the account whose content it was about, if the evidence names one
    offset: int = -1  # where its line starts in findings.jsonl, and how long it is
    length: int = 0

    @property
    def order(self) -> tuple[int, int, str]:
        """The order the enforcement stage decides a subject's findings in."""
        return self.ts, self.window_end - self.window_start, self.finding_id


class ActionRef(Struct, gc=False):
    """What the console keeps of an action: all but its params, but those it links by
    (the strings that repeat, interned: a run has hundreds of thousands of actions)."""

    action_id: str
    action: str
    mode: str
    subject_type: str
    subject_id: str
    ts: int
    expires_at: int | None
    finding_ids: tuple[str, ...]
    rule: str
    reverts: str  # a revert: the action it lifts
    approves: str  # an approved copy: the held action it stands for
    offset: int = -1
    length: int = 0

    @property
    def awaits_person(self) -> bool:
        """Whether a person decides on it (held in review mode, or a human_review); an
        approved copy was decided already."""
        return not self.approves and (self.mode == "review" or self.action in AWAITING_REVIEW)


class FindingFields(Protocol):
    """A finding's fields but its evidence: a `Finding`'s, or a record decoded without it."""

    finding_id: str
    detector: str
    article: str
    subject_type: str
    subject_id: str
    severity: str
    score: float
    window_start: int
    window_end: int
    ts: int

    @property
    def members(self) -> Iterable[str]: ...


def finding_ref(f: Finding, offset: int = -1, length: int = 0) -> FindingRef:
    """`f` as the console keeps it."""
    target = f.evidence.get("target") or f.evidence.get("owner") or ""
    explanation = str(f.evidence.get("explanation", ""))
    return ref_of(f, explanation, target if isinstance(target, str) else "", offset, length)


def ref_of(
    f: FindingFields, explanation: str, target: str, offset: int = -1, length: int = 0
) -> FindingRef:
    """A finding as the console keeps it, from its fields and what its evidence says (the
    strings that repeat interned; the book keeps its members once)."""
    return FindingRef(
        finding_id=f.finding_id,
        detector=sys.intern(f.detector),
        article=sys.intern(f.article),
        subject_type=sys.intern(f.subject_type),
        subject_id=sys.intern(f.subject_id),  # a subject's findings name it again and again
        severity=sys.intern(f.severity),
        score=f.score,
        window_start=f.window_start,
        window_end=f.window_end,
        ts=f.ts,
        members=tuple(f.members),
        explanation=explanation,
        target=target,
        offset=offset,
        length=length,
    )


def action_ref(a: Action, offset: int = -1, length: int = 0) -> ActionRef:
    """`a` as the console keeps it."""
    return ActionRef(
        action_id=a.action_id,
        action=sys.intern(a.action),
        mode=sys.intern(a.mode),
        subject_type=sys.intern(a.subject_type),
        subject_id=sys.intern(a.subject_id),
        ts=a.ts,
        expires_at=a.expires_at,
        finding_ids=tuple(a.finding_ids),
        rule=sys.intern(str(a.params.get("rule", ""))),
        reverts=str(a.params.get("reverts", "")) if a.action == "revert" else "",
        approves=str(a.params.get("approves", "")),
        offset=offset,
        length=length,
    )


@dataclass(slots=True)
class Case:
    """One subject's incident, with its sort keys and status kept up to date."""

    case_id: str
    subject_type: str
    subject_id: str
    finding_ids: list[str] = field(default_factory=list)  # in decision order
    action_ids: list[str] = field(default_factory=list)  # in the actions file's order
    members: set[str] = field(default_factory=set)
    named: tuple[str, ...] = ()  # the members of the finding joined last, as the book keeps them
    detectors: set[str] = field(default_factory=set)
    articles: set[str] = field(default_factory=set)
    targets: set[str] = field(default_factory=set)
    modes: set[str] = field(default_factory=set)
    rank: int = 0  # of the gravest finding's severity
    score: float = 0.0
    first_ts: int = 0
    last_ts: int = 0
    window_start: int = 0
    window_end: int = 0
    explanation: str = ""  # the gravest finding's
    status: str = "closed"
    pending: int = 0  # actions awaiting a person
    pending_since: int | None = None  # the oldest of them's time

    @property
    def severity(self) -> str:
        return SEVERITIES[self.rank]

    def summary(self) -> dict[str, Any]:
        """The case as the queue lists it."""
        return {
            "case_id": self.case_id,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "status": self.status,
            "severity": self.severity,
            "score": self.score,
            "detectors": sorted(self.detectors),
            "articles": sorted(self.articles),
            "modes": sorted(self.modes),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "findings": len(self.finding_ids),
            "size": len(self.members),
            "actions": len(self.action_ids),
            "pending": self.pending,
            "explanation": self.explanation,
        }


@dataclass(frozen=True, slots=True)
class ActionState:
    """Where one action stands at an instant: decided, reverted, in force, waiting."""

    state: str  # pending, approved, rejected, reverted, enforced, shadow, held, revert
    in_force: bool  # mode enforce, a measure, not reverted, its term not over
    pending: bool  # a person has yet to decide on it
    reverted: bool
    expired: bool  # its term is over (whatever its mode)


def expired(a: ActionRef, now_ms: int) -> bool:
    """Whether `a`'s term is over at `now_ms` (one without `expires_at` has no end)."""
    return a.expires_at is not None and a.expires_at <= now_ms


class CaseBook:
    """The cases of a run, kept as its records come in (each id once, in any order)."""

    def __init__(self, cooldown_ms: int) -> None:
        self.cooldown_ms = cooldown_ms
        self.findings: dict[str, FindingRef] = {}
        self.actions: dict[str, ActionRef] = {}
        self.cases: dict[str, Case] = {}
        self.case_of_finding: dict[str, str] = {}
        self.by_subject: dict[tuple[str, str], list[str]] = {}  # case ids, in time order
        self.by_member: dict[str, set[str]] = {}
        self.by_target: dict[str, set[str]] = {}
        self.by_account: dict[str, list[str]] = {}  # action ids on an account subject
        self.waiting: dict[str, list[str]] = {}  # finding id -> actions that came before it
        self.revert_of: dict[str, str] = {}  # action id -> the revert that lifts it
        self.copy_of: dict[str, str] = {}  # held action id -> its approved copy
        self.reviewed: dict[str, Decision] = {}  # action id -> its approve or reject
        self.reversals: dict[str, Decision] = {}  # action id named -> its reversal
        self.appeals: dict[str, Appeal] = {}
        self.appeals_of: dict[str, list[str]] = {}  # action id -> appeal ids
        self.appeal_decisions: dict[str, AppealDecision] = {}  # appeal id -> decision
        self.findings_by_hour: Counter[tuple[int, str, str]] = Counter()
        self.actions_by_hour: Counter[tuple[int, str, str]] = Counter()
        self.actions_by_rule: Counter[tuple[str, str]] = Counter()
        self.version = 0  # changes whenever anything does: the queries' caches key on it
        self._dirty: set[str] = set()
        self._ends: list[tuple[int, str]] = []  # (when a case's measure's term ends, case id)
        self._next_end: dict[str, int] = {}  # case id -> the first of those it waits for
        self._settled_at = 0  # the instant the statuses were last derived at
        self._members: dict[tuple[str, ...], tuple[str, ...]] = {}  # each list kept once

    # -- taking records in

    def add_findings(self, findings: Iterable[FindingRef]) -> None:
        for f in findings:
            self._add_finding(f)

    def _add_finding(self, f: FindingRef) -> None:
        if f.finding_id in self.findings:
            return
        f.members = self._kept(f.members)
        self.findings[f.finding_id] = f
        self.version += 1
        self.findings_by_hour[(f.ts // HOUR_MS, f.detector, f.article)] += 1
        key = (f.subject_type, f.subject_id)
        ids = self.by_subject.get(key)
        last = self.cases[ids[-1]] if ids else None
        if last is not None and f.order < self.findings[last.finding_ids[-1]].order:
            self._regroup(key, f)  # one that came late: the subject's cases drawn again
        elif last is not None and self._joins(last, f):
            self._join(last, f)
        else:
            self._join(self._open(key, f), f)
        for action_id in self.waiting.pop(f.finding_id, []):
            self._link(self.actions[action_id])

    def _kept(self, members: tuple[str, ...]) -> tuple[str, ...]:
        """`members` as the book keeps them: the tuple kept for the same members before, or
        these, each id interned (one string per account)."""
        kept = self._members.get(members)
        if kept is None:  # kept as its own key: the ids as decoded are let go
            kept = tuple(map(sys.intern, members))
            self._members[kept] = kept
        return kept

    def _open(self, key: tuple[str, str], first: FindingRef) -> Case:
        """A new case of subject `key`, opened by `first`."""
        case = Case(case_id(first.subject_type, first.subject_id, first.finding_id), *key)
        self.cases[case.case_id] = case
        self.by_subject.setdefault(key, []).append(case.case_id)
        return case

    def _joins(self, case: Case, f: FindingRef) -> bool:
        """Whether `f` is of `case`'s incident: within the cooldown of its first finding."""
        return f.ts - self.findings[case.finding_ids[0]].ts < self.cooldown_ms

    def _join(self, case: Case, f: FindingRef) -> None:
        first = not case.finding_ids
        case.finding_ids.append(f.finding_id)
        self.case_of_finding[f.finding_id] = case.case_id
        if f.members is not case.named:  # a subject's findings mostly name the same members
            case.named = f.members
            new = set(f.members)
            new -= case.members
            case.members |= new
            for m in new:
                self.by_member.setdefault(m, set()).add(case.case_id)
        if f.target:
            case.targets.add(f.target)
            self.by_target.setdefault(f.target, set()).add(case.case_id)
        case.detectors.add(f.detector)
        case.articles.add(f.article)
        rank = RANK.get(f.severity, 0)
        if first or (rank, f.score) > (case.rank, case.score):
            case.explanation = f.explanation
        case.rank, case.score = max(case.rank, rank), max(case.score, f.score)
        case.first_ts = f.ts if first else min(case.first_ts, f.ts)
        case.last_ts = max(case.last_ts, f.ts)
        case.window_start = f.window_start if first else min(case.window_start, f.window_start)
        case.window_end = max(case.window_end, f.window_end)
        self._dirty.add(case.case_id)

    def _regroup(self, key: tuple[str, str], late: FindingRef) -> None:
        """Draw a subject's cases again, with `late` among its findings (it came after
        findings it precedes): the old cases go, their findings and actions are the new."""
        finding_ids, action_ids = [late.finding_id], []
        for old_id in self.by_subject.pop(key, []):
            old = self.cases.pop(old_id)
            self._dirty.discard(old_id)
            finding_ids += old.finding_ids
            action_ids += old.action_ids
            for m in old.members:
                self._unindex(self.by_member, m, old_id)
            for t in old.targets:
                self._unindex(self.by_target, t, old_id)
        case: Case | None = None
        for f in sorted((self.findings[x] for x in finding_ids), key=lambda f: f.order):
            if case is None or not self._joins(case, f):
                case = self._open(key, f)
            self._join(case, f)
        for a in sorted((self.actions[x] for x in action_ids), key=lambda a: a.offset):
            self._link(a)

    @staticmethod
    def _unindex(index: dict[str, set[str]], key: str, case: str) -> None:
        held = index.get(key)
        if held is not None:
            held.discard(case)
            if not held:
                del index[key]

    def add_actions(self, actions: Iterable[ActionRef]) -> None:
        for a in actions:
            if a.action_id in self.actions:
                continue
            self.actions[a.action_id] = a
            self.version += 1
            self.actions_by_hour[(a.ts // HOUR_MS, a.action, a.mode)] += 1
            if a.rule:
                self.actions_by_rule[(a.rule, a.mode)] += 1
            if a.subject_type == "account":
                self.by_account.setdefault(a.subject_id, []).append(a.action_id)
            if a.reverts:
                self.revert_of[a.reverts] = a.action_id
                self._touch(a.reverts)
            if a.approves:
                self.copy_of[a.approves] = a.action_id
                self._touch(a.approves)
            self._link(a)

    def _link(self, a: ActionRef) -> None:
        """`a` into the case of the finding it rests on (or held until that comes)."""
        if not a.finding_ids:
            return
        case = self.case_of_finding.get(a.finding_ids[0])
        if case is None:
            self.waiting.setdefault(a.finding_ids[0], []).append(a.action_id)
            return
        held = self.cases[case]
        held.action_ids.append(a.action_id)
        if not a.reverts and not a.approves:  # the policy's modes: what the rules chose
            held.modes.add(a.mode)
        self._dirty.add(case)

    def add_reviews(self, records: Iterable[Decision | Appeal | AppealDecision]) -> None:
        """Decisions, appeals and appeal decisions from the audit trail."""
        for r in records:
            self.version += 1
            if isinstance(r, Decision):
                if r.decision == "reverse":
                    self.reversals.setdefault(r.action_id, r)
                else:
                    self.reviewed.setdefault(r.action_id, r)
                self._touch(r.action_id)
            elif isinstance(r, Appeal):
                if r.appeal_id not in self.appeals:
                    self.appeals[r.appeal_id] = r
                    self.appeals_of.setdefault(r.action_id, []).append(r.appeal_id)
                self._touch(r.action_id)
            else:
                self.appeal_decisions.setdefault(r.appeal_id, r)
                self._touch(r.action_id)

    def _touch(self, action_id: str) -> None:
        """Mark the case of an action for its status to be derived again."""
        if (case := self.case_of_action(action_id)) is not None:
            self._dirty.add(case.case_id)

    # -- deriving

    def case_of_action(self, action_id: str) -> Case | None:
        a = self.actions.get(action_id)
        if a is None or not a.finding_ids:
            return None
        case = self.case_of_finding.get(a.finding_ids[0])
        return self.cases.get(case) if case is not None else None

    def held_of(self, a: ActionRef) -> str:
        """The action a person decided on, for `a`: itself, or what its copy stands for."""
        return a.approves or a.action_id

    def reversal(self, a: ActionRef) -> Decision | None:
        """The reversal that lifted `a` (it, its held action or its copy named), if any."""
        held = self.held_of(a)
        for named in (a.action_id, held, self.copy_of.get(held, "")):
            if named in self.reversals:
                return self.reversals[named]
        return None

    def reverted(self, a: ActionRef) -> bool:
        """Whether `a` was reversed (a revert lifts it, or a reversal names it)."""
        return a.action_id in self.revert_of or self.reversal(a) is not None

    def state(self, a: ActionRef, now_ms: int) -> ActionState:
        """Where `a` stands at `now_ms`."""
        ended = expired(a, now_ms)
        if a.action == "revert":
            return ActionState("revert", False, False, False, ended)
        reverted = self.reverted(a)
        decided = self.reviewed.get(a.action_id)
        pending = a.awaits_person and decided is None and not reverted
        in_force = (
            a.mode == "enforce" and a.action not in NOT_MEASURES and not reverted and not ended
        )
        if reverted:
            state = "reverted"
        elif pending:
            state = "pending"
        elif decided is not None:
            state = "approved" if decided.decision == "approve" else "rejected"
        else:
            state = {"enforce": "enforced", "shadow": "shadow"}.get(a.mode, "held")
        return ActionState(state, in_force, pending, reverted, ended)

    def appeal_state(self, appeal: Appeal) -> str:
        """open, upheld, overturned, or reversed (the action was reversed otherwise)."""
        decided = self.appeal_decisions.get(appeal.appeal_id)
        if decided is not None:
            return "upheld" if decided.decision == "uphold" else "overturned"
        a = self.actions.get(appeal.action_id)
        if a is not None and self.reverted(a):
            return "reversed"
        return "open"

    def case_appeals(self, case: Case) -> list[Appeal]:
        """The appeals filed against the case's actions, in the order they were filed."""
        found = [self.appeals[x] for a in case.action_ids for x in self.appeals_of.get(a, [])]
        return sorted(found, key=lambda appeal: appeal.ts)

    def settle(self, now_ms: int) -> None:
        """Derive at `now_ms` the status of every case something happened to, or whose
        measure's term ended since the last time (all of them if the clock went back)."""
        if now_ms < self._settled_at:
            self._dirty.update(self.cases)
        while self._ends and self._ends[0][0] <= now_ms:
            when, ended = heapq.heappop(self._ends)
            if self._next_end.get(ended) == when:
                del self._next_end[ended]
            self._dirty.add(ended)
        self._settled_at = now_ms
        for case_id_ in self._dirty:
            case = self.cases.get(case_id_)
            if case is not None:
                self._derive(case, now_ms)
        self._dirty.clear()

    def _derive(self, case: Case, now_ms: int) -> None:
        states = [self.state(self.actions[a], now_ms) for a in case.action_ids]
        case.pending = sum(s.pending for s in states)
        waiting = [self.actions[a].ts for a, s in zip(case.action_ids, states, strict=True)
                   if s.pending]  # fmt: skip
        case.pending_since = min(waiting, default=None)
        ends = [e for a, s in zip(case.action_ids, states, strict=True)
                if s.in_force and (e := self.actions[a].expires_at) is not None]  # fmt: skip
        if ends:  # derived again when the first of its measures in force ends
            self._wake(case.case_id, min(ends))
        open_appeal = any(self.appeal_state(appeal) == "open" for appeal in self.case_appeals(case))
        before = case.status
        if open_appeal:
            case.status = "appealed"
        elif case.pending:
            case.status = "needs_review"
        elif any(s.in_force for s in states):
            case.status = "enforced"
        elif any(s.reverted for s in states):
            case.status = "reverted"
        elif "shadow" in case.modes:
            case.status = "shadow"
        else:
            case.status = "closed"
        if case.status != before:
            self.version += 1

    def _wake(self, case: str, when: int) -> None:
        """Derive `case` again at `when` (once: a later time than one set already waits
        for that one, which derives it again and sets the next)."""
        if when < self._next_end.get(case, when + 1):
            self._next_end[case] = when
            heapq.heappush(self._ends, (when, case))

    def counts(self) -> dict[str, int]:
        """Cases per status (every status named, zero or not)."""
        counted = Counter(c.status for c in self.cases.values())
        return {s: counted.get(s, 0) for s in STATUSES}
