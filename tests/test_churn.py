"""`churn`: an account that follows dozens of accounts and unfollows them within minutes,
round after round, is flagged by name; a user who drops a couple of accounts, a popular
account deserted after a scandal, and unfollows hours later are not. Both runtimes find
the same, whatever the small disorder; state per actor is capped and evicted."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from models.churn import ChurnHistory, quick_undos, surprise
from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.core.window_runner import WindowRunner
from pipeline.detectors import build_stages
from pipeline.detectors.churn import ChurnStage
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, replay_three_ways
from tests.stage_partitions import runtimes_agree

SECOND = 1000
ON = {"enabled": True}  # whatever the defaults, these tests run churn
SETTINGS = load_settings(overrides={"kafka": {"partitions": 2}, "detectors": {"churn": ON}})


def _run(lines: list[str], **overrides: object) -> list[Finding]:
    settings = load_settings(overrides={"detectors": {"churn": overrides}})
    engine = Engine(settings, stages=[ChurnStage(settings.detectors.churn, settings.severity)])
    findings: list[Finding] = []
    for i in range(0, len(lines), 2000):
        findings += engine.process([line.encode() for line in lines[i : i + 2000]], "t").findings
    return findings + engine.finish().findings


def _organic(b: StreamBuilder, end: int, users: int = 400) -> None:
    """Users following creators and friends all day; 3% of follows undone hours later,
    and a few users who regret a follow or two within minutes."""
    ts = T0
    while True:
        ts += int(b.rng.expovariate(2000 / HOUR)) + 1
        if ts >= end:
            break
        who, target = f"user{b.rng.randrange(users)}", f"creator{b.rng.randrange(50)}"
        b.add("follow", ts, who, target=target, origin="user", consent=True)
        if b.rng.random() < 0.03:
            b.add("unfollow", ts + b.rng.randrange(2 * HOUR, 6 * HOUR), who, target=target)
    for i in range(20):  # a mis-tap or a quick regret: a couple each, within minutes
        at = T0 + b.rng.randrange(end - T0 - HOUR)
        for k in range(2):
            target = f"friend{i}-{k}"
            b.add("follow", at + k * MINUTE, f"user{i}", target=target, origin="user")
            b.add("unfollow", at + k * MINUTE + 90 * SECOND, f"user{i}", target=target)


def _scandal(b: StreamBuilder, star: str, at: int, fans: int = 300) -> None:
    """A popular account deserted: hundreds of people who had just followed it (and many
    older fans) unfollow it within minutes of the news."""
    for i in range(fans):
        fan = f"fan{i}"
        if i % 2:  # followed minutes before the news broke
            b.add("follow", at - b.rng.randrange(10 * MINUTE), fan, target=star, origin="user")
        b.add("unfollow", at + b.rng.randrange(5 * MINUTE), fan, target=star)


def _churner(b: StreamBuilder, who: str, start: int, rounds: int = 4, per_round: int = 20) -> None:
    """Follow `per_round` accounts a few seconds apart, drop each minutes later; again
    every 30 minutes."""
    for r in range(rounds):
        ts = start + r * 30 * MINUTE
        for _ in range(per_round):
            ts += b.rng.randrange(3 * SECOND, 20 * SECOND)
            target = f"t{b.rng.randrange(10**6)}"
            b.add("follow", ts, who, target=target, origin="user", consent=True)
            b.add("unfollow", ts + b.rng.randrange(MINUTE, 10 * MINUTE), who, target=target)


def _world(seed: int) -> StreamBuilder:
    b = StreamBuilder(seed=seed)
    _organic(b, T0 + 5 * HOUR)
    _scandal(b, "star", T0 + 2 * HOUR)
    _churner(b, "growth1", T0 + HOUR)
    _churner(b, "growth2", T0 + 90 * MINUTE, rounds=3, per_round=12)
    return b


def test_churners_are_flagged_and_nobody_else() -> None:
    found = _run(_world(seed=1).sorted_lines())
    assert {f.subject_id for f in found} == {"growth1", "growth2"}
    assert all(f.members == [f.subject_id] and f.subject_type == "account" for f in found)
    first = min((f for f in found if f.subject_id == "growth1"), key=lambda f: f.ts)
    assert first.ts <= T0 + HOUR + 20 * MINUTE  # within the first round
    e = first.evidence
    assert e["quick_undos"] >= 10 and e["distinct_targets"] >= 8
    assert e["z"] >= e["z_threshold"] and "explanation" in e
    later = max((f for f in found if f.subject_id == "growth1"), key=lambda f: f.ts)
    assert later.ts - first.ts >= HOUR  # flagged again only after renotify_ms
    assert later.evidence["rounds"] >= 2


def test_unfollows_after_the_pairing_horizon_are_not_churn() -> None:
    b = StreamBuilder(seed=2)
    for k in range(40):  # the same volume, but each follow dropped an hour later
        ts = T0 + k * 20 * SECOND
        b.add("follow", ts, "slow", target=f"t{k}", origin="user")
        b.add("unfollow", ts + HOUR, "slow", target=f"t{k}")
    assert _run(b.sorted_lines()) == []


def test_a_lower_threshold_catches_the_regretful_users() -> None:
    """The couple of quick undos users make are counted: they stay out only because a
    real user's normal is far below `min_undos`."""
    found = _run(_world(seed=1).sorted_lines(), min_undos=2, min_targets=2, z_threshold=1.0)
    assert {f"user{i}" for i in range(20)} <= {f.subject_id for f in found}
    assert not any(f.subject_id.startswith("fan") for f in found)


def test_quick_undos_pair_the_same_actor_and_target_in_order() -> None:
    follows = [("a", "x", 1_000), ("a", "x", 500_000), ("a", "y", 0), ("b", "x", 0)]
    unfollows = [("a", "x", 520_000), ("a", "y", 700_000), ("b", "z", 10), ("c", "x", 5)]
    # a/x: the latest follow before it (500 s), not the first; a/y: too late; others unpaired
    assert quick_undos(follows, unfollows, within_ms=600_000) == [("a", "x", 500_000, 520_000)]
    assert quick_undos([("a", "x", 10)], [("a", "x", 5)], within_ms=600_000) == []


def test_history_forgets_beyond_its_horizon_and_cap() -> None:
    h = ChurnHistory()
    for i in range(30):
        h.learn(i * MINUTE, f"t{i % 7}", horizon_ms=20 * MINUTE, cap=100)
    assert h.count == 20 and h.targets() == 7
    h.learn(10 * MINUTE, "late", horizon_ms=20 * MINUTE, cap=100)  # out of order: kept sorted
    assert [ts for ts, _ in h.undos] == sorted(ts for ts, _ in h.undos)
    for i in range(50):
        h.learn(30 * MINUTE + i, f"u{i}", horizon_ms=HOUR, cap=25)
    assert h.count == 25
    assert h.rounds(gap_ms=5 * MINUTE) == 1 and ChurnHistory().rounds(5 * MINUTE) == 0
    assert surprise(0, prior=0.2) == 0.0 < surprise(5, prior=0.2) < surprise(50, prior=0.2)
    copy = pickle.loads(pickle.dumps(h))
    assert copy.undos == h.undos and copy.flagged_at == h.flagged_at


def test_state_is_only_for_churning_actors_and_is_evicted() -> None:
    stage = ChurnStage(SETTINGS.detectors.churn, SETTINGS.severity)
    engine = Engine(SETTINGS, stages=[stage])
    b = _world(seed=3)
    engine.process([line.encode() for line in b.sorted_lines()], "t")
    runner = engine.runners[0]
    assert isinstance(runner, WindowRunner)
    followers = {e["actor"] for e in b.events if e["type"] == "follow"}
    undoers = {e["actor"] for e in b.events if e["type"] == "unfollow"}
    assert {"growth1", "growth2"} <= set(runner.store) <= undoers  # a model: a quick undo
    assert len(runner.store) < len(followers) / 2
    live = len(runner.store)
    assert runner.evict_idle(T0 + 5 * HOUR + stage.idle_ttl_ms + HOUR) == live
    assert not runner.store


def test_stage_partitions_find_what_the_engine_finds() -> None:
    lines = [line.encode() for line in _world(seed=4).sorted_lines()]
    stages = [s for s in build_stages(SETTINGS) if s.detector == "churn"]
    runtimes_agree(SETTINGS, stages, lines, Topics("t", 2))


def test_findings_are_deterministic_and_survive_small_disorder(tmp_path: Path) -> None:
    runs = [
        sorted((f["finding_id"], f["subject_id"], f["score"]) for f in found)
        for found in replay_three_ways(tmp_path, _world(seed=5).sorted_lines(), "churn")
    ]
    assert runs[0] and runs[0] == runs[1] == runs[2]
    assert {subject for _, subject, _ in runs[0]} == {"growth1", "growth2"}


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="horizon_ms"):
        load_settings(overrides={"detectors": {"churn": {"horizon_ms": 1000}}})
    with pytest.raises(ConfigError, match="min_undos"):
        load_settings(overrides={"detectors": {"churn": {"min_undos": 0}}})
    with pytest.raises(ConfigError, match="undo_within_ms"):
        load_settings(overrides={"detectors": {"churn": {"undo_within_ms": 0}}})
