"""The console's index of a run's outputs, followed as they grow, and the case queue.

`OUT/findings.jsonl` and `OUT/actions.jsonl` are followed (`tail.Tail`: whole lines only,
a file started anew read again from its start) and the audit trail is read from the last
sequence number seen (`trail.since`): decisions, appeals, appeal decisions. Everything
goes into a `cases.CaseBook`; a file or a trail started anew (a replay into the same
directory) starts the book anew. A finding is taken in without its evidence (`records`:
where its line is, and what the queue needs), which a case view reads again from there. A
line that is not a valid finding or action is skipped, logged with its line's offset and
the reason, and counted.

The queue is one pass over the cases in a sort order kept between requests (sorted again
only when something changed): the filters are attribute tests, a search is a look-up in
the book's indexes of subjects, members and case ids, and a page is a slice, so a request
never reads the files or the trail, and its cost is bounded by the number of cases. Its
statuses are those at the request's now (`clock`).
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from pipeline.console import clock, trail
from pipeline.console.cases import STATUSES, ActionRef, Case, CaseBook, action_ref
from pipeline.console.records import read_finding_ref
from pipeline.console.tail import Tail
from pipeline.contract.findings import (
    Action,
    Finding,
    InvalidAction,
    InvalidFinding,
    read_action,
    read_finding,
)
from pipeline.enforcement.audit import AuditTrail, open_audit
from pipeline.serve.review_api import APPEAL_DECISION, Appeal, AppealDecision, Decision

BULK = 20_000  # records taken in at once (the start-up, a run started anew): then frozen
SORTS = ("severity", "-severity", "time", "-time", "size", "-size")
_REVIEW_KINDS: dict[str, type[Decision] | type[Appeal] | type[AppealDecision]] = {
    "decision": Decision,
    "appeal": Appeal,
    APPEAL_DECISION: AppealDecision,
}
_KEYS: dict[str, Callable[[Case], tuple[Any, ...]]] = {
    "severity": lambda c: (c.rank, c.score, c.last_ts, c.case_id),
    "time": lambda c: (c.last_ts, c.rank, c.score, c.case_id),
    "size": lambda c: (len(c.members), c.rank, c.last_ts, c.case_id),
}


def _keep_out_of_collections() -> None:
    """Move what is alive now out of the collector's full passes (`gc.freeze`), after the
    garbage is collected. The book's records live as long as it does, and a full pass
    walks every container alive and what it holds: with 100,000 findings one took a
    third of a second, every few case views (whose evidence fills the young generations),
    while the records need no collector (no cycle runs through them; a book started
    anew frees its own as it goes)."""
    gc.collect()
    gc.freeze()


def _action_ref(line: bytes, offset: int) -> ActionRef:
    """The action of `line` as the book keeps it, or `InvalidAction`."""
    return action_ref(read_action(line), offset, len(line))


@dataclass(frozen=True)
class CaseQuery:
    """A request for a page of the queue: filters (empty: any), a sort, a page."""

    q: str = ""  # a subject's id, a member's, or a case's
    detector: str = ""
    article: str = ""
    severity: str = ""
    mode: str = ""
    status: str = ""
    sort: str = "-severity"
    page: int = 1
    page_size: int = 50


class ConsoleIndex:
    """A run's outputs in `out` and its audit trail at `target`, as cases."""

    def __init__(self, out: Path, target: str, cooldown_ms: int) -> None:
        self.out, self.target, self.cooldown_ms = out, target, cooldown_ms
        self.findings_file = Tail(out / "findings.jsonl")
        self.actions_file = Tail(out / "actions.jsonl")
        self.audit: AuditTrail = open_audit(target)
        self.trail_id = trail.file_id(target)
        self.seq = 0  # the last audit record read
        self.book = CaseBook(cooldown_ms)
        self.refused: Counter[str] = Counter()  # lines skipped, by file
        self.on_new_trail: list[Callable[[AuditTrail], None]] = []  # told of a new trail
        self._orders: dict[str, list[Case]] = {}
        self._orders_version = -1

    def close(self) -> None:
        self.audit.close()

    # -- following the outputs

    def follow(self) -> None:
        """`refresh`, a failure said in one line rather than raised (a trail locked by a
        writer, a file being replaced): what it did not read is read at the next one."""
        try:
            self.refresh()
        except Exception as exc:  # whatever it is, the console keeps serving what it has
            print(f"console: could not read the outputs in {self.out} now: {exc}",
                  file=sys.stderr)  # fmt: skip

    def refresh(self) -> None:
        """Take in what the files and the trail gained since the last refresh."""
        if self._trail_replaced():
            self._start_over()
        found = self.findings_file.read()
        acted = self.actions_file.read()
        if found.restarted or acted.restarted:
            print(f"console: the outputs in {self.out} were started anew: reading them again",
                  file=sys.stderr)  # fmt: skip
            found.close()
            acted.close()
            self._start_over()
            found, acted = self.findings_file.read(), self.actions_file.read()
        before = len(self.book.findings) + len(self.book.actions)
        findings = (
            self._decoded(line, at, read_finding_ref, "findings.jsonl") for at, line in found.lines
        )
        self.book.add_findings(ref for ref in findings if ref is not None)
        actions = (
            self._decoded(line, at, _action_ref, "actions.jsonl") for at, line in acted.lines
        )
        self.book.add_actions(ref for ref in actions if ref is not None)
        self._read_trail()
        self.book.settle(clock.now_ms())
        if len(self.book.findings) + len(self.book.actions) - before >= BULK:
            _keep_out_of_collections()

    def _decoded(
        self, line: bytes, offset: int, read: Callable[[bytes, int], Any], name: str
    ) -> Any | None:
        if not line.strip():
            return None
        try:
            return read(line, offset)
        except (InvalidFinding, InvalidAction) as exc:
            self.refused[name] += 1
            print(f"console: refused the line at byte {offset} of {self.out / name}: {exc}",
                  file=sys.stderr)  # fmt: skip
            return None

    def _read_trail(self) -> None:
        records: list[Decision | Appeal | AppealDecision] = []
        for seq, kind, body in trail.since(self.audit, self.seq, _REVIEW_KINDS):
            self.seq = seq
            try:
                records.append(msgspec.json.decode(body, type=_REVIEW_KINDS[kind]))
            except msgspec.DecodeError as exc:
                print(f"console: audit record {seq} ({kind}) is not one: {exc}", file=sys.stderr)
        self.book.add_reviews(records)

    def _trail_replaced(self) -> bool:
        """Whether an SQLite trail's file is another now (then read from the new one, and
        whoever writes to it told)."""
        now = trail.file_id(self.target)
        if now is None or now == self.trail_id:
            return False
        print(f"console: the audit trail {self.target} was started anew: reading it again",
              file=sys.stderr)  # fmt: skip
        self.trail_id = now
        old, self.audit = self.audit, open_audit(self.target)
        old.close()
        for tell in self.on_new_trail:
            tell(open_audit(self.target))
        return True

    def _start_over(self) -> None:
        self.findings_file = Tail(self.out / "findings.jsonl")
        self.actions_file = Tail(self.out / "actions.jsonl")
        self.seq = 0
        self.book = CaseBook(self.cooldown_ms)
        self.refused.clear()
        self._orders_version = -1

    # -- reading records again, whole

    def finding(self, finding_id: str) -> Finding | None:
        """The whole finding (with its evidence), read again from its line."""
        return next(iter(self.findings([finding_id])), None)

    def findings(self, finding_ids: list[str]) -> list[Finding]:
        """The whole findings of `finding_ids` that are still where they were read (the
        file opened once), in that order."""
        refs = [ref for x in finding_ids if (ref := self.book.findings.get(x)) is not None]
        lines = self.findings_file.lines_at([(ref.offset, ref.length) for ref in refs])
        found = []
        for ref, line in zip(refs, lines, strict=True):
            try:
                finding = read_finding(line)
            except InvalidFinding:  # the file changed under it: the next refresh starts over
                continue
            if finding.finding_id == ref.finding_id:
                found.append(finding)
        return found

    def action(self, action_id: str) -> Action | None:
        """The whole action (with its params), read again from its line."""
        ref = self.book.actions.get(action_id)
        if ref is None:
            return None
        line = self.actions_file.line_at(ref.offset, ref.length)
        try:
            found = read_action(line)
        except InvalidAction:
            return None
        return found if found.action_id == action_id else None

    # -- the queue

    def ordered(self, sort: str) -> list[Case]:
        """Every case in `sort` order ("-" first: descending), kept until something changes."""
        if self._orders_version != self.book.version:
            self._orders, self._orders_version = {}, self.book.version
        if sort not in self._orders:
            key = _KEYS[sort.lstrip("-")]
            self._orders[sort] = sorted(
                self.book.cases.values(), key=key, reverse=sort.startswith("-")
            )
        return self._orders[sort]

    def search(self, q: str) -> set[str]:
        """The ids of the cases `q` names: as a case, a subject (of any type) or a member."""
        book = self.book
        found = set(book.by_member.get(q, ()))
        for subject_type in ("account", "content", "group"):
            found.update(book.by_subject.get((subject_type, q), ()))
        if q in book.cases:
            found.add(q)
        return found

    def page(self, query: CaseQuery, now_ms: int) -> dict[str, Any]:
        """A page of the queue at `now_ms`: its cases, how many match, and the counts per
        status of the cases the other filters match."""
        self.book.settle(now_ms)
        cases = self.ordered(query.sort)
        if query.q:
            named = self.search(query.q)
            cases = [c for c in cases if c.case_id in named] if named else []
        counts = dict.fromkeys(STATUSES, 0)
        matched: list[Case] = []
        for c in cases:
            if query.detector and query.detector not in c.detectors:
                continue
            if query.article and query.article not in c.articles:
                continue
            if query.severity and query.severity != c.severity:
                continue
            if query.mode and query.mode not in c.modes:
                continue
            counts[c.status] += 1
            if not query.status or c.status == query.status:
                matched.append(c)
        first = (query.page - 1) * query.page_size
        shown = matched[first : first + query.page_size]
        return {
            "cases": [c.summary() for c in shown],
            "page": query.page,
            "page_size": query.page_size,
            "total": len(matched),
            "pages": -(-len(matched) // query.page_size),
            "counts": counts,
        }
