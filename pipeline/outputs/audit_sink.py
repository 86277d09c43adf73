"""Results into the audit trail (`pipeline.enforcement.audit`): every finding, then every
action, each appended once by its id."""

from __future__ import annotations

from pathlib import Path

from pipeline.enforcement.audit import AuditTrail, open_audit
from pipeline.outputs.sink import Results, Sink


class AuditSink(Sink):
    """Appends each batch to a trail; an append is one committed transaction."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    @classmethod
    def open(cls, target: str | None, directory: Path, fresh: bool) -> AuditSink:
        """The trail at `target` (a postgresql:// URL or an SQLite file), by default
        DIRECTORY/audit.sqlite; `fresh` starts that default anew, so a replay's trail holds
        that run as its findings.jsonl does."""
        if target is None:
            default = directory / "audit.sqlite"
            if fresh:
                default.unlink(missing_ok=True)
            target = str(default)
        return cls(open_audit(target))

    def write(self, results: Results) -> None:
        if results.findings:
            self.trail.append("finding", results.findings, "finding_id")
        if results.actions:
            self.trail.append("action", results.actions, "action_id")

    def close(self) -> None:
        self.trail.close()
