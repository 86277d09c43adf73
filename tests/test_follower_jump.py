"""`follower_jump` end to end through `lockstep replay`: a bought burst on a small account is
flagged within two windows, also when the stream starts with it; a large account's organic
growth with a daily rhythm is not, nor a crowd of established accounts first seen."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import (
    HOUR,
    MINUTE,
    T0,
    StreamBuilder,
    daily_rhythm,
    lockstep,
    read_jsonl,
    write_lines,
)

WINDOW = 5 * MINUTE  # config/lockstep.yaml: detectors.follower_jump.window_ms


def _replay(tmp_path: Path, lines: list[str]) -> tuple[list[dict], list[dict]]:
    events = write_lines(tmp_path / "events.jsonl", lines)
    out = tmp_path / "out"
    proc = lockstep("replay", str(events), "--out", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    return read_jsonl(out / "findings.jsonl"), read_jsonl(out / "actions.jsonl")


def test_burst_on_a_small_account_is_flagged_within_two_windows(tmp_path: Path) -> None:
    b = StreamBuilder(seed=5)
    b.poisson_follows("small_creator", T0, T0 + 8 * HOUR, rate_per_hour=3)
    for i in range(30):  # other accounts, so the stream is not only the victim
        b.poisson_follows(f"other{i}", T0, T0 + 8 * HOUR, rate_per_hour=1 + i)
    burst_start = T0 + 5 * HOUR + 2 * MINUTE + 17_000
    bots = b.burst("small_creator", burst_start, 300, 3 * MINUTE)
    findings, actions = _replay(tmp_path, b.sorted_lines())

    # edge_burst (per-tick sketches) names the same account; here follower_jump is judged
    hits = [
        f
        for f in findings
        if f["subject_id"] == "small_creator" and f["detector"] == "follower_jump"
    ]
    assert hits, findings
    first = min(hits, key=lambda f: f["window_end"])
    assert first["window_end"] - burst_start <= 2 * WINDOW
    assert first["detector"] == "follower_jump" and first["article"] == "12"
    assert first["subject_type"] == "account"
    assert first["severity"] in ("high", "critical") and 0.5 <= first["score"] <= 1
    ev = first["evidence"]
    assert ev["observed"] >= 100 and ev["expected"] < 2 and ev["z"] >= ev["z_threshold"]
    assert "small_creator" not in ev["explanation"] and "net new followers" in ev["explanation"]
    assert set(first["members"]) <= set(bots) and len(first["members"]) >= 100
    assert first["window_start"] <= burst_start < first["window_end"] + WINDOW
    # nobody else is accused
    assert {f["subject_id"] for f in findings} == {"small_creator"}
    # the policy's fabricated-engagement rule: the bought follows discounted, the account
    # warned, a person asked to look; stable ids
    on_first = {a["action"] for a in actions if a["finding_ids"] == [first["finding_id"]]}
    assert "human_review" in on_first
    kinds = [a["action"] for a in actions]  # one incident, whichever detectors saw it:
    assert kinds.count("warn") == 1 and "suspend_updates" not in kinds  # warned once
    # the bought follows are taken off the counts once, however many detectors saw them
    discounts = [a["params"]["discount"] for a in actions if a["action"] == "discount_engagement"]
    taken = sum(d["engagement"]["follow"] for d in discounts)
    assert 0.8 * len(bots) <= taken <= 1.1 * len(bots), taken
    assert all(a["subject_id"] == "small_creator" and a["basis"] == ["12", "19"] for a in actions)
    assert all(a["params"]["rule"] == "fabricated-engagement" for a in actions)
    # the same input gives the same ids
    (tmp_path / "again").mkdir()
    again, again_actions = _replay(tmp_path / "again", b.sorted_lines())
    assert sorted(f["finding_id"] for f in again) == sorted(f["finding_id"] for f in findings)
    assert sorted(a["action_id"] for a in again_actions) == sorted(a["action_id"] for a in actions)


def test_large_account_growing_with_a_daily_rhythm_is_not_flagged(tmp_path: Path) -> None:
    b = StreamBuilder(seed=9)
    # about 1,200 follows an hour on average, swinging ±60% over the day, growing 15%/day
    b.poisson_follows("star", T0, T0 + 3 * 24 * HOUR, daily_rhythm(1200, growth_per_day=0.15))
    b.poisson_follows("mid", T0, T0 + 3 * 24 * HOUR, daily_rhythm(60, growth_per_day=0.3))
    findings, _ = _replay(tmp_path, b.sorted_lines())
    assert findings == []


def test_quiet_accounts_do_not_alert_on_noise(tmp_path: Path) -> None:
    b = StreamBuilder(seed=13)
    for i in range(200):
        b.poisson_follows(f"tiny{i}", T0, T0 + 12 * HOUR, rate_per_hour=0.5 + (i % 7))
    findings, _ = _replay(tmp_path, b.sorted_lines())
    assert findings == []


def test_summary_counts_the_finding_and_the_action(tmp_path: Path) -> None:
    b = StreamBuilder(seed=2)
    b.poisson_follows("victim", T0, T0 + 4 * HOUR, rate_per_hour=4)
    b.burst("victim", T0 + 3 * HOUR, 250, 2 * MINUTE)
    _replay(tmp_path, b.sorted_lines())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["findings"] >= 1 and summary["actions"] >= 1
    by_detector = summary["findings_by_detector"]  # edge_burst flags the burst too
    assert set(by_detector) == {"follower_jump (12)", "edge_burst (12)"}
    assert sum(by_detector.values()) == summary["findings"]


def test_a_burst_the_stream_starts_with_is_judged_on_its_followers(tmp_path: Path) -> None:
    """No history of the account: fresh accounts, or a few shared devices, are bought
    however many; a crowd of established accounts on their own phones (a popular account
    the stream starts on) is not."""
    b = StreamBuilder(seed=7)
    for i in range(30):
        b.poisson_follows(f"other{i}", T0, T0 + 2 * HOUR, rate_per_hour=1 + i)
    start = T0 + 2 * MINUTE
    for i in range(200):  # created hours ago, on four phones
        b.add("follow", start + i * 900, f"bot{i}", target="bought", origin="user",
              actor_created_at=start - HOUR, device_id=f"phone{i % 4}",
              ip=f"198.51.100.{i % 50}")  # fmt: skip
    for i in range(200):  # established people, each on their own phone and line
        b.add("follow", start + i * 900, f"fan{i}", target="popular", origin="user",
              actor_created_at=start - 400 * 24 * HOUR, device_id=f"own{i}",
              ip=f"10.{i}.{i % 7}.9")  # fmt: skip
    findings, _ = _replay(tmp_path, b.sorted_lines())
    jumps = [f for f in findings if f["detector"] == "follower_jump"]
    assert {f["subject_id"] for f in jumps} == {"bought"}
    first = min(jumps, key=lambda f: f["window_end"])
    assert first["window_end"] - start <= 2 * WINDOW
    assert "judged on who they are" in first["evidence"]["explanation"]
    assert set(first["members"]) <= {f"bot{i}" for i in range(200)} and first["members"]
    assert "popular" not in {f["subject_id"] for f in findings}
