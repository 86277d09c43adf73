"""`forced_follow`: an onboarding flow that makes newcomers follow one account without asking
is flagged, naming the account and the origins; contact imports without consent spread over
many targets, popular accounts' confirmed onboarding defaults, and follows with no origin or
consent at all are not."""

from __future__ import annotations

import pickle
from pathlib import Path

import msgspec
import pytest

from models.engagement import EngagementBaseline
from models.prior_baseline import PriorCountBaseline
from pipeline.contract.events import decoder
from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.detectors.forced_follow import (
    ForcedBaseline,
    ForcedFold,
    ForcedFollowStage,
    ForcedPane,
)
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import (
    HOUR,
    MINUTE,
    T0,
    StreamBuilder,
    replay_three_ways,
)
from tests.stage_partitions import engine_findings, run_partitioned

WINDOW = 15 * MINUTE  # config/lockstep.yaml: detectors.forced_follow.window_ms
HOP = 5 * MINUTE


def _newcomers(
    b: StreamBuilder,
    start: int,
    end: int,
    per_hour: float,
    forced_onto: str | None = None,
    share: float = 1.0,
    popular: tuple[str, ...] = (),
) -> list[str]:
    """People signing up at `per_hour`. Each follows a few `popular` accounts the platform
    recommends (a fifth as confirmed onboarding defaults) and one friend from imported
    contacts (a third of imports unconfirmed); `forced_onto`, when given, is followed by a
    `share` of them without being asked. Returns the ones forced."""
    forced = []
    ts = start
    while True:
        ts += int(b.rng.expovariate(per_hour / HOUR)) + 1
        if ts >= end:
            return forced
        who = f"new{b.rng.randrange(10**8)}"
        b.add("register", ts, who)
        for target in b.rng.sample(popular, min(len(popular), 2 + b.rng.randrange(3))):
            onboarding = b.rng.random() < 0.2
            origin = "onboarding_default" if onboarding else "recommendation"
            b.add(
                "follow",
                ts + b.rng.randrange(MINUTE),
                who,
                target=target,
                origin=origin,
                consent=True,
            )
        friend = f"user{b.rng.randrange(5000)}"
        consent = b.rng.random() > 0.3
        b.add(
            "follow",
            ts + b.rng.randrange(HOUR),
            who,
            target=friend,
            origin="import",
            consent=consent,
        )
        if forced_onto and b.rng.random() < share:
            late = ts + 2_000 + b.rng.randrange(40_000)
            b.add(
                "follow", late, who, target=forced_onto, origin="onboarding_default", consent=False
            )
            forced.append(who)


def _organic_follows(b: StreamBuilder, targets: list[str], end: int, per_hour: float) -> None:
    for target in targets:
        b.poisson_follows(target, T0, end, rate_per_hour=per_hour)


def _run(lines: list[str], **overrides: object) -> list[Finding]:
    settings = load_settings(overrides={"detectors": {"forced_follow": overrides}})
    stage = ForcedFollowStage(settings.detectors.forced_follow, settings.severity)
    engine = Engine(settings, stages=[stage])
    findings: list[Finding] = []
    for i in range(0, len(lines), 2000):
        findings += engine.process([line.encode() for line in lines[i : i + 2000]], "t").findings
    return findings + engine.finish().findings


POPULAR = ("star1", "star2", "star3", "star4", "star5")


def _world(seed: int, end: int) -> StreamBuilder:
    """Sign-ups all day (with a promotion tripling them for an hour), recommendations of
    popular accounts, contact imports, and ordinary follows of creators."""
    b = StreamBuilder(seed=seed)
    _organic_follows(b, list(POPULAR), end, per_hour=120)
    _organic_follows(b, [f"creator{i}" for i in range(20)], end, per_hour=4)
    _newcomers(b, T0, end, per_hour=200, popular=POPULAR)
    promo = T0 + HOUR
    _newcomers(b, promo, promo + HOUR, per_hour=400, popular=POPULAR)
    return b


def test_onboarding_campaign_on_one_account_is_flagged() -> None:
    b = _world(seed=1, end=T0 + 5 * HOUR)
    start = T0 + 3 * HOUR + 2 * MINUTE
    victims = _newcomers(b, start, start + HOUR, per_hour=150, forced_onto="creator7", share=0.7)
    findings = _run(b.sorted_lines())

    assert findings and {f.subject_id for f in findings} == {"creator7"}
    first = min(findings, key=lambda f: f.window_end)
    assert first.window_end - start <= 2 * WINDOW
    assert first.detector == "forced_follow" and first.article == "12"
    assert first.subject_type == "account" and first.members == []
    ev = first.evidence
    assert ev["forced"] >= 10 and ev["distinct_victims"] >= 10 and ev["forced_share"] >= 0.5
    assert (
        ev["origins"] == {"onboarding_default": ev["forced"]} and ev["unconsented"] == ev["forced"]
    )
    assert set(ev["victims_sample"]) <= set(victims) and 0 < len(ev["victims_sample"]) <= 20
    assert "onboarding_default" in ev["explanation"] and "consent" in ev["explanation"]
    # an hour of it is not the account's new normal: flagged until it stops
    assert max(f.window_end for f in findings) >= start + HOUR - HOP


def test_campaign_at_a_low_rate_is_flagged_too() -> None:
    b = _world(seed=2, end=T0 + 5 * HOUR)
    start = T0 + 3 * HOUR
    _newcomers(b, start, start + HOUR, per_hour=60, forced_onto="creator3")
    assert {f.subject_id for f in _run(b.sorted_lines())} == {"creator3"}


def test_organic_world_is_not_flagged() -> None:
    """Unconfirmed contact imports spread thin over thousands of people, confirmed onboarding
    defaults for popular accounts (tripled by a promotion), follows with neither origin nor
    consent, and recommendations: none is a forced-follow campaign."""
    b = _world(seed=3, end=T0 + 6 * HOUR)
    for i in range(3000):  # old clients send neither origin nor consent
        b.add("follow", T0 + b.rng.randrange(6 * HOUR), f"old{i}", target="creator5")
    for i in range(600):  # recommended and confirmed: fine
        ts = T0 + 2 * HOUR + b.rng.randrange(HOUR)
        b.add("follow", ts, f"r{i}", target="creator6", origin="recommendation", consent=True)
    assert _run(b.sorted_lines()) == []


def test_what_counts_as_forced() -> None:
    settings = load_settings()
    stage = ForcedFollowStage(settings.detectors.forced_follow, settings.severity)
    b = StreamBuilder(seed=4)
    cases = [
        ("user", True, False),
        (None, None, False),
        ("recommendation", True, False),
        ("recommendation", False, True),
        ("user", False, True),
        ("onboarding_default", None, True),
        ("api", True, True),
        ("import", False, True),
    ]
    for i, (origin, consent, _) in enumerate(cases):
        fields = {k: v for k, v in (("origin", origin), ("consent", consent)) if v is not None}
        b.add("follow", T0 + i, f"u{i}", target=f"t{i}", **fields)
    follows = [decoder.decode(line) for line in b.sorted_lines()]
    folded = stage.fold(follows[:3])  # batches at once (embedded), event by event (distributed)
    folded = stage.fold(follows[3:], "follow", folded)
    added = ForcedFold()
    for event in follows:
        stage.add(added, event)
    for fold in (folded, added):
        assert fold.follows == {f"t{i}": 1 for i in range(len(cases))}
        forced = {target: pane.forced for target, pane in fold.forced.items()}
        assert forced == {f"t{i}": 1 for i, (_, _, yes) in enumerate(cases) if yes}


def test_findings_are_deterministic_and_survive_small_disorder(tmp_path: Path) -> None:
    b = _world(seed=5, end=T0 + 4 * HOUR)
    _newcomers(b, T0 + 2 * HOUR, T0 + 3 * HOUR, per_hour=150, forced_onto="creator9")
    ordered = b.sorted_lines()
    runs = [
        sorted((f["finding_id"], f["subject_id"], f["score"]) for f in found)
        for found in replay_three_ways(tmp_path, ordered, "forced_follow")
    ]
    assert runs[0] and runs[0] == runs[1] == runs[2]
    assert {subject for _, subject, _ in runs[0]} == {"creator9"}


def test_fold_survives_pickling() -> None:
    fold = ForcedFold()
    fold.follows.update({"t": 5, "u": 1})
    pane = fold.forced["t"] = ForcedPane()
    pane.forced, pane.unconsented = 3, 2
    pane.origins["onboarding_default"] = 3
    pane.victims.update({"a", "b", "c"})
    copy = pickle.loads(pickle.dumps(fold, protocol=pickle.HIGHEST_PROTOCOL))
    assert copy.follows == {"t": 5, "u": 1}
    (copied,) = copy.forced.values()
    assert (copied.forced, copied.unconsented) == (3, 2)
    assert copied.origins == {"onboarding_default": 3} and copied.victims == {"a", "b", "c"}


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="forcing_origins"):
        load_settings(overrides={"detectors": {"forced_follow": {"forcing_origins": ["bogus"]}}})
    with pytest.raises(ConfigError, match="min_forced_share"):
        load_settings(overrides={"detectors": {"forced_follow": {"min_forced_share": 2.0}}})
    with pytest.raises(ConfigError, match="window_ms"):
        load_settings(overrides={"detectors": {"forced_follow": {"window_ms": 700_000}}})


def _campaign_stream() -> tuple[StreamBuilder, list[int]]:
    """An account followed by a few people a window, now and then without consent (an
    unconfirmed import), then a 10-minute onboarding campaign onto it; another account
    gets ordinary follows only. Returns the times of the account's forced follows."""
    b = StreamBuilder(seed=3)
    b.poisson_follows("acct", T0, T0 + 4 * HOUR, rate_per_hour=12)
    b.poisson_follows("other", T0, T0 + 4 * HOUR, rate_per_hour=30)
    forced = []
    for i, at in enumerate((T0 + 7 * MINUTE, T0 + 52 * MINUTE, T0 + 95 * MINUTE)):
        b.add("follow", at, f"friend{i}", target="acct", origin="import", consent=False)
        forced.append(at)
    start = T0 + 3 * HOUR + MINUTE
    for i in range(40):
        at = start + i * 15_000
        b.add("follow", at, f"new{i}", target="acct", origin="onboarding_default", consent=False)
        forced.append(at)
    return b, forced


def _forced_in(forced: list[int], end: int) -> int:
    return sum(end - WINDOW <= ts < end for ts in forced)


def test_a_finding_charts_the_targets_windows_with_forced_follows() -> None:
    b, forced = _campaign_stream()
    findings = _run(b.sorted_lines())
    assert findings and {f.subject_id for f in findings} == {"acct"}
    # the windows judged: every window (of WINDOW, every HOP) holding a forced follow
    judged = sorted({(ts // HOP + k) * HOP for ts in forced for k in (1, 2, 3)})
    for f in findings:
        e, series = f.evidence, f.evidence["series"]
        assert len(series["t"]) == len(series["value"]) == len(series["expected"])
        assert series["t"] == [t for t in judged if t <= f.window_end][-48:]
        assert series["value"] == [_forced_in(forced, t) for t in series["t"]]
        assert series["value"][-1] == e["forced"] and series["expected"][-1] == e["expected"]
    first = min(findings, key=lambda f: f.window_end)
    assert max(first.evidence["series"]["value"][:-1]) == 1  # the stray imports, then this
    assert first.evidence["series"]["expected"][0] == 0.0  # judged against the prior of none

    # the bound is the setting; 0 keeps no record, and nothing else moves
    few = _run(b.sorted_lines(), series_points=2)
    none = _run(b.sorted_lines(), series_points=0)
    assert [f.finding_id for f in few] == [f.finding_id for f in none]
    assert [f.finding_id for f in findings] == [f.finding_id for f in none]
    for f, f2, f0 in zip(findings, few, none, strict=True):
        assert f2.evidence["series"] == {k: v[-2:] for k, v in f.evidence["series"].items()}
        assert "series" not in f0.evidence
        assert {k: v for k, v in f.evidence.items() if k != "series"} == f0.evidence
        assert (f.score, f.severity, f.members) == (f0.score, f0.severity, f0.members)


def test_the_series_is_the_same_through_the_distributed_runtimes_pickled_state() -> None:
    b, _ = _campaign_stream()
    settings = load_settings(overrides={"kafka": {"partitions": 2}})
    stages = [ForcedFollowStage(settings.detectors.forced_follow, settings.severity)]
    lines = [line.encode() for line in b.sorted_lines()]
    expected = {
        f.finding_id: msgspec.to_builtins(f) for f in engine_findings(settings, stages, lines)
    }
    assert expected and all(f["evidence"]["series"]["t"] for f in expected.values())
    run = run_partitioned(settings, stages, lines, Topics("t", 2), chunk=100)
    assert run.duplicates > 0
    assert {i: msgspec.to_builtins(f) for i, f in run.found.items()} == expected


def test_a_target_state_pickled_before_the_record_still_judges_as_before() -> None:
    """A model pickled before `ForcedBaseline` is a plain `PriorCountBaseline`: it loads
    and finds the same, without a series. And the record is not a field of
    `PriorCountBaseline`, whose subclass `EngagementBaseline` pickles its fields by
    position: one added to the base would come before the subclass's own."""
    settings = load_settings()
    stage = ForcedFollowStage(settings.detectors.forced_follow, settings.severity)
    fresh = stage.new_model()
    assert isinstance(fresh, ForcedBaseline) and fresh.recent is None
    fields = msgspec.structs.fields
    old = PriorCountBaseline(*[getattr(fresh, f.name) for f in fields(PriorCountBaseline)])
    old = pickle.loads(pickle.dumps(old))
    assert [f.name for f in fields(ForcedBaseline)] == [
        *(f.name for f in fields(PriorCountBaseline)),
        "recent",
    ]
    assert "recent" not in {f.name for f in fields(PriorCountBaseline)}
    assert [f.name for f in fields(EngagementBaseline)][-2:] == ["accounts_per_event", "recent"]

    b = StreamBuilder()
    for i in range(30):
        b.add("follow", T0 + i * 1_000, f"v{i}", target="t", origin="api", consent=True)
    events = [decoder.decode(line.encode()) for line in b.sorted_lines()]
    start, end = T0, T0 + WINDOW
    found_new = stage.evaluate("t", fresh, [stage.fold(events)], start, end)
    found_old = stage.evaluate("t", old, [stage.fold(events)], start, end)
    (new,), (was,) = found_new, found_old
    assert new.evidence["series"] == {"t": [end], "value": [30], "expected": [0.0]}
    assert "series" not in was.evidence and not hasattr(old, "recent")
    assert {k: v for k, v in new.evidence.items() if k != "series"} == was.evidence
    assert (new.finding_id, new.score) == (was.finding_id, was.score)
    again = pickle.loads(pickle.dumps(fresh))
    assert isinstance(again, ForcedBaseline) and again.recent == fresh.recent
