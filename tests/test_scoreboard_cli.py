"""The scoreboard as a user runs it: `lockstep simulate`, `lockstep replay`, then
`lockstep evaluate` with a JSON report and a plot; bad input gets a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import lockstep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_simulate_replay_evaluate_from_the_command_line(tmp_path: Path) -> None:
    events, labels = tmp_path / "world.jsonl", tmp_path / "labels.json"
    sim = lockstep(
        "simulate",
        "--minutes", "180",
        "--seed", "5",
        "--scale", "0.05",
        "--scenario", "follower_burst",
        "--scenario", "viral_spike",
        "--out", str(events),
        "--labels", str(labels),
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr.decode()
    kinds = json.loads(labels.read_text())
    assert [c["kind"] for c in kinds["campaigns"]] == ["follower_burst"]
    assert [n["kind"] for n in kinds["hard_negatives"]] == ["viral_spike"]

    rep = lockstep("replay", str(events), "--out", str(tmp_path / "out"))
    assert rep.returncode == 0, rep.stderr.decode()

    report, png = tmp_path / "report.json", tmp_path / "quality.png"
    ev = lockstep(
        "evaluate",
        "--labels", str(labels),
        "--findings", str(tmp_path / "out" / "findings.jsonl"),
        "--events", str(events),
        "--json", str(report),
        "--plot", str(png),
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr.decode()
    assert b"follower_burst" in ev.stdout
    scored = json.loads(report.read_text())
    burst = next(c for c in scored["campaigns"] if c["kind"] == "follower_burst")
    assert burst["detected"], "follower_jump finds a burst of fresh accounts"
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_bad_inputs_get_one_line_errors(tmp_path: Path) -> None:
    bad = lockstep(
        "simulate", "--scenario", "nope", "--out", str(tmp_path / "e"), "--labels", "l.json"
    )
    assert bad.returncode == 2
    message = bad.stderr.decode().strip()
    assert message.startswith("lockstep:") and "nope" in message and "\n" not in message

    not_labels = tmp_path / "labels.json"
    not_labels.write_text('{"hello": 1}')
    findings = tmp_path / "findings.jsonl"
    findings.write_text("")
    ev = lockstep("evaluate", "--labels", str(not_labels), "--findings", str(findings))
    assert ev.returncode == 1
    assert "not a labels file" in ev.stderr.decode() and ev.stderr.decode().count("\n") == 1

    missing = lockstep("evaluate", "--labels", str(tmp_path / "none.json"), "--findings", "x")
    assert missing.returncode == 1 and "none.json" in missing.stderr.decode()
