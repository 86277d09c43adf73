"""The enforcement stage: findings decided per subject by the policy in both runtimes
alike (escalating with a subject's incidents), the throttling hook blocking whom they
gave a measure that blocks, and `lockstep replay --policy` to backtest another policy on
the same log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline.core.settings import load_settings
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from pipeline.enforcement.measures import BLOCKING
from pipeline.serve.throttle import ThrottleTable
from pipeline.topology import build_topology
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, lockstep, read_jsonl, write_lines
from tests.stage_partitions import run_partitioned
from tests.test_engagement_inflation import _background, _farm, _organic

SETTINGS = load_settings(overrides={"kafka": {"partitions": 2}})


def _lines() -> list[str]:
    """One account bought followers three times, hours apart; another once."""
    b = StreamBuilder(seed=31)
    for i in range(30):
        b.poisson_follows(f"other{i}", T0, T0 + 12 * HOUR, rate_per_hour=1 + i)
    b.poisson_follows("repeat", T0, T0 + 12 * HOUR, rate_per_hour=3)
    for k in range(3):
        b.burst("repeat", T0 + (2 + 4 * k) * HOUR, 250, 4 * MINUTE, prefix=f"buy{k}-")
    b.burst("other3", T0 + 5 * HOUR, 250, 4 * MINUTE, prefix="once")
    return b.sorted_lines()


def test_both_runtimes_decide_the_same_escalating_actions() -> None:
    lines = [x.encode() for x in _lines()]
    engine = Engine(SETTINGS)
    result = engine.process(lines, "t")
    actions = result.actions + engine.finish().actions
    repeat = [a for a in actions if a.subject_id == "repeat"]
    measures = [a.action for a in repeat if a.action not in ("discount_engagement", "human_review")]
    # one measure per incident (the cooldown), a rung higher each time
    assert [m for m in measures if m != "report_regulator"] == [
        "warn",
        "restrict_functions",
        "suspend_updates",
    ]
    levels = [a.params["credit_level"] for a in repeat]
    assert levels == sorted(levels) and levels[0] == "B" and levels[-1] == "D"
    once = {a.action for a in actions if a.subject_id == "other3"}
    assert "warn" in once and "restrict_functions" not in once

    run = run_partitioned(SETTINGS, build_topology(SETTINGS), lines, Topics("t", 2), chunk=3000)
    assert set(run.actions) == {a.action_id for a in actions}
    assert all(run.actions[a.action_id].params == a.params for a in actions)


def test_the_hook_blocks_the_accounts_the_policy_gave_a_measure_that_blocks() -> None:
    engine = Engine(SETTINGS)
    actions = engine.process([x.encode() for x in _lines()], "t").actions
    actions += engine.finish().actions
    now = max(a.ts for a in actions) / 1000
    blocked = {
        a.subject_id
        for a in actions
        if a.action in BLOCKING and a.mode == "enforce" and (a.expires_at or 0) / 1000 > now
    }
    assert "repeat" in blocked
    hook = ThrottleTable()
    hook.apply(actions)
    accounts = {a.subject_id for a in actions}
    assert {s for s in accounts if hook.check(s, "comment", now) is not None} == blocked


def test_replay_backtests_another_policy(tmp_path: Path) -> None:
    events = write_lines(tmp_path / "events.jsonl", _lines())
    shadow = tmp_path / "shadow.yaml"
    text = (Path(__file__).parent.parent / "config" / "policy.yaml").read_text(encoding="utf-8")
    shadow.write_text(text.replace("mode: enforce", "mode: shadow"), encoding="utf-8")
    runs = {}
    for name, extra in (("default", []), ("shadow", ["--policy", str(shadow)])):
        proc = lockstep("replay", str(events), "--out", str(tmp_path / name), *extra)
        assert proc.returncode == 0, proc.stderr.decode()
        runs[name] = read_jsonl(tmp_path / name / "actions.jsonl")
    assert {a["mode"] for a in runs["default"]} == {"enforce"}
    assert {a["mode"] for a in runs["shadow"]} == {"shadow"}
    assert [a["action_id"] for a in runs["shadow"]] == [a["action_id"] for a in runs["default"]]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("action: restrict_functions", "action: restrict"), "utf-8")
    proc = lockstep("replay", str(events), "--out", str(tmp_path / "x"), "--policy", str(bad))
    assert proc.returncode == 2 and b"unknown action 'restrict'" in proc.stderr


def test_discount_engagement_says_what_to_take_off_the_counts() -> None:
    """Bought followers: the discount names the follows to remove (about the bought 250 a
    time, not the account's organic trickle) and the window; a click farm: clicks."""
    lines = [x.encode() for x in _lines()]
    engine = Engine(SETTINGS)
    actions = engine.process(lines, "t").actions + engine.finish().actions
    discounts = [
        a for a in actions if a.action == "discount_engagement" and a.subject_id == "repeat"
    ]
    assert discounts
    removed = 0
    for a in discounts:
        d = a.params["discount"]
        assert set(d["engagement"]) == {"follow"} and d["window_start"] < d["window_end"]
        removed += d["engagement"]["follow"]
    assert 0.6 * 3 * 250 <= removed <= 1.1 * 3 * 250, removed

    b = StreamBuilder(seed=32)
    _background(b, T0 + 6 * HOUR)
    _organic(b, "promo", "shop", T0, T0 + 6 * HOUR, per_window=6)
    farm = _farm(b, "promo", "shop", T0 + 4 * HOUR, T0 + 4 * HOUR + 10 * MINUTE, clicks=3000)
    engine = Engine(SETTINGS)
    actions = engine.process([x.encode() for x in b.sorted_lines()], "t").actions
    actions += engine.finish().actions
    clicks = [
        a.params["discount"]
        for a in actions
        if a.action == "discount_engagement" and a.params["detector"] == "engagement_inflation"
    ]
    assert any(d["from_accounts"] and set(d["from_accounts"]) <= set(farm) for d in clicks)
    taken: Counter[str] = Counter()
    for d in clicks:
        taken.update(d["engagement"])
    assert 0.6 * 3000 <= taken["click"] <= 1.1 * 3000, taken
    assert taken["click"] >= 0.98 * taken.total()  # the farm clicked; a few fans reposted
