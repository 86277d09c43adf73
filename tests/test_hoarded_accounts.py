"""`hoarded_accounts`: the accounts of a registration batch that then stay dormant are
one group finding after the dormancy period, through two derived streams (batch ->
accounts -> source); a batch whose accounts start acting is not; both runtimes agree."""

from __future__ import annotations

import pytest

from models.dormancy import DormancyWatch, Watched
from pipeline.contract.findings import Finding
from pipeline.core.derived import Derived, check_stream_order
from pipeline.core.settings import ConfigError, load_settings
from pipeline.detectors import build_stages
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder
from tests.stage_partitions import runtimes_agree
from tests.test_batch_registration import _batch, _people

SETTINGS = load_settings(overrides={"kafka": {"partitions": 2}})
CHAIN = ("batch_registration", "hoarded_watch", "hoarded_accounts")


def _stages() -> list:
    return [s for s in build_stages(SETTINGS) if s.detector in CHAIN]


def _run(lines: list[str]) -> list[Finding]:
    engine = Engine(SETTINGS, stages=_stages())
    found: list[Finding] = []
    for i in range(0, len(lines), 2000):
        found += engine.process([x.encode() for x in lines[i : i + 2000]], "t").findings
    return found + engine.finish().findings


def _world(seed: int) -> StreamBuilder:
    b = StreamBuilder(seed=seed)
    _people(b, T0, T0 + 7 * HOUR, per_hour=200)  # newcomers who act at once
    return b


def _act(b: StreamBuilder, accounts: list[str], start: int, share: float) -> list[str]:
    """A `share` of `accounts` follow someone within the hour from `start`."""
    active = [a for a in accounts if b.rng.random() < share]
    for a in active:
        b.add("follow", start + b.rng.randrange(HOUR), a, target="creator9", origin="user")
    return active


def test_a_batch_left_dormant_is_one_group_finding_after_the_dormancy_period() -> None:
    b = _world(seed=11)
    hosts = [f"203.0.113.{h}" for h in range(10, 60)]
    batch = _batch(b, T0 + HOUR, 150, 6 * MINUTE, hosts, devices=3, tag="bot")
    woke = _act(b, batch, T0 + HOUR + 20 * MINUTE, share=0.1)  # a few are used
    found = _run(b.sorted_lines())
    hoarded = [f for f in found if f.detector == "hoarded_accounts"]
    assert len(hoarded) == 1
    f = hoarded[0]
    assert f.subject_type == "group" and f.subject_id == "net:203.0.113" and f.article == "18(8)"
    assert set(f.members) == set(batch) - set(woke)  # the dormant ones, exactly
    cfg = SETTINGS.detectors.hoarded_accounts
    registered = [x for x in found if x.detector == "batch_registration"]
    assert f.ts >= max(x.ts for x in registered) + cfg.dormancy_ms  # after the period
    assert f.ts <= max(x.ts for x in registered) + cfg.dormancy_ms + cfg.check_every_ms
    e = f.evidence
    assert e["batch_size"] == len(batch) and e["dormant"] == len(batch) - len(woke)
    assert set(e["batch_findings"]) == {x.finding_id for x in registered}
    assert f.score >= max(x.score for x in registered)  # dormancy adds to the burst


def test_a_batch_that_starts_acting_is_not_hoarded_but_still_a_batch() -> None:
    b = _world(seed=12)
    batch = _batch(b, T0 + HOUR, 120, 5 * MINUTE, ["198.51.100.4"], devices=2, tag="farm")
    _act(b, batch, T0 + HOUR + 10 * MINUTE, share=0.8)  # switched on for a campaign
    found = _run(b.sorted_lines())
    assert {f.detector for f in found} == {"batch_registration"}


def test_acting_before_the_verdict_on_the_batch_counts_as_acting() -> None:
    """Accounts that acted in the minutes between registering and their batch's finding,
    in an earlier window of the watch: remembered when the events tell their age."""
    b = _world(seed=13)
    early, late = [], []
    for i in range(100):  # 15 register and act first, the surge that makes it a batch later
        at = T0 + HOUR - 4 * MINUTE + i * 8_000 if i < 15 else T0 + HOUR + 60_000 + i * 1_500
        name = f"quick{i}"
        b.add("register", at, name, ip="198.51.100.4", device_id=f"dev{i % 2}")
        (early if i < 15 else late).append(name)
        if i < 15:
            b.add("click", at + 20_000, name, target="creator9", content_id="p1",
                  actor_created_at=at)  # fmt: skip
    found = _run(b.sorted_lines())
    batch = [f for f in found if f.detector == "batch_registration"]
    assert set(early) <= {m for f in batch for m in f.members}  # named in the batch
    hoarded = [f for f in found if f.detector == "hoarded_accounts"]
    assert len(hoarded) == 1 and set(hoarded[0].members) == set(late)


def _emulated(b: StreamBuilder, at: int, n: int, tag: str) -> list[str]:
    """`n` accounts registered within minutes through two addresses, each on a device of
    its own: as many devices as accounts, like people behind a carrier NAT."""
    return _batch(b, at, n, 8 * MINUTE, ["198.51.100.7", "198.51.100.8"], 100_000, tag)


def test_a_burst_on_a_device_per_account_that_stays_inactive_is_flagged_within_the_hour() -> None:
    """No batch finding (its devices look like people's), but its accounts are watched as
    a suspected burst: nearly all inactive after suspect_dormancy_ms is a batch."""
    b = _world(seed=16)
    burst = _emulated(b, T0 + 10 * MINUTE, 120, "emu")  # a campaign already under way
    _act(b, burst, T0 + 20 * MINUTE, share=0.05)  # a few are used, some after the verdict
    found = _run(b.sorted_lines())
    assert not [f for f in found if f.detector == "batch_registration"]
    hoarded = [f for f in found if f.detector == "hoarded_accounts"]
    assert hoarded and {f.subject_id for f in hoarded} == {"net:198.51.100"}
    named = {m for f in hoarded for m in f.members}
    assert named <= set(burst) and len(named) >= 0.9 * len(burst)
    cfg = SETTINGS.detectors.hoarded_accounts
    first = min(hoarded, key=lambda f: f.ts)
    assert first.ts <= T0 + 18 * MINUTE + cfg.suspect_dormancy_ms + 2 * cfg.check_every_ms
    e = first.evidence
    assert e["suspected_bursts"] and e["batch_findings"] == []
    assert e["dormancy_s"] == cfg.suspect_dormancy_ms // 1000


def test_a_burst_on_a_device_per_account_whose_people_act_is_not_flagged() -> None:
    """A carrier's promotion: the same burst, but most sign-ups act, as people do; a
    quarter idle is not enough (suspect_dormant_share)."""
    b = _world(seed=17)
    burst = _emulated(b, T0 + 10 * MINUTE, 120, "promo")
    _act(b, burst, T0 + 12 * MINUTE, share=0.75)
    assert _run(b.sorted_lines()) == []


def test_stage_partitions_find_what_the_engine_finds() -> None:
    b = _world(seed=14)
    batch = _batch(b, T0 + HOUR, 150, 6 * MINUTE, ["203.0.113.5", "203.0.113.6"], 3, "bot")
    _act(b, batch, T0 + 2 * HOUR, share=0.2)
    _emulated(b, T0 + 3 * HOUR, 100, "emu")  # and a suspected burst that stays inactive
    lines = [x.encode() for x in b.sorted_lines()]
    run = runtimes_agree(SETTINGS, _stages(), lines, Topics("t", 2))
    hoarded = [f for f in run.found.values() if f.detector == "hoarded_accounts"]
    assert any(f.evidence["batch_findings"] for f in hoarded)
    assert any(f.evidence["suspected_bursts"] for f in hoarded)


def test_the_watch() -> None:
    why = Watched("g", "net:x", 1_000, 2, 0.9, 50_000)
    watch = DormancyWatch()
    watch.learn("early", 2_000)  # acted after registering, before being watched
    watch.watch("early", why)
    watch.watch("b", why)
    watch.learn("b", 500)  # before its registration: not a sign of life of this account
    watch.watch("c", why, max_watched=1)  # full: refused, and counted
    assert set(watch.watched) == {"b"} and watch.dropped == 1
    assert watch.due(49_999, lookback_ms=10_000) == []
    assert watch.recent == {}  # forgotten after the lookback
    assert [a for a, _ in watch.due(50_000, lookback_ms=10_000)] == ["b"]
    assert watch.watched == {}


def test_stream_order_and_settings_are_checked() -> None:
    stages = _stages()
    check_stream_order(stages)
    with pytest.raises(ValueError, match="hoarded_watch consumes"):
        check_stream_order([stages[1], stages[0]])
    assert Derived(stream="s", key="k", ts=1, event_id="e").type == "derived"
    where = "hoarded_accounts"
    with pytest.raises(ConfigError, match="check_every_ms"):
        load_settings(overrides={"detectors": {where: {"dormancy_ms": 60_000}}})
    with pytest.raises(ConfigError, match="activity_types"):
        load_settings(overrides={"detectors": {where: {"activity_types": ["dance"]}}})
    with pytest.raises(ConfigError, match="suspect_dormancy_ms"):
        load_settings(overrides={"detectors": {where: {"suspect_dormancy_ms": 60_000}}})
    with pytest.raises(ConfigError, match="min_dormant_share"):
        load_settings(overrides={"detectors": {where: {"min_dormant_share": 0}}})
    off = load_settings(overrides={"detectors": {"batch_registration": {"enabled": False}}})
    assert not {s.detector for s in build_stages(off)} & set(CHAIN)  # nothing to watch


def test_only_events_that_can_matter_are_routed_to_the_watch() -> None:
    """Activity of long-established accounts cannot be a sign of life of a batch member:
    the distributed runtime leaves it out of hoarded_watch's topic (Stage.admits)."""
    from pipeline.distributed.runtime import Ingest, decode_batch

    watch = next(s for s in _stages() if s.detector == "hoarded_watch")
    b = StreamBuilder(seed=15)
    young = [f"new{i}" for i in range(5)]
    for i, account in enumerate(young):
        b.add("follow", T0 + i, account, target="creator9", actor_created_at=T0 - MINUTE)
    for i in range(5):  # accounts registered a year before they act
        b.add("follow", T0 + i, f"old{i}", target="creator9", actor_created_at=T0 - 365 * 24 * HOUR)
    ingest = Ingest(SETTINGS, [watch], Topics("t", 2))
    raws = [x.encode() for x in b.sorted_lines()]
    admitted = ingest.admit("in:0", raws, list(range(len(raws))))
    routed = [
        e.actor
        for _, _, record in ingest.pack([admitted], ingest.busy("in:0"), max_events=100)
        for e in decode_batch(record).events
    ]
    assert sorted(routed) == sorted(young)
