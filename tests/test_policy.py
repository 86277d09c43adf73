"""Enforcement policy as data: the Article 19 ladder by Article 13 credit level,
escalating with a subject's history and easing as its credit recovers; idempotent action
ids, cooldowns, expiries, throttle descriptors; the measures a ladder may name, their
parameters and expiries as the measures table defines them; `lockstep policy check` with
one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import msgspec
import pytest

from models.credit import DAY, Credit, level_of
from pipeline.contract.findings import Finding, TimeUnit, make_finding
from pipeline.enforcement.measures import MEASURES, PARAMETERS, POLICY_MEASURES, UNIT_S, Step
from pipeline.enforcement.policy import DEFAULT_POLICY, Enforcer, PolicyError, load_policy

HOUR = 3_600_000
POLICY = load_policy()


def _finding(ts: int, detector: str = "follower_jump", severity: str = "high", **kw) -> Finding:
    return make_finding(
        detector=detector,
        article=kw.pop("article", "12"),
        subject_type=kw.pop("subject_type", "account"),
        subject_id=kw.pop("subject_id", "acct1"),
        window_start=ts - 300_000,
        window_end=ts,
        score=0.9,
        severity=severity,
        members=kw.pop("members", []),
        evidence={},
    )


def _measures(actions) -> list[str]:
    return [a.action for a in actions if a.action not in ("discount_engagement", "human_review")]


def test_repeated_findings_climb_the_ladder_and_a_quiet_subject_climbs_back() -> None:
    enforcer = Enforcer(POLICY)
    record = enforcer.new_record()
    steps = [_measures(enforcer.decide(_finding(k * 3 * HOUR), record)) for k in range(5)]
    assert steps[0] == steps[1] == ["warn"]  # level B after one incident, and two
    assert steps[2] == steps[3] == ["restrict_functions"]  # C
    assert "suspend_updates" in steps[4] and "report_regulator" in steps[4]  # D
    later = _finding(4 * 3 * HOUR + 30 * DAY)  # a month without findings
    again = enforcer.decide(later, record)
    assert _measures(again) == ["warn"] and again[0].params["credit_level"] == "B"


def test_decisions_are_idempotent_cooled_down_and_time_bound() -> None:
    enforcer = Enforcer(POLICY)
    first = _finding(10 * HOUR)
    a = enforcer.decide(first, enforcer.new_record())
    b = Enforcer(load_policy()).decide(first, Enforcer(POLICY).new_record())  # a restart
    assert [x.action_id for x in a] == [x.action_id for x in b]
    assert len({x.action_id for x in a}) == len(a)

    record = enforcer.new_record()
    for k in range(3):  # three incidents: credit down to level C
        enforcer.decide(_finding(k * 3 * HOUR), record)
    soon = enforcer.decide(_finding(6 * HOUR + 10 * 60_000), record)  # 10 min later
    assert "restrict_functions" not in _measures(soon)  # cooled down
    assert soon[0].params["credit_score"] == round(record.credit.score, 2)  # same incident
    assert [x.action for x in soon].count("discount_engagement") == 1  # exempt
    r = next(x for x in enforcer.decide(_finding(12 * HOUR), record) if x.expires_at)
    assert r.expires_at == r.ts + 30 * 24 * HOUR or r.expires_at == r.ts + 7 * 24 * HOUR
    assert r.basis == ["12", "19"] and r.mode == "enforce"


def test_group_findings_throttle_their_members_with_descriptors() -> None:
    enforcer = Enforcer(POLICY)
    ring = _finding(
        HOUR,
        detector="lockstep_ring",
        article="18(4)",
        subject_type="group",
        subject_id="g1",
        members=["m1", "m2"],
    )
    throttles = [a for a in enforcer.decide(ring, enforcer.new_record()) if a.action == "throttle"]
    assert [a.subject_id for a in throttles] == ["m1", "m2"]
    assert all(a.subject_type == "account" and a.basis == ["18", "19"] for a in throttles)
    p = throttles[0].params
    assert p["descriptors"][0] == {"key": "account_id", "value": "m1"}
    assert {"key": "action", "value": "follow"} in p["descriptors"]
    assert p["requests_per_unit"] == 20 and p["unit"] == "hour"
    assert throttles[0].expires_at == HOUR + 86_400_000


def test_one_incident_seen_by_several_detectors_costs_its_gravest_finding_once() -> None:
    enforcer = Enforcer(POLICY)
    record = enforcer.new_record()
    for detector, severity in [("edge_burst", "high"), ("follower_jump", "critical")] * 3:
        enforcer.decide(_finding(HOUR, detector, severity), record)
    assert record.credit.score == 100 - POLICY.credit.cost["critical"]


def test_rules_match_by_detector_and_severity_and_keep_their_mode() -> None:
    enforcer = Enforcer(POLICY)
    assert enforcer.decide(_finding(HOUR, severity="low"), enforcer.new_record()) == []
    forced = enforcer.decide(_finding(HOUR, detector="forced_follow"), enforcer.new_record())
    assert forced and {a.mode for a in forced} == {"review"}


def test_credit_recovers_and_never_exceeds_the_top() -> None:
    c = Credit(top=100.0)
    assert c.score_at(0, 5.0) == 100.0
    c.charge(0, 60.0)
    assert c.score_at(4 * DAY, 5.0) == 60.0 and c.score_at(100 * DAY, 5.0) == 100.0
    assert c.charge(DAY, 500.0, 5.0) == 0.0
    assert level_of(0.0, POLICY.credit.levels) == "D"
    assert level_of(95.0, POLICY.credit.levels) == "A"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("action: close_account}", "action: close_acount}"), "unknown action 'close_acount'"),
        (("    D: 0\n", ""), "ladder names unknown credit level D"),
        (("min_severity: high", "min_severity: severe"), "min_severity must be one of"),
        (
            (
                "limits: [follow, repost, comment]}, human_review]\n      B",
                "limits: []}, human_review]\n      B",
            ),
            "throttle needs requests_per_unit",
        ),
        (("version: 1", "version: 2"), "version 2 is not supported"),
        (("[forced_follow]", "[forced_folow]"), "unknown detector 'forced_folow'"),
        (("cooldown_s: 3600", "cooldown_s: soon"), "Expected `int`"),
        (("unit: hour", "unit: fortnight"), "Invalid enum value 'fortnight'"),
        (("A: [discount_engagement, warn]", "A: [revert]"), "unknown action 'revert'"),
        (
            ("{action: close_account}", "{action: close_account, for_s: 60}"),
            "close_account does not expire: it takes no for_s",
        ),
        (
            ("{action: restrict_functions, for_s: 604800}", "{action: stop_ads, limits: [follow]}"),
            "stop_ads takes no limits",
        ),
        (("- human_review\n", "- revert\n"), "cooldown_exempt: unknown action revert"),
    ],
)
def test_policy_check_says_what_is_wrong_in_one_line(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    assert edit[0] in text
    bad = tmp_path / "policy.yaml"
    bad.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")):
        load_policy(bad)
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "policy", "check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_every_detector_a_policy_may_name_is_a_stage_that_finds() -> None:
    from pipeline.core.settings import load_settings
    from pipeline.detectors import REGISTRY, build_stages

    stages = {s.detector for s in build_stages(load_settings())}
    names = set(REGISTRY.finding_detectors)
    assert names <= stages
    assert stages - names == {"follower_activity", "lockstep_buckets", "hoarded_watch"}


def test_the_default_policy_checks_out() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "policy", "check", str(DEFAULT_POLICY)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and "5 rules" in run.stdout


def test_a_burst_seen_by_two_detectors_is_discounted_once() -> None:
    """1-minute windows (edge_burst) then the 5-minute window around them (follower_jump):
    the second discount takes off only what the first did not."""
    enforcer = Enforcer(POLICY)
    record = enforcer.new_record()
    taken = []
    for minute in range(4):
        end = 10 * HOUR + (minute + 1) * 60_000
        f = make_finding(
            detector="edge_burst", article="12", subject_type="account", subject_id="acct1",
            window_start=end - 60_000, window_end=end, score=0.9, severity="high", members=[],
            evidence={"fabricated": {"follow": 60}},
        )  # fmt: skip
        taken += [a for a in enforcer.decide(f, record) if a.action == "discount_engagement"]
    whole = make_finding(
        detector="follower_jump", article="12", subject_type="account", subject_id="acct1",
        window_start=10 * HOUR, window_end=10 * HOUR + 300_000, score=0.95, severity="critical",
        members=[], evidence={"fabricated": {"follow": 250, "click": 30}},
    )  # fmt: skip
    taken += [a for a in enforcer.decide(whole, record) if a.action == "discount_engagement"]
    assert [a.params["discount"]["engagement"] for a in taken] == [{"follow": 60}] * 4 + [
        {"follow": 10, "click": 30}
    ]
    again = enforcer.decide(whole, record)  # the same estimate again: nothing left to take off
    assert "discount_engagement" not in [a.action for a in again]


def _one_step_policy(tmp_path: Path, step: str) -> Path:
    """The default policy whose every rung is `step` alone."""
    policy = msgspec.to_builtins(POLICY)
    for rule in policy["rules"]:
        rule["ladder"] = {level: [step] for level in rule["ladder"]}
    path = tmp_path / "one-step.yaml"
    path.write_bytes(msgspec.json.encode(policy))  # JSON is YAML
    return path


def test_a_ladder_names_the_measures_of_the_table_with_their_parameters(tmp_path: Path) -> None:
    """Every measure a policy issues loads (with its parameters, and for_s when it is
    time-bound) and the refusal names them all, in the table's order; revert does not."""
    assert POLICY_MEASURES == (
        "warn", "throttle", "restrict_functions", "suspend_updates", "stop_ads", "close_account",
        "blacklist", "ban_reregistration", "discount_engagement", "report_regulator",
        "human_review",
    )  # fmt: skip
    given = {"requests_per_unit": 5, "unit": "minute", "limits": ["follow"]}
    for name, measure in MEASURES.items():
        step = {"action": name, **{p: given[p] for p in measure.params}}
        if measure.time_bound:
            step["for_s"] = 60
        if measure.by_policy:
            loaded = load_policy(_one_step_policy(tmp_path, step)).rules[0].ladder["A"][0]
            assert loaded == Step(**step)
        else:
            with pytest.raises(PolicyError) as refused:
                load_policy(_one_step_policy(tmp_path, step))
            assert str(refused.value).endswith(
                f"ladder.A[0]: unknown action {name!r} (one of {', '.join(POLICY_MEASURES)})"
            )
    missing = _one_step_policy(tmp_path, {"action": "throttle", "unit": "hour"})
    with pytest.raises(PolicyError, match=r"throttle needs requests_per_unit, unit, limits$"):
        load_policy(missing)


def test_a_steps_parameters_are_the_measures_and_its_units_the_unit_table() -> None:
    fields = [f.name for f in msgspec.structs.fields(Step)]
    assert fields == ["action", "for_s", *PARAMETERS]
    assert get_args(TimeUnit) == tuple(UNIT_S) == ("second", "minute", "hour", "day")
    assert UNIT_S["day"] * 1000 == DAY


def test_time_bound_measures_expire_and_the_others_take_no_for_s(tmp_path: Path) -> None:
    time_bound = {name for name, measure in MEASURES.items() if measure.time_bound}
    assert time_bound == {
        "throttle", "restrict_functions", "suspend_updates", "stop_ads", "blacklist",
        "ban_reregistration",
    }  # fmt: skip
    for name in set(POLICY_MEASURES) - {"throttle"}:
        step = {"action": name, "for_s": 60}
        if name in time_bound:
            enforcer = Enforcer(load_policy(_one_step_policy(tmp_path, step)))
            (action,) = enforcer.decide(_finding(HOUR), enforcer.new_record())
            assert action.expires_at == HOUR + 60_000, name
        else:
            with pytest.raises(PolicyError, match=f"{name} does not expire: it takes no for_s"):
                load_policy(_one_step_policy(tmp_path, step))
