"""`account_handover`: accounts taken over (the buyer's devices and networks, another
language, other targets, after a dormant spell, promoting one account) are flagged one by
one under Article 11, naming 18(8) for the trade; owners who buy a new phone, travel, or
sit behind a carrier NAT are not; logins without an address or device are signs of life
only; both runtimes agree; a simulated world's campaign is found and its hard negatives
are not."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.detectors import build_stages
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from pipeline.lab.evaluation import evaluate
from pipeline.lab.simulation import simulate
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder
from tests.stage_partitions import runtimes_agree

SETTINGS = load_settings(overrides={"kafka": {"partitions": 2}})
CHINESE = ("今天也来支持一下", "这个我收藏了", "说得太对了", "每期都在看")
PROMOTION = "Follow @shop9 for daily deals, best prices today"


def _stages() -> list:
    return [s for s in build_stages(SETTINGS) if s.detector == "account_handover"]


def _run(lines: list[str], settings=SETTINGS) -> list[Finding]:
    stages = [s for s in build_stages(settings) if s.detector == "account_handover"]
    engine = Engine(settings, stages=stages)
    found: list[Finding] = []
    for i in range(0, len(lines), 2000):
        found += engine.process([x.encode() for x in lines[i : i + 2000]], "t").findings
    return found + engine.finish().findings


def owners(b: StreamBuilder, accounts: list[str], start: int, until: int, nat: str = "") -> None:
    """Each owner logs in every quarter of an hour or so from a phone of their own (at
    home, or behind the carrier NAT address `nat`) and comments in Chinese on two
    favourite accounts."""
    for i, a in enumerate(accounts):
        ip = nat or f"39.38.{i % 200}.{10 + i % 40}"
        ts = start + b.rng.randrange(20 * MINUTE)
        while ts < until:
            b.add("login", ts, a, ip=ip, device_id=f"{a}-phone")
            fav = f"fav{i % 2}"
            text = b.rng.choice(CHINESE)
            b.add("comment", ts + MINUTE, a, ip=ip, device_id=f"{a}-phone", target=fav,
                  content_id=f"{fav}/p1", text=text)  # fmt: skip
            ts += b.rng.randrange(10 * MINUTE, 25 * MINUTE)


def takeover(b: StreamBuilder, accounts: list[str], at: int, beneficiary: str = "shop9") -> None:
    """The buyer logs in on one of three devices from one /24 and promotes `beneficiary`:
    follows it, reposts and comments (in English) on its posts, within the hour."""
    for i, a in enumerate(accounts):
        ip, device = f"14.200.128.{20 + i % 3}", f"buyer-dev{i % 3}"
        t = at + b.rng.randrange(10 * MINUTE)
        b.add("login", t, a, ip=ip, device_id=device)
        b.add("follow", t + MINUTE, a, ip=ip, device_id=device, target=beneficiary)
        for k in range(5):
            when = t + (2 + 5 * k) * MINUTE + b.rng.randrange(MINUTE)
            post = f"{beneficiary}/p{k}"
            b.add("repost", when, a, ip=ip, device_id=device, target=beneficiary, content_id=post)
            b.add("comment", when + 30_000, a, ip=ip, device_id=device, target=beneficiary,
                  content_id=post, text=PROMOTION)  # fmt: skip


def _world(seed: int) -> tuple[StreamBuilder, dict[str, list[str]]]:
    """Owners active for six hours; three groups change at 3 h: some are taken over after
    two quiet hours, some buy a new phone, some travel; others sit behind a carrier NAT
    (one of them with a new phone too)."""
    b = StreamBuilder(seed=seed)
    groups = {
        name: [f"{name}{i}" for i in range(n)]
        for name, n in (("sold", 12), ("phone", 10), ("trip", 10), ("nat", 40))
    }
    end = T0 + 6 * HOUR
    owners(b, groups["sold"], T0, T0 + HOUR)
    takeover(b, groups["sold"], T0 + 3 * HOUR)
    b_phone, b_trip = StreamBuilder(seed=seed + 100), StreamBuilder(seed=seed + 200)
    owners(b, groups["phone"], T0, T0 + 3 * HOUR)
    owners(b_phone, groups["phone"], T0 + 3 * HOUR, end)
    owners(b, groups["trip"], T0, T0 + 3 * HOUR)
    owners(b_trip, groups["trip"], T0 + 3 * HOUR, end)
    for e in b_phone.events:  # the same networks and habits, a new phone
        e["device_id"] = e["actor"] + "-newphone"
    for e in b_trip.events:  # the same phone and habits, a hotel's network
        e["ip"] = "198.18.7." + str(len(e["actor"]))
    owners(b, groups["nat"], T0, end, nat="100.64.9.9")
    for e in b_phone.events + b_trip.events:
        b.add(e.pop("type"), e.pop("ts"), e.pop("actor"), **{k: v for k, v in e.items()
                                                            if k != "event_id"})  # fmt: skip
    late = [e for e in b.events if e["actor"] == "nat0" and e["ts"] >= T0 + 4 * HOUR]
    for e in late:
        e["device_id"] = "nat0-newphone"
    return b, groups


def test_taken_over_accounts_are_flagged_and_nobody_else() -> None:
    b, groups = _world(seed=1)
    found = _run(b.sorted_lines())
    assert {f.subject_id for f in found} == set(groups["sold"])
    first = [f for f in found if f.subject_id == "sold0"]
    assert [len(f.evidence["signals"]) for f in first] in ([4, 5], [5])  # again with more
    f = first[-1]
    assert f.detector == "account_handover" and f.article == "11" and f.subject_type == "account"
    assert f.members == [f.subject_id] and f.score >= 0.5
    e = f.evidence
    assert e["trading_article"] == "18(8)" and e["beneficiary"] == "shop9"
    assert {"network", "script", "targets", "dormant", "promotion"} <= set(e["signals"])
    assert e["usual_devices"] == [f"{f.subject_id}-phone"] and e["new_devices"][0].startswith(
        "buyer"
    )
    assert e["new_networks"] == ["14.200.128"] and e["usual_scripts"] == ["han"]
    assert list(e["episode_scripts"]) == ["latin"] and e["dormant_s"] >= 2 * 3600 - 1200
    assert f.window_start <= e["episode_start"] < f.window_end and f.ts >= e["episode_start"]
    assert "Article 11" in e["explanation"] and "18(8)" in e["explanation"]


def test_logins_without_address_or_device_are_only_signs_of_life(tmp_path: Path) -> None:
    """A login with neither address nor device, or with only one, opens no episode on its
    own and fails nothing; the contract's missing fields are not a change of owner."""
    b, groups = _world(seed=2)
    for i, a in enumerate(groups["phone"] + groups["trip"]):
        b.add("login", T0 + 2 * HOUR + i, a)  # neither field
        b.add("login", T0 + 2 * HOUR + 100 + i, a, device_id=f"{a}-unknown")  # no address
        b.add("login", T0 + 2 * HOUR + 200 + i, a, ip=f"203.0.113.{i}")  # no device
    lines = [*b.sorted_lines(), '{"event_id": "x1", "type": "login", "ts": "soon", "actor": "a"}']
    found = _run(lines)
    assert {f.subject_id for f in found} == set(groups["sold"])


def test_stage_partitions_find_what_the_engine_finds() -> None:
    b, groups = _world(seed=3)
    lines = [x.encode() for x in b.sorted_lines()]
    run = runtimes_agree(SETTINGS, _stages(), lines, Topics("t", 2))
    assert {f.subject_id for f in run.found.values()} == set(groups["sold"])


def test_a_takeover_without_promotion_or_another_language_is_left_alone() -> None:
    """With a new device and network and new targets after a quiet spell but the owner's
    language and no burst for one account, four signals are not all there."""
    b = StreamBuilder(seed=4)
    accounts = [f"quiet{i}" for i in range(5)]
    owners(b, accounts, T0, T0 + HOUR)
    for i, a in enumerate(accounts):
        for k in range(4):
            b.add("comment", T0 + 3 * HOUR + k * 7 * MINUTE, a, ip="14.200.128.9",
                  device_id=f"other{i}", target=f"creator{k}", content_id=f"creator{k}/p",
                  text=CHINESE[k])  # fmt: skip
    assert _run(b.sorted_lines()) == []


def test_settings_are_checked() -> None:
    where = "account_handover"
    with pytest.raises(ConfigError, match="event_types"):
        load_settings(overrides={"detectors": {where: {"event_types": ["dance"]}}})
    with pytest.raises(ConfigError, match="episode_ms"):
        load_settings(overrides={"detectors": {where: {"episode_ms": 1000}}})
    with pytest.raises(ConfigError, match="min_signals"):
        load_settings(overrides={"detectors": {where: {"min_signals": 7}}})
    off = load_settings(overrides={"detectors": {where: {"enabled": False}}})
    assert "account_handover" not in {s.detector for s in build_stages(off)}


def test_a_simulated_world_holds_a_handover_the_detector_finds(tmp_path: Path) -> None:
    """Two hours at a quarter scale: every taken-over account is named, and no new phone,
    journey or carrier-NAT user is."""
    events, labels_path = tmp_path / "events.jsonl", tmp_path / "labels.json"
    labels = simulate(120, 5, None, out=events, labels_out=labels_path, scale=0.25)
    lines = events.read_text().splitlines()
    found = _run(lines)
    report = evaluate(labels, [msgspec.to_builtins(f) for f in found])
    (campaign,) = [c for c in report.campaigns if c.kind == "account_handover"]
    assert campaign.detected and campaign.member_recall >= 0.9, campaign
    assert campaign.detectors == ["account_handover"]
    negatives = {n.kind: n for n in report.hard_negatives}
    assert {"new_phone", "travel", "carrier_nat"} <= set(negatives)
    for kind in ("new_phone", "travel", "carrier_nat"):
        assert negatives[kind].findings == 0 and negatives[kind].accounts_flagged == 0, kind
    logins = [x for x in lines if '"type":"login"' in x]
    nat = next(n for n in labels.hard_negatives if n.kind == "carrier_nat")
    address = labels.params[f"{nat.id}.ip"]
    assert any(f'"ip":"{address}"' in x for x in logins)  # NAT users log in through it


def test_idle_accounts_are_evicted() -> None:
    """A profile is kept `idle_ttl_ms` after the account's last event, then forgotten."""
    from pipeline.core.window_runner import WindowRunner

    (stage,) = _stages()
    b, groups = _world(seed=6)
    engine = Engine(SETTINGS, stages=[stage])
    engine.process([x.encode() for x in b.sorted_lines()], "t")
    engine.finish()
    runner = next(r for r in engine.runners if isinstance(r, WindowRunner))
    accounts = sum(len(v) for v in groups.values())
    assert len(runner) == accounts
    last = max(e["ts"] for e in b.events)
    assert runner.evict_idle(last + SETTINGS.detectors.account_handover.idle_ttl_ms // 2) == 0
    assert runner.evict_idle(last + SETTINGS.detectors.account_handover.idle_ttl_ms + HOUR) > 0
    assert len(runner) == 0
