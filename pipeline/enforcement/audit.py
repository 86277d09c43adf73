"""The audit trail (Article 19: keep records): every finding and action, append-only, each
record chained by hash to the one before, so a changed or removed record is detectable.

A record's hash is SHA-256 over the previous record's hash, its kind, its id and its body
(the contract JSON, keys sorted). `verify` recomputes the chain from the first record:
the first record whose stored hash differs, or whose `prev` is not its predecessor's
hash, is where the trail was tampered with. Appending is idempotent per (kind, id): the
same finding or action written again after a restart or a replay adds nothing.

The store is SQLite (a file) by default, or PostgreSQL (`postgresql://...`) for a
deployment that has one; in both, triggers refuse UPDATE and DELETE, so changing the past
takes a deliberate act that `verify` still catches, and appends take a lock so two
writers never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (kind, record_id)
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


class AuditError(Exception):
    """An audit store that cannot be opened; the message is one line for the user."""


class AuditStoreLost(Exception):
    """The audit store went away while records were being appended (a database restarted,
    a connection cut): nothing of that append was kept. The message is one line; the
    writer exits, and what it had not committed is taken again when it is started."""


class UnstorableRecord(ValueError):
    """A record the trail cannot store: text with a NUL character, which PostgreSQL's text
    cannot hold. The SQLite store, which could, refuses it too, so that a record is kept
    or refused the same whichever store a deployment uses."""


def storable(text: str, what: str) -> str:
    """`text` (`what` of a record, for the message) if the trail can store it, else
    UnstorableRecord: before it gets to a database, whose driver would fail deep inside or,
    for SQLite, store it."""
    if "\x00" in text:
        raise UnstorableRecord(
            f"cannot store {what}: it holds a NUL character, which the audit trail cannot"
        )
    return text


def chain_hash(prev: str, kind: str, record_id: str, body: str) -> str:
    """The hash that links a record to its predecessor."""
    digest = hashlib.sha256()
    for part in (prev, kind, record_id, body):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def canonical(record: Any) -> str:
    """A record's body as stored and hashed: contract JSON with sorted keys."""
    return json.dumps(msgspec.to_builtins(record), sort_keys=True, ensure_ascii=False)


class AuditTrail:
    """The chain's logic over a store: appending, reading back in order, verifying."""

    def append(self, kind: str, records: Iterable[Any], id_field: str) -> int:
        """Append records of one kind (findings: `finding_id`, actions: `action_id`) not
        yet in the trail, in order; how many were new."""
        records = list(records)
        if not records:
            return 0
        # Checked before any query (PostgreSQL refuses a NUL in parameters too); the body
        # needs no check: it is JSON, which writes a NUL as \u0000.
        storable(kind, "a record's kind")  # first: the message below names it
        where = f"the {id_field} of a {kind}"
        ids = [storable(getattr(r, id_field), where) for r in records]
        with self._writing() as last:
            seen = self._known(kind, ids)
            rows, prev = [], last
            for record in records:
                record_id = getattr(record, id_field)
                if record_id in seen:
                    continue
                seen.add(record_id)
                body = canonical(record)
                digest = chain_hash(prev, kind, record_id, body)
                rows.append((kind, record_id, record.ts, body, prev, digest))
                prev = digest
            if rows:
                self._insert(rows)
        return len(rows)

    def verify(self) -> tuple[int, str | None]:
        """(records checked, None) when the chain holds, else (records before the first
        broken link, what is wrong there)."""
        prev, count = GENESIS, 0
        for seq, kind, record_id, _ts, body, stored_prev, stored in self.rows():
            if stored_prev != prev:
                return (
                    count,
                    f"record {seq} ({kind} {record_id}) does not follow record {seq - 1}: "
                    "a record was removed or inserted",
                )
            if chain_hash(prev, kind, record_id, body) != stored:
                return (
                    count,
                    f"record {seq} ({kind} {record_id}) does not match its hash: it was modified",
                )
            prev, count = stored, count + 1
        return count, None

    # What a store provides.
    def _writing(self) -> Any:
        """A context: one transaction, other writers kept out; yields the last hash."""
        raise NotImplementedError

    def _known(self, kind: str, ids: list[str]) -> set[str]:
        raise NotImplementedError

    def _insert(self, rows: list[tuple[str, str, int, str, str, str]]) -> None:
        raise NotImplementedError

    def rows(self) -> Iterator[tuple[int, str, str, int, str, str, str]]:
        raise NotImplementedError

    def bodies(self, kind: str, record_id: str | None = None) -> Iterator[str]:
        """The bodies of one kind of record (or of one record), in order, through the
        (kind, record_id) index: readers that want actions do not scan the findings."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


_COLUMNS = "seq, kind, record_id, ts, body, prev, hash"


class SqliteAudit(AuditTrail):
    """The trail in one SQLite file (the default)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open audit store {self.path}: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[str]:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            yield row[0] if row else GENESIS

    def _known(self, kind: str, ids: list[str]) -> set[str]:
        known: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT record_id FROM audit WHERE kind = ? AND record_id IN ({marks})"
            known.update(row[0] for row in self.db.execute(query, [kind, *chunk]))
        return known

    def _insert(self, rows: list[tuple[str, str, int, str, str, str]]) -> None:
        self.db.executemany(
            "INSERT INTO audit (kind, record_id, ts, body, prev, hash) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def rows(self) -> Iterator[tuple[int, str, str, int, str, str, str]]:
        yield from self.db.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")

    def bodies(self, kind: str, record_id: str | None = None) -> Iterator[str]:
        if record_id is None:
            query, args = "SELECT body FROM audit WHERE kind = ? ORDER BY seq", [kind]
        else:
            query = "SELECT body FROM audit WHERE kind = ? AND record_id = ?"
            args = [kind, record_id]
        yield from (row[0] for row in self.db.execute(query, args))

    def close(self) -> None:
        self.db.close()


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (kind, record_id)
);
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_no_change ON audit;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION audit_append_only();
"""
_PG_LOCK = 0x4C6F636B  # advisory lock key: one writer appends at a time


class PostgresAudit(AuditTrail):
    """The trail in a PostgreSQL table (`audit`), for a deployment that has one."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        try:
            self.db = psycopg.connect(url, autocommit=True)
            with self.db.transaction():
                self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
                self.db.execute(_PG_SCHEMA)
        except psycopg.Error as exc:
            where = _redacted(url)
            raise AuditError(f"cannot open audit store {where}: {_first_line(exc)}") from exc

    def append(self, kind: str, records: Iterable[Any], id_field: str) -> int:
        import psycopg

        try:
            return super().append(kind, records, id_field)
        except psycopg.OperationalError as exc:  # the transaction, and so the append, is gone
            where = _redacted(self.url)
            raise AuditStoreLost(f"lost the audit store {where}: {_first_line(exc)}") from exc

    @contextmanager
    def _writing(self) -> Iterator[str]:
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
            row = self.db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            yield row[0] if row else GENESIS

    def _known(self, kind: str, ids: list[str]) -> set[str]:
        query = "SELECT record_id FROM audit WHERE kind = %s AND record_id = ANY(%s)"
        return {row[0] for row in self.db.execute(query, (kind, ids))}

    def _insert(self, rows: list[tuple[str, str, int, str, str, str]]) -> None:
        with self.db.cursor() as cur:
            cur.executemany(
                "INSERT INTO audit (kind, record_id, ts, body, prev, hash) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )

    def rows(self) -> Iterator[tuple[int, str, str, int, str, str, str]]:
        with self.db.cursor() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")
            yield from cur

    def bodies(self, kind: str, record_id: str | None = None) -> Iterator[str]:
        with self.db.cursor() as cur:
            if record_id is None:
                cur.execute("SELECT body FROM audit WHERE kind = %s ORDER BY seq", (kind,))
            else:
                query = "SELECT body FROM audit WHERE kind = %s AND record_id = %s"
                cur.execute(query, (kind, record_id))
            yield from (row[0] for row in cur)

    def close(self) -> None:
        self.db.close()


def _first_line(exc: Exception) -> str:
    """A driver error's first line, or its class name if it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redacted(url: str) -> str:
    """A database URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':', 1)[0]}:***@{tail}"


def open_audit(target: str | Path) -> AuditTrail:
    """The trail at `target`: a postgresql:// URL, or an SQLite file path."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresAudit(text)
    return SqliteAudit(text)


def regulator_report(audit: AuditTrail, start_ms: int, end_ms: int) -> dict[str, Any]:
    """The actions issued in [start_ms, end_ms) of event time, for the authority: totals
    by article and by action, and each action with its subject and reasons."""
    rows = []
    for body in audit.bodies("action"):
        a = json.loads(body)
        if not start_ms <= a["ts"] < end_ms:
            continue
        params = a.get("params", {})
        rows.append(
            {
                "ts": a["ts"],
                "action_id": a["action_id"],
                "action": a["action"],
                "mode": a["mode"],
                "articles": "+".join(a["basis"]),
                "subject_type": a["subject_type"],
                "subject_id": a["subject_id"],
                "rule": params.get("rule", ""),
                "detector": params.get("detector", ""),
                "severity": params.get("severity", ""),
                "credit_level": params.get("credit_level", ""),
                "finding_ids": " ".join(a["finding_ids"]),
                "expires_at": "" if a.get("expires_at") is None else a["expires_at"],
            }
        )
    by_article: dict[str, dict[str, int]] = {}
    for row in rows:
        for article in row["articles"].split("+"):
            counts = by_article.setdefault(article, {})
            counts[row["action"]] = counts.get(row["action"], 0) + 1
    by_action: dict[str, int] = {}
    for row in rows:
        by_action[row["action"]] = by_action.get(row["action"], 0) + 1
    return {
        "from_ms": start_ms,
        "to_ms": end_ms,
        "actions": len(rows),
        "by_article": {k: dict(sorted(v.items())) for k, v in sorted(by_article.items())},
        "by_action": dict(sorted(by_action.items())),
        "rows": rows,
    }
