"""The audit trail (Article 19: keep records): replay records every finding and action in
a hash-chained, append-only store; `lockstep audit verify` finds a modified, removed or
inserted record; `lockstep report` exports actions by article and type for a period."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from pipeline.contract.findings import Action
from pipeline.enforcement.audit import SqliteAudit, UnstorableRecord, open_audit, regulator_report
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, lockstep, read_jsonl, write_lines
from tests.postgres import Server


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("audit")
    b = StreamBuilder(seed=41)
    for i in range(20):
        b.poisson_follows(f"other{i}", T0, T0 + 6 * HOUR, rate_per_hour=1 + i)
    b.burst("bought", T0 + 2 * HOUR, 300, 4 * MINUTE)
    events = write_lines(tmp / "events.jsonl", b.sorted_lines())
    proc = lockstep("replay", str(events), "--out", str(tmp / "out"))
    assert proc.returncode == 0, proc.stderr.decode()
    return tmp / "out"


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "audit.sqlite"
    dst.write_bytes(src.read_bytes())
    return dst


def test_replay_records_every_finding_and_action_and_verify_accepts_it(replayed: Path) -> None:
    trail = SqliteAudit(replayed / "audit.sqlite")
    kinds = [(kind, rid) for _, kind, rid, *_ in trail.rows()]
    findings = read_jsonl(replayed / "findings.jsonl")
    actions = read_jsonl(replayed / "actions.jsonl")
    assert findings and actions
    assert {r for k, r in kinds if k == "finding"} == {f["finding_id"] for f in findings}
    assert {r for k, r in kinds if k == "action"} == {a["action_id"] for a in actions}
    assert trail.append("action", [], "action_id") == 0
    trail.close()
    proc = lockstep("audit", "verify", str(replayed / "audit.sqlite"))
    assert proc.returncode == 0 and b"chain intact" in proc.stdout


def test_the_store_refuses_changes_and_verify_finds_them_anyway(
    replayed: Path, tmp_path: Path
) -> None:
    trail = _copy(replayed / "audit.sqlite", tmp_path)
    db = sqlite3.connect(trail)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET body = '{}' WHERE seq = 2")
    # a determined editor drops the guard and softens one action
    db.executescript("DROP TRIGGER audit_no_update;")
    body = db.execute("SELECT body FROM audit WHERE kind = 'action' LIMIT 1").fetchone()[0]
    soft = json.dumps({**json.loads(body), "action": "warn"}, sort_keys=True)
    db.execute("UPDATE audit SET body = ? WHERE body = ?", (soft, body))
    db.commit()
    db.close()
    proc = lockstep("audit", "verify", str(trail))
    assert proc.returncode == 1
    line = proc.stderr.decode().strip()
    assert "does not match its hash: it was modified" in line and "\n" not in line


def test_verify_finds_a_removed_record(replayed: Path, tmp_path: Path) -> None:
    trail = _copy(replayed / "audit.sqlite", tmp_path)
    db = sqlite3.connect(trail)
    db.executescript("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 3;")
    db.close()
    proc = lockstep("audit", "verify", str(trail))
    assert proc.returncode == 1 and b"removed or inserted" in proc.stderr


def test_report_exports_the_period_by_article_and_action(replayed: Path, tmp_path: Path) -> None:
    actions = read_jsonl(replayed / "actions.jsonl")
    proc = lockstep(
        "report", "--audit", str(replayed / "audit.sqlite"),
        "--from", "2026-01-01", "--to", "2026-01-02", "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["actions"] == len(actions)
    assert sum(data["by_action"].values()) == len(actions)
    assert set(data["by_article"]) == {"12", "19"}
    with open(tmp_path / "report.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["action_id"] for r in rows} == {a["action_id"] for a in actions}
    assert all(r["subject_id"] == "bought" and r["rule"] for r in rows)
    empty = lockstep(
        "report", "--audit", str(replayed / "audit.sqlite"),
        "--from", "2025-01-01", "--to", "2025-01-02", "--out", str(tmp_path / "none"),
    )  # fmt: skip
    assert empty.returncode == 0 and b"0 actions" in empty.stdout
    bad = lockstep("report", "--audit", str(replayed / "audit.sqlite"), "--from", "soon",
                   "--to", "2026-01-02", "--out", str(tmp_path))  # fmt: skip
    assert bad.returncode == 2 and b"not a date" in bad.stderr


def test_postgres_holds_the_same_trail_appends_once_and_catches_tampering(
    replayed: Path, postgres: Server, tmp_path: Path
) -> None:
    """A deployment's trail in PostgreSQL (a real server): replay writes it, replaying
    the same log again adds nothing, `verify` and `report` read it, an edit is caught."""
    import psycopg

    events = replayed.parent / "events.jsonl"
    with psycopg.connect(postgres.url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS audit")
    for run in ("first", "again"):
        proc = lockstep(
            "replay", str(events), "--out", str(tmp_path / run), "--audit", postgres.url
        )
        assert proc.returncode == 0, proc.stderr.decode()
    local = [(k, r, b) for _, k, r, _, b, _, _ in SqliteAudit(replayed / "audit.sqlite").rows()]
    with psycopg.connect(postgres.url, autocommit=True) as db:
        stored = [
            tuple(row) for row in db.execute("SELECT kind, record_id, body FROM audit ORDER BY seq")
        ]
    assert stored == local  # the same records, once each, in the same order
    proc = lockstep("audit", "verify", postgres.url)
    assert proc.returncode == 0 and f"{len(local)} records".encode() in proc.stdout
    pg, lite = open_audit(postgres.url), SqliteAudit(replayed / "audit.sqlite")
    actions = [b for k, _, b in local if k == "action"]
    assert list(pg.bodies("action")) == list(lite.bodies("action")) == actions
    first = json.loads(actions[0])["action_id"]
    assert list(pg.bodies("action", first)) == [actions[0]] == list(lite.bodies("action", first))
    assert list(pg.bodies("finding", first)) == []  # by kind and id
    pg.close()
    lite.close()
    report = lockstep("report", "--audit", postgres.url, "--from", "2026-01-01",
                      "--to", "2026-01-02", "--out", str(tmp_path / "report"))  # fmt: skip
    assert report.returncode == 0 and b"actions from" in report.stdout

    with psycopg.connect(postgres.url, autocommit=True) as db:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            db.execute("DELETE FROM audit WHERE seq = 1")
        db.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_change")
        db.execute("UPDATE audit SET body = body || ' ' WHERE seq = 2")  # one byte more
        db.execute("ALTER TABLE audit ENABLE TRIGGER audit_no_change")
    proc = lockstep("audit", "verify", postgres.url)
    assert proc.returncode == 1 and b"record 2" in proc.stderr and b"modified" in proc.stderr
    down = lockstep("audit", "verify", "postgresql://nobody@127.0.0.1:1/none")
    assert down.returncode == 2 and len(down.stderr.decode().strip().splitlines()) == 1


def _action(action_id: str, expires_at: int | None = None) -> Action:
    return Action(
        action_id=action_id, action="throttle", subject_type="account", subject_id="u1",
        basis=["18", "19"], finding_ids=["f1"], mode="enforce", ts=T0, expires_at=expires_at,
        params={"descriptors": [{"key": "account_id", "value": "u1"}], "requests_per_unit": 1,
                "unit": "hour"},
    )  # fmt: skip


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_nul_in_a_record_is_refused_alike_by_both_stores_and_nothing_is_kept(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL's text cannot hold a NUL; SQLite's could, but refuses it the same, so a
    record is kept or refused whichever store a deployment uses."""
    target = request.getfixturevalue("postgres").url if store == "postgresql" else None
    trail = open_audit(target or tmp_path / "audit.sqlite")
    before = list(trail.rows())  # the server's table may hold another test's records
    for kind, id_field in (("action", "action_id"), ("act\x00ion", "action_id")):
        with pytest.raises(UnstorableRecord, match=r"holds a NUL character") as refused:
            trail.append(kind, [_action("fine"), _action("bad\x00id")], id_field)
        assert isinstance(refused.value, ValueError) and "\x00" not in str(refused.value)
    assert list(trail.rows()) == before  # the whole batch refused, the good one too
    trail.close()


def test_the_report_keeps_an_expiry_at_the_epoch(tmp_path: Path) -> None:
    """0 is a time (the epoch): only an action without an end has an empty `expires_at`."""
    trail = SqliteAudit(tmp_path / "audit.sqlite")
    trail.append("action", [_action("at-epoch", expires_at=0), _action("for-good")], "action_id")
    rows = regulator_report(trail, T0, T0 + 1)["rows"]
    trail.close()
    assert {r["action_id"]: r["expires_at"] for r in rows} == {"at-epoch": 0, "for-good": ""}


def test_a_postgres_trail_whose_connection_is_cut_says_so_on_one_line(
    postgres: Server, tmp_path: Path
) -> None:
    """The database restarting under a writer (the fault campaign's `postgres` kind) used
    to end `lockstep sink` with a page of psycopg traceback; now a one-line error, and
    nothing of the append is kept, so the restarted writer appends it again."""
    import psycopg

    from pipeline.cli.errors import reporting
    from pipeline.enforcement.audit import AuditStoreLost

    with psycopg.connect(postgres.url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS audit")
    trail = open_audit(postgres.url)
    trail.append("action", [_action("kept")], "action_id")
    with psycopg.connect(postgres.url, autocommit=True) as db:
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE pid <> pg_backend_pid() AND datname = current_database()")  # fmt: skip
    with pytest.raises(AuditStoreLost, match="lost the audit store") as lost:
        trail.append("action", [_action("cut")], "action_id")
    assert len(str(lost.value).splitlines()) == 1
    import typer

    with pytest.raises(typer.Exit) as exited, reporting():
        raise lost.value
    assert exited.value.exit_code == 1
    again = open_audit(postgres.url)
    assert [json.loads(b)["action_id"] for b in again.bodies("action")] == ["kept"]
    assert again.append("action", [_action("kept"), _action("cut")], "action_id") == 1
    again.close()
