"""`lockstep_ring`: a ring working many accounts' posts, one round on each, is one group
finding across accounts (it never meets in one account's key, so `lockstep_group` alone
cannot see it); fans, viral posts and overlapping fan bases are not; both runtimes agree."""

from __future__ import annotations

from models.lockstep import round_signature
from pipeline.contract.findings import Finding
from pipeline.core.settings import load_settings
from pipeline.detectors import build_stages
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0
from tests.stage_partitions import runtimes_agree
from tests.test_lockstep_group import World

SETTINGS = load_settings(overrides={"kafka": {"partitions": 2}})
CHAIN = ("lockstep_group", "lockstep_buckets", "lockstep_ring")


def _stages() -> list:
    return [s for s in build_stages(SETTINGS) if s.detector in CHAIN]


def _found(lines: list[str]) -> list[Finding]:
    engine = Engine(SETTINGS, stages=_stages())
    raws = [x.encode() for x in lines]
    return engine.process(raws, "t").findings + engine.finish().findings


def _spread_ring(w: World, members: int, customers: int, start: int) -> set[str]:
    """`members` accounts repost one post of each of `customers` accounts, a customer
    every 30 min, within minutes of the post (most members each time)."""
    ring = [f"hired{i}" for i in range(members)]
    for k in range(customers):
        posted = start + k * 30 * MINUTE + w.rng.randrange(5 * MINUTE)
        for m in ring:
            if w.rng.random() < 0.85:
                delay = min(int(w.rng.lognormvariate(11.5, 0.7)), 15 * MINUTE)
                w.repost(posted + delay, m, f"shop{k}", f"shop{k}-launch")
    return set(ring)


def test_a_ring_spread_over_many_accounts_is_one_group_across_them() -> None:
    w = World(seed=21)
    w.background(T0, T0 + 7 * HOUR, per_hour=4000)
    ring = _spread_ring(w, members=80, customers=8, start=T0 + HOUR)
    found = _found(w.lines())
    assert [f for f in found if f.detector == "lockstep_group"] == []  # one round per key
    rings = [f for f in found if f.detector == "lockstep_ring"]
    assert rings, "the ring across accounts was not found"
    named = {m for f in rings for m in f.members}
    assert named <= ring and len(named) >= 0.9 * len(ring)
    assert len({f.subject_id for f in rings}) == 1  # one group, however many MinHash keys
    e = rings[0].evidence
    assert e["accounts"] >= 3 and set(e["targets"]) <= {f"shop{k}" for k in range(8)}
    assert rings[0].subject_type == "group" and rings[0].article == "18(4)"
    assert "explanation" in e


def test_fans_of_two_stars_and_a_viral_post_make_no_ring() -> None:
    w = World(seed=22)
    w.background(T0, T0 + 8 * HOUR)
    shared = [f"both{i}" for i in range(600)]
    fans = {"starA": shared + [f"a{i}" for i in range(1400)]}
    fans["starB"] = shared + [f"b{i}" for i in range(1400)]
    for star, base in fans.items():
        for k in range(8):
            posted = T0 + HOUR + k * HOUR
            for fan in w.rng.sample(base, len(base) // 10):
                w.repost(posted + w.rng.randrange(30 * MINUTE), fan, star, f"{star}-{k}")
    for i in range(3000):  # a viral post: one round, however large
        w.repost(T0 + 2 * HOUR + w.rng.randrange(20 * MINUTE), f"v{i}", "c3", "c3-viral")
    assert [f for f in _found(w.lines()) if f.detector == "lockstep_ring"] == []


def test_stage_partitions_find_what_the_engine_finds() -> None:
    w = World(seed=23)
    w.background(T0, T0 + 5 * HOUR, per_hour=2000)
    _spread_ring(w, members=50, customers=6, start=T0 + HOUR)
    lines = [x.encode() for x in w.lines()]
    run = runtimes_agree(SETTINGS, _stages(), lines, Topics("t", 2), chunk=1000)
    assert any(f.detector == "lockstep_ring" for f in run.found.values())


def test_round_signatures_meet_for_rounds_of_mostly_the_same_accounts() -> None:
    ring = [f"r{i}" for i in range(50)]
    a = round_signature([*ring[:45], "x1", "x2"], 4)
    b = round_signature([*ring[5:], "y1"], 4)
    assert len(a) == 4 and any(s == t for s, t in zip(a, b, strict=True))
    assert round_signature([f"o{i}" for i in range(50)], 4) != a  # strangers do not
    assert all(s.split("/")[0] == str(i) for i, s in enumerate(a))
