"""What a finding's evidence carries for the case console: the subject's latest windows as
its detector judged them (`evidence.series`), what the events say of each member
(`evidence.member_facts`), and which members acted in each round of a lockstep group and
when (`evidence.member_rounds`). Each is checked against the stream that made it, for its
bound, and against the distributed runtime's stage partitions, which keep the same state
through pickle and so must give the same evidence."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from models.network import network_of
from models.recent_windows import as_series, remember
from pipeline.console import views
from pipeline.contract.events import decoder
from pipeline.contract.findings import Finding, make_finding
from pipeline.core.settings import Settings, load_settings
from pipeline.detectors import build_stages
from pipeline.detectors.case_evidence import MAX_MEMBER_FACTS, member_facts
from pipeline.detectors.lockstep_group import MAX_PICTURED_MEMBERS
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder
from tests.stage_partitions import engine_findings, run_partitioned
from tests.test_batch_registration import _batch
from tests.test_batch_registration import _world as _sign_ups
from tests.test_engagement_inflation import _background, _farm, _organic
from tests.test_lockstep_group import World

WINDOW = 5 * MINUTE  # follower_jump's and engagement_inflation's windows (tumbling)
ALONE = {"silent_followers": {"enabled": False}}  # follower_jump hands nothing on


def _found(settings: Settings, detector: str, lines: list[str]) -> list[Finding]:
    stages = [s for s in build_stages(settings) if s.detector == detector]
    engine = Engine(settings, stages=stages)
    raws = [line.encode() for line in lines]
    found = engine.process(raws, "t").findings + engine.finish().findings
    return [f for f in found if f.detector == detector]


def _bought(b: StreamBuilder, target: str, at: int, n: int) -> dict[str, dict[str, Any]]:
    """`n` fresh accounts on a few devices of one /24 follow `target` within 3 minutes of
    `at`: what is known of each, as its follow says."""
    facts = {}
    for i in range(n):
        bot, created = f"bot{i:03d}", at - HOUR - i * MINUTE
        ip, device = f"203.0.113.{i % 50}", f"farm-phone-{i % 7}"
        b.add("follow", at + b.rng.randrange(3 * MINUTE), bot, target=target, ip=ip,
              device_id=device, actor_created_at=created)  # fmt: skip
        facts[bot] = {"created_at": created, "network": "203.0.113", "device": device}
    return facts


def _net_follows(b: StreamBuilder, target: str, end: int) -> int:
    """The net new followers of `target` in the window ending at `end`."""
    net = Counter(
        e["type"] for e in b.events if e.get("target") == target and end - WINDOW <= e["ts"] < end
    )
    return net["follow"] - net["unfollow"]


def test_the_record_of_recent_windows_keeps_the_last_points_oldest_first() -> None:
    recent = None
    for t in range(1, 101):
        recent = remember(recent, t * MINUTE, t, t / 3, points=48)
    series = as_series(recent)
    assert series["t"] == [t * MINUTE for t in range(53, 101)]
    assert series["value"] == list(range(53, 101))
    assert series["expected"] == [round(t / 3, 2) for t in range(53, 101)]
    assert isinstance(recent, bytes) and len(recent) == 48 * 24  # bounded, 24 bytes a point
    one = remember(recent, 101 * MINUTE, 7.5, 1.0, points=1)
    assert as_series(one) == {"t": [101 * MINUTE], "value": [7.5], "expected": [1.0]}
    assert remember(recent, 101 * MINUTE, 7, 1.0, points=0) is None
    assert as_series(None) == {"t": [], "value": [], "expected": []}


def test_a_follower_jump_charts_the_accounts_windows_up_to_the_flagged_one() -> None:
    b = StreamBuilder(seed=5)
    b.poisson_follows("small", T0, T0 + 8 * HOUR, rate_per_hour=30)
    b.poisson_follows("other", T0, T0 + 8 * HOUR, rate_per_hour=60)
    facts = _bought(b, "small", T0 + 5 * HOUR + 2 * MINUTE, 300)
    settings = load_settings(overrides={"detectors": ALONE})
    (jump,) = [f for f in _found(settings, "follower_jump", b.sorted_lines()) if f.members]
    e = jump.evidence
    series = e["series"]
    assert len(series["t"]) == len(series["value"]) == len(series["expected"]) == 48
    assert series["t"][-1] == jump.window_end  # it ends at the flagged window,
    assert series["value"][-1] == e["observed"] and series["expected"][-1] == e["expected"]
    steps = [b - a for a, b in zip(series["t"], series["t"][1:], strict=False)]
    assert all(s >= WINDOW and s % WINDOW == 0 for s in steps)  # judged windows, in order
    assert series["value"] == [_net_follows(b, "small", t) for t in series["t"]]
    assert max(series["expected"][:-1]) < 5 < e["observed"]  # its normal, then the burst

    # the bound is the detector's setting; the latest windows are kept
    few = load_settings(overrides={"detectors": {**ALONE, "follower_jump": {"series_points": 6}}})
    (again,) = [f for f in _found(few, "follower_jump", b.sorted_lines()) if f.members]
    assert again.finding_id == jump.finding_id and again.members == jump.members
    assert again.evidence["series"] == {k: v[-6:] for k, v in series.items()}
    none = load_settings(overrides={"detectors": {**ALONE, "follower_jump": {"series_points": 0}}})
    (bare,) = [f for f in _found(none, "follower_jump", b.sorted_lines()) if f.members]
    assert "series" not in bare.evidence
    assert {k: v for k, v in e.items() if k != "series"} == bare.evidence  # nothing else moves

    # what is known of the members: the first of them, as their follows said
    described = e["member_facts"]
    assert list(described) == jump.members[:MAX_MEMBER_FACTS] and len(jump.members) == 300
    assert described == {m: facts[m] for m in described}


def test_member_facts_take_each_field_from_the_earliest_event_that_has_it() -> None:
    b = StreamBuilder()
    b.add("follow", T0 + 5, "a", target="t", ip="198.51.100.7")
    b.add("follow", T0 + 1, "a", target="t", device_id="phone-a")
    b.add("follow", T0 + 3, "a", target="t", ip="192.0.2.1", device_id="phone-b")
    b.add("register", T0 + 2, "b", ip="2001:db8:1:2::9")
    b.add("follow", T0 + 4, "c", target="t")  # nothing known of c
    b.add("follow", T0 + 4, "d", target="t", actor_created_at=T0 - HOUR)  # not a member
    decoded = [decoder.decode(line.encode()) for line in b.sorted_lines()]
    facts = member_facts(decoded, ["c", "b", "a"])
    assert facts == {
        "b": {"created_at": T0 + 2, "network": "2001:db8:1"},  # registered then
        "a": {"device": "phone-a", "network": "192.0.2"},
    }
    assert list(facts) == ["b", "a"]  # in the finding's order
    assert member_facts(decoded, ["c", "b", "a"], limit=1) == {}  # c: the first, unknown


def test_engagement_inflation_charts_the_items_windows_and_describes_the_farm() -> None:
    b = StreamBuilder(seed=4)
    _background(b, T0 + 5 * HOUR)
    _organic(b, "hit", "star", T0, T0 + 5 * HOUR, per_window=150)
    farm_start = T0 + 3 * HOUR
    farm = _farm(b, "hit", "star", farm_start, farm_start + 40 * MINUTE, clicks=1200)
    found = _found(load_settings(), "engagement_inflation", b.sorted_lines())
    assert found and {f.subject_id for f in found} == {"hit"}
    for f in found:
        series = f.evidence["series"]
        assert 1 < len(series["t"]) <= 48 and series["t"][-1] == f.window_end
        assert series["value"][-1] == f.evidence["events"]
        assert series["expected"][-1] == f.evidence["expected"]
        on_item = Counter(
            (e["ts"] // WINDOW + 1) * WINDOW for e in b.events if e.get("content_id") == "hit"
        )
        assert series["value"] == [on_item[t] for t in series["t"]]
        facts = f.evidence["member_facts"]
        assert list(facts) == f.members[:MAX_MEMBER_FACTS]
        for m in set(facts) & set(farm):  # the farm's phones and its one /24
            assert facts[m]["network"] == "203.0.113"
            assert facts[m]["device"].startswith("farm-phone-")


def test_a_registration_batch_charts_the_source_and_describes_every_account() -> None:
    b = _sign_ups(seed=1)
    hosts = [f"203.0.113.{h}" for h in range(10, 90)]
    batch = _batch(b, T0 + 2 * HOUR, 150, 6 * MINUTE, hosts, devices=4, tag="bot")
    registered = {e["actor"]: e for e in b.events if e["type"] == "register"}
    found = _found(load_settings(), "batch_registration", b.sorted_lines())
    assert found and {m for f in found for m in f.members} == set(batch)
    for f in found:
        e = f.evidence
        series = e["series"]
        assert series["t"][-1] == f.window_end and series["value"][-1] == e["registrations"]
        assert series["expected"][-1] == e["expected"] and len(series["t"]) <= 48
        facts = e["member_facts"]
        assert list(facts) == f.members[:MAX_MEMBER_FACTS]
        for m, known in facts.items():
            sign_up = registered[m]
            assert known == {
                "created_at": sign_up["ts"],
                "network": "203.0.113",
                "device": sign_up["device_id"],
            }
    assert max(len(f.members) for f in found) > MAX_MEMBER_FACTS  # the bound bit


def test_a_hoarded_batch_says_when_each_account_was_registered_and_from_where() -> None:
    b = _sign_ups(seed=11)
    hosts = [f"203.0.113.{h}" for h in range(10, 60)]
    batch = _batch(b, T0 + HOUR, 150, 6 * MINUTE, hosts, devices=3, tag="bot")
    registered = {e["actor"]: e["ts"] for e in b.events if e["type"] == "register"}
    settings = load_settings()
    chain = ("batch_registration", "hoarded_watch", "hoarded_accounts")
    engine = Engine(settings, stages=[s for s in build_stages(settings) if s.detector in chain])
    found = engine.process([x.encode() for x in b.sorted_lines()], "t").findings
    found += engine.finish().findings
    (hoarded,) = [f for f in found if f.detector == "hoarded_accounts"]
    facts = hoarded.evidence["member_facts"]
    assert set(hoarded.members) == set(batch) and list(facts) == hoarded.members[:100]
    assert facts == {m: {"created_at": registered[m], "network": "203.0.113"} for m in facts}


def test_a_lockstep_group_says_which_members_acted_in_each_round_and_when() -> None:
    w = World(seed=7)
    w.background(T0, T0 + 6 * HOUR, per_hour=2000)
    ring = w.ring("c9", members=150, posts=6, start=T0 + HOUR)
    settings = load_settings()
    found = _found(settings, "lockstep_group", w.lines())
    assert found and {m for f in found for m in f.members} <= ring
    reposts = [e for e in w.b.events if e["type"] == "repost" and e["target"] == "c9"]
    for f in found:
        rounds, acted = f.evidence["rounds"], f.evidence["member_rounds"]
        pictured = f.members[:MAX_PICTURED_MEMBERS]
        assert list(acted) == [m for m in pictured if m in acted]  # the first members,
        assert len(acted) == min(len(f.members), MAX_PICTURED_MEMBERS) < len(f.members)
        truth: dict[str, list[list[int]]] = {}
        for i, r in enumerate(rounds):
            first: dict[str, int] = {}
            for e in reposts:
                if e["content_id"] == r["content_id"] and r["start"] <= e["ts"] <= r["end"]:
                    first[e["actor"]] = min(first.get(e["actor"], e["ts"]), e["ts"])
            for m in pictured:
                if m in first:
                    truth.setdefault(m, []).append([i, first[m]])
        assert acted == truth  # each member in exactly the rounds it acted in, at its time
        facts = f.evidence["member_facts"]  # from their reposts in the reporting window
        assert facts and set(facts) <= set(f.members[:MAX_MEMBER_FACTS])
        window = [e for e in reposts if f.window_end - settings.detectors.lockstep_group.window_ms
                  <= e["ts"] < f.window_end]  # fmt: skip
        for m, known in facts.items():
            earliest = min((e for e in window if e["actor"] == m), key=lambda e: e["ts"])
            assert known == {"network": network_of(earliest["ip"])}


def test_the_stage_partitions_give_the_same_evidence_as_the_engine() -> None:
    """Series and member facts come from key state and a window's events, which the
    distributed runtime pickles into its table after every record and redelivers after a
    crash: the same findings with the same evidence, to the last point."""
    b = StreamBuilder(seed=8)
    for i in range(6):
        b.poisson_follows(f"acct{i}", T0, T0 + 6 * HOUR, rate_per_hour=10 + 10 * i)
    _bought(b, "acct2", T0 + 4 * HOUR, 200)
    _batch(b, T0 + 3 * HOUR, 120, 6 * MINUTE, ["203.0.113.5", "203.0.113.6"], 3, "reg")
    ring = World(seed=5)
    ring.background(T0, T0 + 5 * HOUR, per_hour=3000)
    ring.ring("c7", members=60, posts=4, start=T0 + HOUR, join=0.9)
    settings = load_settings(overrides={"kafka": {"partitions": 2}, "detectors": ALONE})
    streams = {
        "follower_jump": b.sorted_lines(),
        "batch_registration": b.sorted_lines(),
        "lockstep_group": ring.lines(),
    }
    for detector, stream in streams.items():
        lines = [line.encode() for line in stream]
        stages = [s for s in build_stages(settings) if s.detector == detector]
        found = engine_findings(settings, stages, lines)
        expected = {f.finding_id: msgspec.to_builtins(f) for f in found if f.detector == detector}
        assert expected and all(f["evidence"].get("member_facts") for f in expected.values())
        new = "member_rounds" if detector == "lockstep_group" else "series"
        assert all(f["evidence"][new] for f in expected.values()), detector
        run = run_partitioned(settings, stages, lines, Topics("t", 2), chunk=1500)
        assert run.duplicates > 0
        found_there = {i: msgspec.to_builtins(f) for i, f in run.found.items()}
        assert {i: f for i, f in found_there.items() if f["detector"] == detector} == expected


def test_the_case_view_reads_member_facts_shares_and_rounds_from_the_evidence() -> None:
    """What the console makes of the new fields: each member's facts (a later finding's
    word over an earlier one's, the age when found), what several members share, and the
    picture's rounds per member; a finding without them is read as before."""

    def finding(minute: int, evidence: dict[str, Any]) -> Finding:
        start = T0 + minute * MINUTE
        return make_finding(
            detector="batch_registration", article="18(8)", subject_type="group",
            subject_id="net:203.0.113", window_start=start, window_end=start + 10 * MINUTE,
            score=0.9, severity="high", members=["a", "b", "c", "d"],
            evidence={"explanation": "x", **evidence},
        )  # fmt: skip

    early = finding(0, {"member_facts": {
        "a": {"created_at": T0 - HOUR, "network": "198.51.100", "device": "p1"},
        "b": {"created_at": T0 - 2 * HOUR, "network": "198.51.100", "device": "p1"},
    }})  # fmt: skip
    late = finding(30, {
        "member_facts": {"a": {"network": "203.0.113"}, "c": {"created_at": T0, "device": "p1"},
                         "d": "not facts"},
        "rounds": [{"content_id": "x", "start": T0, "end": T0 + 1}],
        "member_rounds": {"a": [[0, T0]]},
    })  # fmt: skip
    plain = finding(60, {})
    facts = views._facts([late, plain, early])
    assert facts == {
        "a": {"created_at": T0 - HOUR, "age_s": (early.ts - T0 + HOUR) // 1000,
              "network": "203.0.113", "device": "p1"},
        "b": {"created_at": T0 - 2 * HOUR, "age_s": (early.ts - T0 + 2 * HOUR) // 1000,
              "network": "198.51.100", "device": "p1"},
        "c": {"created_at": T0, "age_s": (late.ts - T0) // 1000, "device": "p1"},
    }  # fmt: skip
    shared = views._member_shared(facts, {"a", "b", "c", "d", "e"})
    assert shared == {
        "member_devices": {"p1": 3},  # a network of one member is nothing shared
        "member_created": {"first": T0 - 2 * HOUR, "last": T0, "span_s": 7200, "members": 3},
    }
    assert views._member_shared({}, {"a"}) == {}
    assert views._picture([early, late, plain]) == {
        "kind": "rounds", "finding_id": late.finding_id, "rounds": late.evidence["rounds"],
        "member_rounds": {"a": [[0, T0]]},
    }  # fmt: skip
    assert "member_rounds" not in views._picture([finding(90, {"rounds": [{"start": T0}]})])
