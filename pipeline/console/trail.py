"""The audit trail as the console reads it: the records appended since the last look, the
rows of one case's records, and the chain's verification, kept current in the background.

`AuditTrail` reads a kind of record whole; the console follows the trail beside a run, so
it asks for what came after the last sequence number it saw (the primary key's range: no
scan of the findings and actions before it). Verifying the chain reads every record, so
it runs on a thread of its own, with a connection of its own, every `verify_every_s`, and
the case view shows its last result.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.enforcement.audit import AuditTrail, SqliteAudit, open_audit

Row = tuple[int, str, str, int, str]  # seq, kind, record_id, ts, hash
_CHUNK = 500  # ids per query


def _marks(audit: AuditTrail) -> str:
    """The driver's parameter mark."""
    return "?" if isinstance(audit, SqliteAudit) else "%s"


def _query(audit: AuditTrail, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
    db: Any = audit.db  # type: ignore[attr-defined]  # both stores keep their connection there
    return list(db.execute(sql.replace("?", _marks(audit)), args).fetchall())


def since(audit: AuditTrail, seq: int, kinds: Iterable[str]) -> list[tuple[int, str, str]]:
    """(seq, kind, body) of the records of `kinds` after `seq`, in order."""
    kinds = list(kinds)
    marks = ",".join("?" * len(kinds))
    sql = f"SELECT seq, kind, body FROM audit WHERE seq > ? AND kind IN ({marks}) ORDER BY seq"
    return [(int(s), str(k), str(b)) for s, k, b in _query(audit, sql, [seq, *kinds])]


def last_seq(audit: AuditTrail) -> int:
    """The sequence number of the trail's last record (0 for none)."""
    rows = _query(audit, "SELECT MAX(seq) FROM audit", [])
    return int(rows[0][0] or 0) if rows else 0


def rows_of(audit: AuditTrail, wanted: Iterable[tuple[str, str]]) -> list[Row]:
    """The trail's rows of the (kind, record id) pairs `wanted`, in the trail's order."""
    by_kind: dict[str, list[str]] = {}
    for kind, record_id in wanted:
        by_kind.setdefault(kind, []).append(record_id)
    rows: list[Row] = []
    for kind, ids in by_kind.items():
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = (
                "SELECT seq, kind, record_id, ts, hash FROM audit "
                f"WHERE kind = ? AND record_id IN ({marks})"
            )
            rows += [
                (int(s), k, r, int(t), h) for s, k, r, t, h in _query(audit, sql, [kind, *chunk])
            ]
    return sorted(rows)


def file_id(target: str) -> tuple[int, int] | None:
    """(device, inode) of an SQLite trail's file (None for PostgreSQL, or no file): a new
    one means the trail was started anew (a replay into the same directory)."""
    if "://" in target:
        return None
    try:
        stat = os.stat(Path(target))
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


@dataclass(frozen=True)
class ChainStatus:
    """The last verification of the chain: when, how many records held, what broke."""

    checked_at: int | None  # epoch ms; None: not verified yet
    records: int  # records that hold (before the first broken link, if any)
    problem: str | None  # where the chain breaks
    error: str | None = None  # why it could not be verified (the store away, locked)

    def as_json(self) -> dict[str, Any]:
        unknown = self.checked_at is None or self.error is not None
        return {
            "verified": None if unknown else self.problem is None,
            "records": self.records,
            "problem": self.problem,
            "error": self.error,
            "checked_at": self.checked_at,
        }


class Verifier:
    """The chain verified every `every_s` on a daemon thread, through its own connection."""

    def __init__(self, target: str, every_s: float) -> None:
        self.target, self.every_s = target, every_s
        self.status = ChainStatus(None, 0, None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> ChainStatus:
        """Verify the chain now (on the calling thread)."""
        try:
            audit = open_audit(self.target)
            try:
                count, problem = audit.verify()
            finally:
                audit.close()
        except Exception as exc:  # the store is away for now (or locked): say so, try again
            self.status = ChainStatus(int(time.time() * 1000), 0, None, str(exc) or repr(exc))
            return self.status
        self.status = ChainStatus(int(time.time() * 1000), count, problem)
        return self.status

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                self.check()
                self._stop.wait(self.every_s)

        self._thread = threading.Thread(target=run, name="audit-verify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
