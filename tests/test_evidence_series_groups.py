"""`evidence.series` of the detectors that judge groups, rings, messages, batches and
drips: each finding charts the windows its key judged, ending at its own count and the
level (baseline or bar) it was judged against; the record is bounded by the detector's
`series_points` (0 leaves the field out, and changes nothing else), and it is key state,
so it survives pickling and the distributed runtime gives the same chart."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import msgspec
import pytest

from models.recent_windows import remember
from pipeline.contract.findings import Finding
from pipeline.core.settings import Settings, load_settings
from pipeline.detectors import build_stages
from pipeline.detectors.duplicate_content import TextsModel
from pipeline.detectors.hoarded_accounts import SourceChart
from pipeline.detectors.lockstep_group import TargetModel
from pipeline.detectors.lockstep_ring import Ring
from pipeline.detectors.silent_followers import SilentMemory
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0
from tests.stage_partitions import run_partitioned
from tests.test_batch_registration import _batch
from tests.test_duplicate_content import SPAM
from tests.test_duplicate_content import World as Texts
from tests.test_hoarded_accounts import _act
from tests.test_hoarded_accounts import _world as _sign_ups
from tests.test_lockstep_group import World as Reposts
from tests.test_silent_followers import Platform

DEFAULTS = load_settings()
GROUPS = DEFAULTS.detectors.lockstep_group
CHAINS = {
    "lockstep_group": ("lockstep_group",),
    "lockstep_ring": ("lockstep_group", "lockstep_buckets", "lockstep_ring"),
    "duplicate_content": ("duplicate_content",),
    "hoarded_accounts": ("batch_registration", "hoarded_watch", "hoarded_accounts"),
    "silent_followers": ("follower_jump", "follower_activity", "silent_followers"),
}
# where each detector's bound is set: lockstep_ring's is a ring_* field of lockstep_group
KNOB = {name: (name, "series_points") for name in CHAINS}
KNOB["lockstep_ring"] = ("lockstep_group", "ring_series_points")


def _settings(detector: str, points: int | None = None) -> Settings:
    block, field = KNOB[detector]
    overrides: dict[str, Any] = {"kafka": {"partitions": 2}}
    if points is not None:
        overrides["detectors"] = {block: {field: points}}
    return load_settings(overrides=overrides)


def _stages(settings: Settings, detector: str) -> list:
    return [s for s in build_stages(settings) if s.detector in CHAINS[detector]]


def _found(settings: Settings, detector: str, lines: list[bytes]) -> list[Finding]:
    """In batches small enough for the watermark to move, and idle keys to be evicted
    (`event_time.eviction_interval_ms`), many times over each stream."""
    engine = Engine(settings, stages=_stages(settings, detector))
    found: list[Finding] = []
    for i in range(0, len(lines), 200):
        found += engine.process(lines[i : i + 200], "t").findings
    found += engine.finish().findings
    return sorted((f for f in found if f.detector == detector), key=lambda f: (f.ts, f.finding_id))


# The streams: one each, with a finding that has windows of its key before it.


def _ring_on_one_account() -> list[bytes]:
    """A repost ring on each new post of one creator, among passers-by."""
    w = Reposts(seed=7)
    w.background(T0, T0 + 6 * HOUR, per_hour=2000)
    w.ring("c9", members=60, posts=6, start=T0 + HOUR)
    return [x.encode() for x in w.lines()]


def _ring_across_accounts() -> list[bytes]:
    """A ring hired by one shop after another, one post each, growing half-way: reported
    when found and again once grown, under one subject."""
    w = Reposts(seed=21)
    w.background(T0, T0 + 7 * HOUR, per_hour=2000)
    for k in range(8):
        posted = T0 + HOUR + k * 30 * MINUTE + w.rng.randrange(5 * MINUTE)
        for i in range(50 if k < 4 else 80):
            if w.rng.random() < 0.9:
                delay = min(int(w.rng.lognormvariate(11.5, 0.7)), 15 * MINUTE)
                w.repost(posted + delay, f"hired{i}", f"shop{k}", f"shop{k}-launch")
    return [x.encode() for x in w.lines()]


LOANS = "Best loans with no credit check, apply in five minutes and get cash"
AIRDROP = "Free crypto airdrop today only, claim your tokens at example dot com now"


def _copy_paste_campaigns() -> list[bytes]:
    """A template the platform types all day; two campaigns in one window (40 and 25
    accounts), a third two windows later."""
    w = Texts(1)
    w.chatter(T0, T0 + 4 * HOUR)
    w.template(T0, T0 + 4 * HOUR, "my mom would love this, saving it for later", 2.5)
    w.copy_paste(T0 + 3 * HOUR, 14 * MINUTE, bots=40, message=SPAM)
    w.copy_paste(T0 + 3 * HOUR, 14 * MINUTE, bots=25, message=AIRDROP)
    w.copy_paste(T0 + 3 * HOUR + 30 * MINUTE, 14 * MINUTE, bots=30, message=LOANS)
    return w.lines()


def _hoarding_twice() -> list[bytes]:
    """One /24 registers a batch, a few of which act, then another batch hours later."""
    b = _sign_ups(seed=11)
    hosts = [f"203.0.113.{h}" for h in range(10, 60)]
    first = _batch(b, T0 + HOUR, 150, 6 * MINUTE, hosts, devices=3, tag="bot")
    _act(b, first, T0 + HOUR + 20 * MINUTE, share=0.1)
    _batch(b, T0 + 4 * HOUR, 120, 6 * MINUTE, hosts, devices=3, tag="more")
    return [x.encode() for x in b.sorted_lines()]


def _silent_drip() -> list[bytes]:
    """Aged accounts that do nothing but follow, at a steady rate, among readers."""
    p = Platform(seed=2, readers=1500)
    p.reading(T0, T0 + 6 * HOUR, clicks_per_hour=3000, target="mid")
    p.drip("mid", T0 + 3 * HOUR, per_hour=150, hours=2, busy=False)
    return p.lines()


def _hoarded_bar(f: Finding) -> float:
    cfg = DEFAULTS.detectors.hoarded_accounts
    return max(cfg.min_dormant, cfg.min_dormant_share * f.evidence["batch_size"])


def _silent_bar(f: Finding) -> float:
    cfg = DEFAULTS.detectors.silent_followers
    if f.evidence["kind"] == "settled":  # followers a case left to settle: as it is said again
        assert f.evidence["bar"] in (1, cfg.renotify_new)  # (1: the input ended)
        return f.evidence["bar"]
    fewest = cfg.min_silent if f.evidence["kind"] == "follow_up" else cfg.min_silent_alone
    bar = max(fewest, cfg.min_silent_share * f.evidence["established_follows"])
    assert f.evidence["bar"] >= round(bar, 2)  # and above the platform's share, by z
    return f.evidence["bar"]


class Case(msgspec.Struct, frozen=True):
    """A detector's stream, its finding's own count, and the level it was judged at."""

    stream: Callable[[], list[bytes]]
    count: Callable[[Finding], float]
    level: Callable[[Finding], float]
    hop_ms: int  # the steps of a chart's `t` are multiples of this
    few: int = 3  # a bound shorter than some of its charts


CASES = {
    "lockstep_group": Case(
        _ring_on_one_account,
        lambda f: f.evidence["members"],
        lambda f: GROUPS.min_members,
        GROUPS.window_ms,
    ),
    "lockstep_ring": Case(
        _ring_across_accounts,
        lambda f: f.evidence["members"],
        lambda f: GROUPS.min_members,
        GROUPS.window_ms,
    ),
    "duplicate_content": Case(
        _copy_paste_campaigns,
        lambda f: f.evidence["accounts"],
        lambda f: f.evidence["expected_accounts"],
        DEFAULTS.detectors.duplicate_content.hop_ms,
    ),
    "hoarded_accounts": Case(
        _hoarding_twice,
        lambda f: f.evidence["dormant"],
        _hoarded_bar,
        DEFAULTS.detectors.hoarded_accounts.check_every_ms,
        few=1,  # its charts: a point per batch, two at most here
    ),
    "silent_followers": Case(
        _silent_drip,
        lambda f: f.evidence["silent"],
        _silent_bar,
        DEFAULTS.detectors.follower_jump.hop_ms,
    ),
}
_streams: dict[str, list[bytes]] = {}


def _stream(detector: str) -> list[bytes]:
    if detector not in _streams:
        _streams[detector] = CASES[detector].stream()
    return _streams[detector]


@pytest.mark.parametrize("detector", sorted(CASES))
def test_a_finding_charts_its_keys_judged_windows_up_to_its_own_count(detector: str) -> None:
    case = CASES[detector]
    found = _found(_settings(detector), detector, _stream(detector))
    assert found, f"{detector} found nothing"
    limit = getattr(getattr(DEFAULTS.detectors, KNOB[detector][0]), KNOB[detector][1])
    for f in found:
        series = f.evidence["series"]
        t, value, expected = series["t"], series["value"], series["expected"]
        assert len(t) == len(value) == len(expected) <= limit
        assert t[-1] == f.window_end  # it ends at the finding's own window,
        assert value[-1] == case.count(f)  # at its own count
        assert expected[-1] == round(case.level(f), 2)  # and the level it was judged at
        steps = [b - a for a, b in pairwise(t)]
        assert all(s > 0 and s % case.hop_ms == 0 for s in steps)  # judged windows, in order
    # the record is the key's: a later finding of a subject shows the earlier ones' points
    # (the window's largest, where one window made several: duplicate_content)
    charted = 0
    for i, later in enumerate(found):
        points = dict(zip(*(later.evidence["series"][k] for k in ("t", "value")), strict=True))
        for earlier in found[:i]:
            if earlier.window_end not in points or earlier.window_end == later.window_end:
                continue
            peers = [  # the findings of the same key in that window
                g
                for g in found
                if g.window_end == earlier.window_end
                and (detector == "duplicate_content" or g.subject_id == later.subject_id)
            ]
            if earlier in peers:
                assert points[earlier.window_end] == max(case.count(g) for g in peers)
                charted += 1
    assert charted, f"no {detector} finding charts an earlier one"


def test_lockstep_group_charts_the_accounts_regroupings_from_before_the_ring() -> None:
    found = _found(_settings("lockstep_group"), "lockstep_group", _stream("lockstep_group"))
    first = found[0].evidence["series"]
    assert len(first["t"]) > 5 and set(first["value"][:-1]) == {0}  # no group yet, then it
    assert set(first["expected"]) == {GROUPS.min_members}


def test_one_window_of_two_campaigns_charts_each_its_own_cluster() -> None:
    found = _found(_settings("duplicate_content"), "duplicate_content", _copy_paste_campaigns())
    ends = sorted({f.window_end for f in found})
    assert len(ends) == 2  # the two campaigns together, then the third
    pair = [f for f in found if f.window_end == ends[0]]
    assert sorted(f.evidence["accounts"] for f in pair) == [25, 40]
    a, b = (f.evidence["series"] for f in pair)
    assert {k: v[:-1] for k, v in a.items()} == {k: v[:-1] for k, v in b.items()}  # same past
    (later,) = [f for f in found if f.window_end == ends[1]]
    at = later.evidence["series"]["t"].index(ends[0])
    assert later.evidence["series"]["value"][at] == 40  # that window's largest is kept
    # before the campaigns, the template: judged every window, near what is expected of it
    before = [
        (v, x)
        for t, v, x in zip(*a.values(), strict=True)
        if t < ends[0] and x > 0  # past the warm-up, when texts like it are known
    ]
    assert len(before) >= 6 and all(abs(v - x) < 0.5 * x for v, x in before)


def test_a_source_hoarding_again_charts_both_batches() -> None:
    found = _found(_settings("hoarded_accounts"), "hoarded_accounts", _hoarding_twice())
    assert len(found) == 2 and found[0].subject_id == found[1].subject_id
    series = found[1].evidence["series"]
    assert series["t"] == [f.window_end for f in found]  # its windows with verdicts only
    assert series["value"] == [f.evidence["dormant"] for f in found]
    assert series["expected"] == [_hoarded_bar(f) for f in found]


@pytest.mark.parametrize("detector", sorted(CASES))
def test_series_points_bounds_the_chart_and_zero_leaves_it_out(detector: str) -> None:
    lines, n = _stream(detector), CASES[detector].few
    full = {f.finding_id: f for f in _found(_settings(detector), detector, lines)}
    few = {f.finding_id: f for f in _found(_settings(detector, n), detector, lines)}
    bare = {f.finding_id: f for f in _found(_settings(detector, 0), detector, lines)}
    assert full.keys() == few.keys() == bare.keys()  # the chart changes no finding
    assert any(len(f.evidence["series"]["t"]) > n for f in full.values())  # the bound bites
    for i, f in full.items():
        assert few[i].evidence["series"] == {k: v[-n:] for k, v in f.evidence["series"].items()}
        assert "series" not in bare[i].evidence
        assert {k: v for k, v in f.evidence.items() if k != "series"} == bare[i].evidence
        assert (bare[i].members, bare[i].score) == (f.members, f.score)


@pytest.mark.parametrize("detector", ["hoarded_accounts", "lockstep_ring", "silent_followers"])
def test_the_distributed_runtime_gives_the_same_charts(detector: str) -> None:
    """The record is key state the distributed runtime pickles into its tables after each
    record and reads back after a crash: the same findings, to the last point."""
    settings = _settings(detector)
    lines = _stream(detector)
    expected = {f.finding_id: msgspec.to_builtins(f) for f in _found(settings, detector, lines)}
    assert expected and all("series" in f["evidence"] for f in expected.values())
    run = run_partitioned(settings, _stages(settings, detector), lines, Topics("t", 2))
    assert run.duplicates > 0
    there = {i: msgspec.to_builtins(f) for i, f in run.found.items() if f.detector == detector}
    assert there == expected


def test_the_records_pickle_and_state_pickled_before_them_loads() -> None:
    record = remember(remember(None, T0, 3, 1.5, points=48), T0 + MINUTE, 9, 2.0, points=48)
    models: list[Any] = [
        TargetModel(recent=record),
        Ring({}, {"a": 3}, 1, T0, recent=record),
        TextsModel(recent=record),
        SourceChart(recent=record),
    ]
    for model in models:
        again = pickle.loads(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        assert again.recent == record
    memory = SilentMemory()
    judged = [(T0, "a", True, 0.2, "d1", "10.0.0.1", 0, 3.5)]
    memory.judged, memory.recent = list(judged), record
    memory.started = [(T0 + 1, "c", "d2", "10.0.0.2")]
    memory.platform = [(T0 + 2, "p", True, 0.2, "d1", "", 0, 3.0)]
    memory.pending, memory.settled = {"a": (T0, 0.8)}, {"a": (T0, False), "z": (T0, True)}
    again = pickle.loads(pickle.dumps(memory, protocol=pickle.HIGHEST_PROTOCOL))
    assert (again.judged, again.recent) == (judged, record)
    assert again.started == memory.started and again.platform == memory.platform
    assert (again.pending, again.settled) == (memory.pending, memory.settled)
    old = SilentMemory.__new__(SilentMemory)  # (follows, facts), as pickled before the chart
    old.__setstate__(([(T0, "b")], [(T0, "b", {"device": "d"})]))
    assert old.judged == [(T0, "b", True, None, "", "", None, None)] and old.recent is None
    assert old.started == [] and old.platform == []
    # a struct pickled before its record: its fields, positionally, without the last
    cls, fields = Ring({}, {}, 0, T0).__reduce__()
    assert cls(*fields[:-1]).recent is None
