"""`lockstep replay` on hostile input: exit 0, every bad line dead-lettered with a reason,
duplicates counted once, and the same findings however the input is disordered within the
allowed lateness."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.helpers import (
    HOUR,
    MINUTE,
    T0,
    StreamBuilder,
    lockstep,
    read_jsonl,
    shuffle_within,
    write_lines,
)

LATENESS = 30_000


def _valid(event_id: str, ts: int, **extra: object) -> str:
    event = {
        "event_id": event_id,
        "type": "click",
        "ts": ts,
        "actor": "u1",
        "target": "c1",
        "content_id": "p1",
        **extra,
    }
    return json.dumps(event)


BAD_LINES: list[tuple[bytes, str]] = [
    (b'{"event_id": "b1", "type": "follow", "ts": 1', "invalid_json"),  # truncated
    (b'{"event_id": "b2", type: follow}', "invalid_json"),  # bad JSON
    (b"null", "not_object"),
    (b"[1, 2, 3]", "not_object"),
    (b'"just a string"', "not_object"),
    (b'{"event_id": "b3", "type": "follow", "ts": 1767225600000, "actor": "u"}', "missing_field"),
    (
        b'{"type": "click", "ts": 1767225600000, "actor": "u", "target": "t", "content_id": "c"}',
        "missing_field",
    ),
    (
        b'{"event_id": "b4", "type": "comment", "ts": 1767225600000, "actor": "u", "target": "t",'
        b' "content_id": "c"}',
        "missing_field",
    ),
    (b'{"event_id": "b5", "ts": 1767225600000, "actor": "u"}', "missing_field"),
    (
        b'{"event_id": "b6", "type": "follow", "ts": "yesterday", "actor": "u", "target": "t"}',
        "invalid_value",
    ),
    (
        b'{"event_id": "b7", "type": "follow", "ts": 1767225600000, "actor": 42, "target": "t"}',
        "wrong_type",
    ),
    (
        b'{"event_id": "b8", "type": "follow", "ts": 1767225600000.5, "actor": "u", "target": "t"}',
        "wrong_type",
    ),
    (
        b'{"event_id": "b9", "type": "follow", "ts": 1767225600000, "actor": "u", "target": "t",'
        b' "consent": "yes"}',
        "wrong_type",
    ),
    (b'{"event_id": "b10", "type": "teleport", "ts": 1767225600000, "actor": "u"}', "unknown_type"),
    (
        b'{"event_id": "b11", "type": "follow", "ts": 1767225600, "actor": "u", "target": "t"}',
        "invalid_value",
    ),  # seconds, not milliseconds
    (
        b'{"event_id": "'
        + b"x" * 200
        + b'", "type": "register", "ts": 1767225600000, "actor": "u"}',
        "invalid_value",
    ),
    (b"\x00\xff\xfe\x89PNG\r\x1a garbage \xc3\x28", "invalid_json"),
    (
        json.dumps(
            {
                "event_id": "b12",
                "type": "comment",
                "ts": T0,
                "actor": "u",
                "target": "t",
                "content_id": "c",
                "text": "长" * 100_000,
            }
        ).encode(),
        "too_large",
    ),
]


def _hostile_file(tmp_path: Path) -> tuple[Path, int]:
    lines: list[bytes] = []
    for i in range(200):
        lines.append(_valid(f"ok{i}", T0 + i * 1000).encode())
    for bad, _ in BAD_LINES:
        lines.insert(len(lines) // 2, bad)
    lines.insert(150, _valid("ok10", T0 + 10_000).encode())  # redelivered
    lines.insert(160, _valid("ok11", T0 + 11_000).encode())  # redelivered
    lines.insert(170, _valid("ok11", T0 + 11_000).encode())  # redelivered again
    lines.append(_valid("late1", T0 + 100_000).encode())  # ~100 s behind: late
    lines.append(_valid("ooo1", T0 + 185_000).encode())  # 14 s out of order: fine
    return write_lines(tmp_path / "hostile.jsonl", lines), len(lines)


def test_hostile_input_is_dead_lettered_line_by_line(tmp_path: Path) -> None:
    events, total = _hostile_file(tmp_path)
    out = tmp_path / "out"
    proc = lockstep("replay", str(events), "--out", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    for name in ("findings.jsonl", "actions.jsonl", "dead_letter.jsonl", "summary.json"):
        assert (out / name).exists(), name
    dead = read_jsonl(out / "dead_letter.jsonl")
    reasons = [d["reason"] for d in dead]
    expected = sorted([r for _, r in BAD_LINES] + ["late"])
    assert sorted(reasons) == expected
    raw_lines = events.read_bytes().split(b"\n")
    for d in dead:
        assert d["detail"], d
        assert d["source"] == str(events)
        original = raw_lines[d["position"] - 1]
        assert d["raw_bytes"] == len(original)
        if d["raw_encoding"] == "utf-8" and not d["raw_truncated"]:
            assert d["raw"].encode() == original
    huge = next(d for d in dead if d["reason"] == "too_large")
    assert huge["raw_truncated"] and len(huge["raw"].encode()) <= 8192
    assert next(d for d in dead if d["raw_encoding"] == "base64")["reason"] == "invalid_json"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates"] == 3
    assert summary["events"] == 201  # 200 unique valid + the out-of-order one, minus none
    assert summary["late_events"] == 1
    assert summary["inputs"] == total
    assert summary["events"] + summary["dead_letters"] + summary["duplicates"] == total
    assert summary["dead_letters_by_reason"]["missing_field"] == 4
    assert summary["events_by_type"] == {"click": 201}
    assert summary["events_per_s"] > 0


def test_gzip_and_stdin_inputs_read_the_same(tmp_path: Path) -> None:
    events, _ = _hostile_file(tmp_path)
    packed = tmp_path / "hostile.jsonl.gz"
    packed.write_bytes(gzip.compress(events.read_bytes()))
    for args, stdin in (([str(packed)], None), (["-"], events.read_bytes())):
        out = tmp_path / f"out-{len(args[0])}"
        proc = lockstep("replay", *args, "--out", str(out), input=stdin)
        assert proc.returncode == 0, proc.stderr.decode()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["events"] == 201 and summary["duplicates"] == 3


def test_unreadable_input_or_bad_config_fail_with_one_line(tmp_path: Path) -> None:
    proc = lockstep("replay", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"))
    assert proc.returncode != 0
    assert len(proc.stderr.decode().strip().splitlines()) == 1
    assert "missing.jsonl" in proc.stderr.decode()

    events, _ = _hostile_file(tmp_path)
    bad = write_lines(tmp_path / "bad.yaml", ["event_time:", "  allowed_lateness_ms: soon"])
    proc = lockstep("replay", str(events), "--out", str(tmp_path / "o"), "--config", str(bad))
    assert proc.returncode != 0
    message = proc.stderr.decode().strip()
    assert len(message.splitlines()) == 1 and "allowed_lateness_ms" in message

    typo = write_lines(tmp_path / "typo.yaml", ["dedup:", "  horizon: 5"])
    proc = lockstep("replay", str(events), "--out", str(tmp_path / "o"), "--config", str(typo))
    assert proc.returncode != 0 and "horizon" in proc.stderr.decode()

    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(events.read_bytes() * 50)[:-200])
    proc = lockstep("replay", str(truncated), "--out", str(tmp_path / "o2"))
    assert proc.returncode != 0
    assert len(proc.stderr.decode().strip().splitlines()) == 1


def _jump_stream() -> list[str]:
    """Several accounts with organic follows and two bursts, for order-independence."""
    b = StreamBuilder(seed=11)
    for i in range(12):
        b.poisson_follows(f"acct{i}", T0, T0 + 6 * HOUR, rate_per_hour=2 + 10 * i)
    b.burst("acct1", T0 + 3 * HOUR + 7 * MINUTE, 300, 4 * MINUTE)
    b.burst("acct5", T0 + 4 * HOUR + 2 * MINUTE, 400, 6 * MINUTE, prefix="ring")
    return b.sorted_lines()


def test_findings_do_not_depend_on_disorder_within_lateness(tmp_path: Path) -> None:
    lines = _jump_stream()
    ordered = write_lines(tmp_path / "ordered.jsonl", lines)
    shuffled = write_lines(tmp_path / "shuffled.jsonl", shuffle_within(lines, LATENESS - 1))
    assert shuffled.read_bytes() != ordered.read_bytes()
    results = []
    for path in (ordered, shuffled):
        out = tmp_path / f"out-{path.stem}"
        proc = lockstep("replay", str(path), "--out", str(out))
        assert proc.returncode == 0, proc.stderr.decode()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["late_events"] == 0
        findings = read_jsonl(out / "findings.jsonl")
        actions = read_jsonl(out / "actions.jsonl")
        results.append(
            ({f["finding_id"]: f for f in findings}, sorted(a["action_id"] for a in actions))
        )
    (first, first_actions), (second, second_actions) = results
    assert {f["subject_id"] for f in first.values()} == {"acct1", "acct5"}
    assert first.keys() == second.keys()
    assert first_actions == second_actions and first_actions
    for fid, finding in first.items():
        other = second[fid]
        assert finding["evidence"] == other["evidence"]
        assert finding["score"] == other["score"]


def _nested(depth: int, event_id: str) -> bytes:
    """A valid login whose unknown field `zz` holds arrays nested `depth` levels deep."""
    login = f'"event_id": "{event_id}", "type": "login", "ts": {T0}, "actor": "u"'
    return b'{"zz": ' + b"[" * depth + b"]" * depth + b", " + login.encode() + b"}"


def test_a_line_nested_too_deep_is_dead_lettered_and_its_batch_goes_on() -> None:
    """Past MAX_DEPTH levels the decoder could exhaust the stack: refused, with a reason,
    in whichever path of the gate the batch takes, however deep the line nests."""
    from pipeline.core.gate import Gate
    from pipeline.core.settings import load_settings

    gate = Gate(load_settings())
    shallow = [_valid(f"s{i}", T0 + i).encode() for i in range(3)] + [_nested(500, "ok500")]
    clean = gate.admit(shallow, "batch")  # the fast path: nothing to refuse
    assert clean.events == 4 and not clean.dead_letters
    unclosed = b'{"zz": ' + b"[" * 1_000  # the decoder recurses before it sees the end
    for depth, line in ((600, None), (1_000, None), (30_000, None), (1, unclosed)):
        batch = [_valid(f"a{depth}", T0).encode(), line or _nested(depth, f"d{depth}")]
        batch += [_valid(f"b{depth}", T0 + 1).encode()]
        admitted = gate.admit(batch, "batch", first_position=7)
        assert admitted.events == 2
        (dead,) = admitted.dead_letters
        assert (dead.reason, dead.position) == ("too_deep", 8)
        assert "512 levels" in dead.detail and dead.raw_bytes == len(batch[1])
    text = "[" * 5_000  # brackets in a string are not nesting
    comment = _valid("c1", T0, type="comment", text=text).encode()
    assert gate.admit([comment], "batch").events == 1


def test_replay_dead_letters_a_deeply_nested_line(tmp_path: Path) -> None:
    lines = [_valid("v1", T0).encode(), _nested(1_000, "deep"), _valid("v2", T0 + 1).encode()]
    events = write_lines(tmp_path / "deep.jsonl", lines)
    out = tmp_path / "out"
    proc = lockstep("replay", str(events), "--out", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    (dead,) = read_jsonl(out / "dead_letter.jsonl")
    assert (dead["reason"], dead["position"]) == ("too_deep", 2)
    assert json.loads((out / "summary.json").read_text())["events"] == 2
