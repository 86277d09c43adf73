"""`batch_registration`: a hundred accounts registered within minutes from one network
block (or one address, or one device) on a handful of devices are flagged as a group
naming every account; people signing up all day on their own phones, even hundreds an
hour behind one carrier NAT address, are not. Both runtimes find the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registration_burst import devices_per_registration, source_of
from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.detectors import build_stages
from pipeline.detectors.batch_registration import BatchRegistrationStage
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, replay_three_ways
from tests.stage_partitions import runtimes_agree

SECOND = 1000
ON = {"enabled": True}  # whatever the defaults, these tests run batch_registration
SETTINGS = load_settings(
    overrides={"kafka": {"partitions": 2}, "detectors": {"batch_registration": ON}}
)
NAT = "100.64.7.9"


def _run(lines: list[str], **overrides: object) -> list[Finding]:
    settings = load_settings(overrides={"detectors": {"batch_registration": overrides}})
    cfg = settings.detectors.batch_registration
    engine = Engine(settings, stages=[BatchRegistrationStage(cfg, settings.severity)])
    findings: list[Finding] = []
    for i in range(0, len(lines), 2000):
        findings += engine.process([line.encode() for line in lines[i : i + 2000]], "t").findings
    return findings + engine.finish().findings


def _people(b: StreamBuilder, start: int, end: int, per_hour: float, ip: str = "") -> list[str]:
    """Real sign-ups: each on its own phone, from its own home line unless `ip` (a
    carrier NAT) is given; each then follows and clicks around."""
    who = []
    ts = start
    while True:
        ts += int(b.rng.expovariate(per_hour / HOUR)) + 1
        if ts >= end:
            return who
        name = f"person{len(b.events)}"
        home = f"{b.rng.randrange(1, 224)}.{b.rng.randrange(256)}.{b.rng.randrange(256)}.7"
        b.add("register", ts, name, ip=ip or home, device_id=f"phone-{name}")
        b.add("follow", ts + MINUTE, name, target="creator1", ip=ip or home, origin="user")
        who.append(name)


def _batch(
    b: StreamBuilder, at: int, n: int, span: int, hosts: list[str], devices: int, tag: str
) -> list[str]:
    """`n` accounts registered within `span` from `hosts` on `devices` devices."""
    made = []
    for i in range(n):
        name = f"{tag}{i}"
        ip = hosts[b.rng.randrange(len(hosts))] if hosts else None
        device = f"{tag}-dev{b.rng.randrange(devices)}"
        b.add("register", at + b.rng.randrange(span), name, ip=ip, device_id=device)
        made.append(name)
    return made


def _world(seed: int) -> StreamBuilder:
    b = StreamBuilder(seed=seed)
    _people(b, T0, T0 + 6 * HOUR, per_hour=300)
    _people(b, T0, T0 + 6 * HOUR, per_hour=30, ip=NAT)  # a carrier's sign-ups all day,
    _people(b, T0 + 3 * HOUR, T0 + 4 * HOUR, per_hour=400, ip=NAT)  # and a promotion hour
    return b


def _named(found: list[Finding]) -> set[str]:
    return {m for f in found for m in f.members}


def test_batch_from_one_block_is_flagged_with_every_account() -> None:
    b = _world(seed=1)
    hosts = [f"203.0.113.{h}" for h in range(10, 90)]
    batch = _batch(b, T0 + 2 * HOUR, 150, 6 * MINUTE, hosts, devices=4, tag="bot")
    found = _run(b.sorted_lines())
    assert found and {f.subject_id for f in found} == {"net:203.0.113"}
    assert all(f.subject_type == "group" and f.article == "18(8)" for f in found)
    assert _named(found) == set(batch)  # every account, nobody else, each named once
    assert sum(len(f.members) for f in found) == len(batch)
    first = min(found, key=lambda f: f.ts)
    assert first.ts <= T0 + 2 * HOUR + 10 * MINUTE
    e = first.evidence
    assert e["distinct_devices"] <= 4 and e["devices_per_registration"] <= 0.25
    assert e["registrations"] >= 20 and e["span_s"] <= 6 * 60 and "explanation" in e


def test_batches_from_one_address_an_ipv6_block_or_one_device_are_flagged() -> None:
    b = _world(seed=2)
    one_ip = _batch(b, T0 + HOUR, 120, 3 * MINUTE, ["198.51.100.4"], devices=2, tag="a")
    v6 = [f"2001:db8:77:{h:x}::1" for h in range(40)]
    six = _batch(b, T0 + 2 * HOUR, 200, 8 * MINUTE, v6, devices=5, tag="b")
    no_ip = _batch(b, T0 + 4 * HOUR, 100, 5 * MINUTE, [], devices=1, tag="c")
    found = _run(b.sorted_lines())
    sources = {f.subject_id for f in found}
    assert sources == {"net:198.51.100", "net:2001:db8:77", "dev:c-dev0"}
    assert _named(found) == set(one_ip) | set(six) | set(no_ip)


def test_a_batch_from_many_addresses_of_one_block_is_flagged_whatever_its_devices() -> None:
    """Emulated phones (a device per account) do not hide a burst from dozens of hosts
    of one /24 within minutes: no NAT crowd looks like that."""
    b = _world(seed=4)
    hosts = [f"203.0.113.{h}" for h in range(10, 70)]
    batch = _batch(b, T0 + 2 * HOUR, 120, 4 * MINUTE, hosts, devices=10_000, tag="emu")
    found = _run(b.sorted_lines())
    assert {f.subject_id for f in found} == {"net:203.0.113"}
    assert _named(found) == set(batch)
    first = min(found, key=lambda f: f.ts)
    assert first.evidence["devices_per_registration"] > 0.5
    assert first.evidence["distinct_addresses"] >= 10


def test_a_batch_from_one_address_on_a_device_per_few_accounts_is_flagged() -> None:
    """Two or three accounts made on each of many devices, all through one address within
    minutes: most accounts share their device with another, which sign-ups behind a NAT
    (each person on their own phone) do not."""
    b = _world(seed=5)
    batch = _batch(b, T0 + 2 * HOUR, 200, 2 * MINUTE, ["198.51.100.9"], devices=80, tag="few")
    found = _run(b.sorted_lines())
    assert {f.subject_id for f in found} == {"net:198.51.100"}
    assert _named(found) == set(batch)
    assert 0.25 < min(found, key=lambda f: f.ts).evidence["devices_per_registration"] <= 0.5


def test_carrier_nat_and_ordinary_sign_ups_are_not_flagged() -> None:
    """Hundreds an hour behind one carrier address are far above that address's normal
    at first, but each came on its own phone."""
    b = _world(seed=3)
    assert _run(b.sorted_lines()) == []
    # with the device test off, the promotion hour behind the NAT would be a burst
    loose = _run(b.sorted_lines(), max_devices_per_registration=1.0)
    assert {f.subject_id for f in loose} == {"net:100.64.7"}


def test_a_small_group_from_one_device_is_not_a_batch() -> None:
    b = StreamBuilder(seed=4)
    _people(b, T0, T0 + 2 * HOUR, per_hour=300)
    _batch(b, T0 + HOUR, 6, 5 * MINUTE, ["192.0.2.8"], devices=1, tag="family")
    assert _run(b.sorted_lines()) == []


def test_sources_and_device_concentration() -> None:
    assert source_of("203.0.113.9", None) == source_of("203.0.113.200", "x") == "net:203.0.113"
    assert source_of("", "d") == "dev:d" and source_of(None, "") == ""
    assert devices_per_registration([]) == 1.0
    assert devices_per_registration([("a", None), ("b", None)]) == 1.0  # missing: own
    assert devices_per_registration([("a", "d"), ("b", "d"), ("c", "d"), ("e", "f")]) == 0.5


def test_stage_partitions_find_what_the_engine_finds() -> None:
    b = _world(seed=5)
    _batch(b, T0 + 2 * HOUR, 150, 6 * MINUTE, ["203.0.113.5", "203.0.113.6"], 3, "bot")
    lines = [line.encode() for line in b.sorted_lines()]
    stages = [s for s in build_stages(SETTINGS) if s.detector == "batch_registration"]
    runtimes_agree(SETTINGS, stages, lines, Topics("t", 2))


def test_findings_are_deterministic_and_survive_small_disorder(tmp_path: Path) -> None:
    b = _world(seed=6)
    batch = _batch(b, T0 + 2 * HOUR, 150, 6 * MINUTE, ["203.0.113.5"], 3, "bot")
    runs = [
        sorted((f["finding_id"], tuple(f["members"]), f["score"]) for f in found)
        for found in replay_three_ways(tmp_path, b.sorted_lines(), "batch_registration")
    ]
    assert runs[0] and runs[0] == runs[1] == runs[2]
    assert {m for _, members, _ in runs[0] for m in members} == set(batch)


def test_settings_are_checked() -> None:
    where = "batch_registration"
    with pytest.raises(ConfigError, match="window_ms"):
        load_settings(overrides={"detectors": {where: {"window_ms": 700_000}}})
    with pytest.raises(ConfigError, match="max_devices_per_registration"):
        load_settings(overrides={"detectors": {where: {"max_devices_per_registration": 0}}})
    with pytest.raises(ConfigError, match="min_registrations"):
        load_settings(overrides={"detectors": {where: {"min_registrations": 1}}})
