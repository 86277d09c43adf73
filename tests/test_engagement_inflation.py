"""`engagement_inflation`: a click farm (few devices and addresses, accounts clicking one item
again and again) is flagged, on a new post and on an established one; a viral item, a carrier
NAT and clients that send no device or address are not, however large the volume."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest

from models.engagement import sources_per_extra_event
from models.prior_baseline import PriorCountBaseline
from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.core.stage import KeyedRunner, KeyState
from pipeline.detectors.engagement_inflation import EngagementInflationStage, OwnerModel
from pipeline.embedded.engine import Engine
from tests.helpers import (
    HOUR,
    MINUTE,
    T0,
    StreamBuilder,
    replay_three_ways,
)

WINDOW = 5 * MINUTE  # config/lockstep.yaml: detectors.engagement_inflation.window_ms
_OCTETS = (1, 14, 27, 36, 39, 42, 49, 58, 59, 60, 61, 101, 106, 110, 112, 113, 114, 115, 116)


def _home_ip(rng: random.Random) -> str:
    """An address in one of tens of thousands of /24 networks."""
    octets = (rng.choice(_OCTETS), rng.randrange(256), rng.randrange(256), rng.randrange(2, 255))
    return ".".join(map(str, octets))


def _organic(
    b: StreamBuilder,
    item: str,
    owner: str,
    start: int,
    end: int,
    per_window: float,
    prefix: str = "fan",
    ip: str | None = None,
    with_sources: bool = True,
) -> None:
    """Clicks (some reposts and comments) by different people, each on their own phone and,
    unless `ip` is given, their own home network: a Poisson process of `per_window`."""
    ts = start
    while True:
        ts += int(b.rng.expovariate(per_window / WINDOW)) + 1
        if ts >= end:
            return
        person = f"{prefix}{b.rng.randrange(10**8)}"
        kind = b.rng.choices(("click", "repost", "comment"), (0.9, 0.04, 0.06))[0]
        fields: dict[str, str] = {"target": owner, "content_id": item}
        if kind == "comment":
            fields["text"] = "说得好 👍"
        if with_sources:
            fields["ip"] = ip or _home_ip(b.rng)
            fields["device_id"] = f"phone-{person}"
        b.add(kind, ts, person, **fields)


def _farm(
    b: StreamBuilder,
    item: str,
    owner: str,
    start: int,
    end: int,
    clicks: int,
    accounts: int = 80,
    devices: int = 6,
    addresses: int = 3,
) -> list[str]:
    """`accounts` accounts sharing `devices` phones and `addresses` addresses in one /24
    click `item` `clicks` times, some far more often than others."""
    members = [f"farm{i}" for i in range(accounts)]
    phones = [f"farm-phone-{i}" for i in range(devices)]
    ips = [f"203.0.113.{20 + i}" for i in range(addresses)]
    zeal = [b.rng.lognormvariate(0, 0.8) for _ in members]
    for actor in b.rng.choices(members, zeal, k=clicks):
        i = members.index(actor)
        b.add(
            "click",
            start + b.rng.randrange(end - start),
            actor,
            target=owner,
            content_id=item,
            ip=ips[(i + b.rng.randrange(2)) % addresses],
            device_id=phones[(i + b.rng.randrange(2)) % devices],
        )
    return members


def _background(b: StreamBuilder, end: int, items: int = 60) -> None:
    """Other items with ordinary traffic, so the stream is not only the item under test."""
    for i in range(items):
        _organic(b, f"post{i}", f"creator{i % 20}", T0, end, per_window=1 + i % 9)


def _run(lines: list[str], **overrides: object) -> list[Finding]:
    settings = load_settings(overrides={"detectors": {"engagement_inflation": overrides}})
    stage = EngagementInflationStage(settings.detectors.engagement_inflation, settings.severity)
    engine = Engine(settings, stages=[stage])
    findings: list[Finding] = []
    for i in range(0, len(lines), 2000):
        findings += engine.process([line.encode() for line in lines[i : i + 2000]], "t").findings
    return findings + engine.finish().findings


def test_click_farm_on_a_new_post_is_flagged_with_its_accounts(tmp_path: Path) -> None:
    b = StreamBuilder(seed=3)
    _background(b, T0 + 4 * HOUR)
    farm_start = T0 + 2 * HOUR + 3 * MINUTE
    b.add("click", farm_start - 9 * MINUTE, "fan1", target="shop", content_id="promo")  # new
    members = _farm(b, "promo", "shop", farm_start, farm_start + HOUR, clicks=3000)
    findings = _run(b.sorted_lines())

    assert findings and {f.subject_id for f in findings} == {"promo"}
    first = min(findings, key=lambda f: f.window_end)
    assert first.window_end - farm_start <= 2 * WINDOW
    assert first.detector == "engagement_inflation" and first.article == "12"
    assert first.subject_type == "content" and first.severity in ("high", "critical")
    assert set(first.members) <= set(members) and len(first.members) >= 10
    ev = first.evidence
    assert ev["owner"] == "shop" and ev["clicks"] == ev["events"] >= 50
    assert ev["distinct_devices"] <= 6 and ev["distinct_networks"] == 1
    assert ev["max_per_account"] >= 3 and ev["mean_per_account"] > 1.5
    assert {"devices", "networks"} <= set(ev["concentrated"])
    assert "clicks, reposts and comments" in ev["explanation"] and "devices" in ev["explanation"]
    # the farm runs an hour: it never becomes the item's normal
    assert len(findings) >= 11
    # named accounts cover the farm, and the list is capped by config
    assert len({m for f in findings for m in f.members}) >= 0.9 * len(members)
    capped = _run(b.sorted_lines(), max_members=5)
    assert max(len(f.members) for f in capped) == 5


def test_click_farm_on_an_established_busy_post_is_flagged() -> None:
    b = StreamBuilder(seed=4)
    _background(b, T0 + 5 * HOUR)
    _organic(b, "hit", "star", T0, T0 + 5 * HOUR, per_window=150)
    farm_start = T0 + 3 * HOUR
    members = _farm(b, "hit", "star", farm_start, farm_start + 40 * MINUTE, clicks=1200)
    findings = _run(b.sorted_lines())
    assert findings and {f.subject_id for f in findings} == {"hit"}
    assert min(f.window_start for f in findings) >= farm_start - WINDOW
    assert max(f.window_end for f in findings) <= farm_start + 40 * MINUTE + WINDOW
    # the farm is a minority of the item's traffic, and still names mostly farm accounts
    named = [m for f in findings for m in f.members]
    assert sum(m in members for m in named) >= 0.8 * len(named)


def test_a_farm_of_many_accounts_clicking_once_or_twice_a_window_is_flagged() -> None:
    """150 accounts on 45 phones behind 6 addresses, each clicking the post once every
    five minutes: per window every click is a new account, but three accounts to a
    phone is no crowd of people (max_devices_per_account)."""
    b = StreamBuilder(seed=8)
    _background(b, T0 + 2 * HOUR)
    start = T0 + 5 * MINUTE  # already under way as the stream begins
    members = [f"farm{i}" for i in range(150)]
    for k in range(12 * len(members)):
        i = k % len(members)
        ts = start + k // len(members) * WINDOW + b.rng.randrange(WINDOW)
        b.add("click", ts, members[i], target="shop", content_id="promo",
              ip=f"203.0.113.{20 + i % 6}", device_id=f"farm-phone-{i % 45}")  # fmt: skip
    findings = _run(b.sorted_lines())
    assert findings and {f.subject_id for f in findings} == {"promo"}
    first = min(findings, key=lambda f: f.window_end)
    assert first.window_end - start <= 2 * WINDOW
    ev = first.evidence
    assert ev["new_sources_per_extra_event"]["accounts"] > 0.5  # no account repeats
    assert ev["new_sources_per_extra_event"]["devices"] > 0.25  # nor a device, per click
    assert ev["devices_per_account"] <= 0.7 and {"devices", "networks"} <= set(ev["concentrated"])
    assert set(first.members) <= set(members)
    without = _run(b.sorted_lines(), max_devices_per_account=0)  # per click only
    assert "promo" not in {f.subject_id for f in without}  # the post itself: networks alone


def test_viral_post_is_not_flagged_however_large() -> None:
    b = StreamBuilder(seed=5)
    _background(b, T0 + 4 * HOUR)
    _organic(b, "viral", "creator", T0, T0 + 4 * HOUR, per_window=4)
    for k, per_window in enumerate((300, 1500, 4000, 4000, 2500, 1200, 600, 300)):
        start = T0 + 2 * HOUR + k * WINDOW
        _organic(b, "viral", "creator", start, start + WINDOW, per_window, prefix="crowd")
    assert _run(b.sorted_lines()) == []


def test_carrier_nat_users_clicking_normally_are_not_flagged() -> None:
    """Hundreds of people behind one carrier NAT address, each on their own phone: they
    click many different items, and some crowd onto one local post, once each."""
    b = StreamBuilder(seed=6)
    nat = "117.136.8.41"
    people = [f"nat{i}" for i in range(400)]
    _background(b, T0 + 4 * HOUR)
    for person in people:
        for _ in range(12):
            item = f"post{b.rng.randrange(60)}"
            ts = T0 + b.rng.randrange(4 * HOUR)
            device = f"phone-{person}"
            b.add("click", ts, person, target="c", content_id=item, ip=nat, device_id=device)
    local = T0 + 2 * HOUR
    for person in people[:300]:  # a local news post: one NAT, 300 people, once each
        ts = local + b.rng.randrange(WINDOW)
        b.add("click", ts, person, target="news", content_id="local", ip=nat, device_id=person)
    assert _run(b.sorted_lines()) == []


def test_clients_without_device_or_address_do_not_look_like_one_phone() -> None:
    b = StreamBuilder(seed=7)
    _background(b, T0 + 3 * HOUR)
    start = T0 + 2 * HOUR
    _organic(b, "old", "creator", start, start + 3 * WINDOW, 800, with_sources=False)
    assert _run(b.sorted_lines()) == []


def test_findings_are_deterministic_and_survive_small_disorder(tmp_path: Path) -> None:
    b = StreamBuilder(seed=8)
    _background(b, T0 + 3 * HOUR)
    _farm(b, "promo", "shop", T0 + 2 * HOUR, T0 + 2 * HOUR + 30 * MINUTE, clicks=1500)
    ordered = b.sorted_lines()
    runs = [
        sorted((f["finding_id"], f["subject_id"], f["members"]) for f in found)
        for found in replay_three_ways(tmp_path, ordered, "engagement_inflation")
    ]
    assert runs[0] and runs[0] == runs[1] == runs[2]


def test_sources_per_extra_event() -> None:
    # a farm: 160 events where 6 are usual, from 10 devices
    assert sources_per_extra_event(10, 160, 160, 6.0) == pytest.approx(4 / 154)
    # a crowd: almost every extra event brings a new source
    assert sources_per_extra_event(880, 900, 900, 10.0) > 0.95
    # a sample of the first 100 of 1000 events is scaled up
    assert sources_per_extra_event(95, 100, 1000, 10.0) > 0.9
    # people who usually click an item twice are a crowd at 0.5 accounts per event
    assert sources_per_extra_event(250, 500, 500, 100.0, usual=0.5) == pytest.approx(1.0)
    # nothing extra: nothing to explain
    assert sources_per_extra_event(1, 5, 5, 10.0) == 1.0
    # 55 events over an owner's usual 32, 36 devices where about 30 come with the usual
    # volume: 6 new for 23 extra looks concentrated; within the noise of the usual it is not
    assert sources_per_extra_event(36, 55, 55, 32.0, usual=0.95) < 0.3
    assert sources_per_extra_event(36, 55, 55, 32.0, usual=0.95, margin_sd=1.0) > 0.5
    assert sources_per_extra_event(36, 55, 55, 32.0, usual=0.95, margin_sd=2.0) > 0.7
    # a farm inside a busy owner's total: 81 events over its usual 40 from 50 accounts
    # stays concentrated within one deviation of the usual, but not within two
    assert sources_per_extra_event(50, 81, 81, 40.0, margin_sd=1.0) < 0.45
    assert sources_per_extra_event(50, 81, 81, 40.0, margin_sd=2.0) > 0.5
    # a farm on a fresh post (one event expected) is as concentrated with the margin
    assert sources_per_extra_event(5, 241, 241, 1.0, margin_sd=2.0) < 0.03


def test_prior_baseline_judges_the_first_window_and_can_forget_or_adopt() -> None:
    b = PriorCountBaseline.starting_at(1.0, alpha=0.05, warmup=0, z_scale=3.0)
    assert b.update(0, 200) > 0.9 and b.expected == pytest.approx(1.0)
    b.forget_last()
    assert b.update(1, 200) > 0.9  # forgotten: still judged against the prior
    quiet = PriorCountBaseline.starting_at(1.0, alpha=0.05, warmup=0, z_scale=3.0)
    quiet.update(0, 200)
    quiet.adopt(200)  # an ordinary busy item: that is its normal now
    assert quiet.update(1, 210) < 0.5
    late = PriorCountBaseline.starting_at(0.0, warmup=2)
    assert late.update(0, 50) == 0.0 and late.update(1, 50) == 0.0 and late.observed == 2


def test_per_key_state_survives_pickling_and_judges_like_the_whole_window() -> None:
    """The distributed runtime keeps a pane per owner in a table (pickled) and judges one
    owner's window at a time: it finds exactly what the embedded whole-window runner does."""
    settings = load_settings()
    stage = EngagementInflationStage(settings.detectors.engagement_inflation, settings.severity)
    b = StreamBuilder(seed=9)
    _background(b, T0 + 2 * HOUR, items=20)
    _farm(b, "promo", "shop", T0 + HOUR, T0 + HOUR + 20 * MINUTE, clicks=1000)
    lines = [line.encode() for line in b.sorted_lines()]
    engine = Engine(settings, stages=[stage])
    whole = engine.process(lines, "t").findings + engine.finish().findings

    runner = KeyedRunner(stage)
    gate = Engine(settings, stages=[]).gate
    admitted = gate.admit(lines, "t")
    per_key: list[Finding] = []
    for kind in ("click", "repost", "comment"):
        runner.add_batch(admitted.by_type[kind])
    state: KeyState = runner.store["shop"]  # keyed by the owner
    copy = pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    assert copy.panes == state.panes and copy.model == state.model
    assert isinstance(copy.model, OwnerModel)
    per_key = runner.flush()
    assert whole and sorted(f.finding_id for f in whole) == sorted(f.finding_id for f in per_key)
    assert [f.members for f in sorted(whole, key=lambda f: f.finding_id)] == [
        f.members for f in sorted(per_key, key=lambda f: f.finding_id)
    ]


def test_a_farm_spread_thinly_over_an_owners_posts_is_flagged_on_the_owner() -> None:
    """A hundred posts of one account, each clicked fewer times a window than any item alert
    needs: only the owner's total is abnormal, and it is concentrated."""
    b = StreamBuilder(seed=10)
    _background(b, T0 + 4 * HOUR)
    posts = [f"shop/p{i}" for i in range(100)]
    for post in posts:
        _organic(b, post, "shop", T0, T0 + 4 * HOUR, per_window=0.5)
    farm_start = T0 + 2 * HOUR
    members = [f"farm{i}" for i in range(60)]
    for i in range(6000):  # 20 minutes: ~15 clicks a post a window, < min_events each
        actor = members[i % 60]
        b.add(
            "click",
            farm_start + b.rng.randrange(20 * MINUTE),
            actor,
            target="shop",
            content_id=posts[i % 100],
            ip=f"203.0.113.{i % 4}",
            device_id=f"farm-phone-{i % 5}",
        )
    findings = _run(b.sorted_lines())
    owner = [f for f in findings if f.subject_type == "account"]
    assert owner and {f.subject_id for f in owner} == {"shop"}
    assert {f.subject_id for f in findings} <= {"shop", *posts}
    assert min(f.window_end for f in owner) - farm_start <= 2 * WINDOW
    assert {m for f in findings for m in f.members} <= set(members)
    assert "this account's content" in owner[0].evidence["explanation"]


def test_a_busy_owner_with_many_ordinary_posts_is_not_flagged() -> None:
    """A big account whose many posts each get steady organic traffic, and a day where one
    of them goes viral: neither the items nor the owner are flagged."""
    b = StreamBuilder(seed=12)
    for i in range(30):
        _organic(b, f"star/p{i}", "star", T0, T0 + 4 * HOUR, per_window=20 + i)
    for k, per_window in enumerate((400, 2000, 3000, 1500, 600)):
        start = T0 + 3 * HOUR + k * WINDOW
        _organic(b, "star/p3", "star", start, start + WINDOW, per_window, prefix="crowd")
    assert _run(b.sorted_lines()) == []


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="sample_events"):
        load_settings(overrides={"detectors": {"engagement_inflation": {"sample_events": 10}}})
    with pytest.raises(ConfigError, match="min_signals"):
        load_settings(overrides={"detectors": {"engagement_inflation": {"min_signals": 4}}})
