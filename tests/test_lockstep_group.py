"""`lockstep_group`: a repost ring working one account's posts is one group finding naming
its members; a viral post, fans who come back to every post, overlapping fan bases and a
carrier NAT are not; both runtimes and any small disorder give the same findings; state
stays bounded."""

from __future__ import annotations

import pickle
import random

import pytest

from models.lockstep import Round, lockstep_groups, rounds
from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.core.stage import KeyedRunner
from pipeline.detectors import build_stages
from pipeline.detectors.lockstep_group import LockstepGroupStage
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, shuffle_within
from tests.stage_partitions import run_partitioned

ONLY = {
    name: {"enabled": name == "lockstep_group"}
    for name in ("follower_jump", "engagement_inflation", "forced_follow", "edge_burst")
}
SETTINGS = load_settings(
    overrides={
        "kafka": {"partitions": 2},
        "detectors": {**ONLY, "lockstep_group": {"enabled": True}},
    }
)
CFG = SETTINGS.detectors.lockstep_group


class World:
    """Accounts reposting the posts of a few hundred creators, each post from a different
    passer-by at a scattered time, on their own addresses."""

    def __init__(self, seed: int) -> None:
        self.b = StreamBuilder(seed=seed)
        self.rng = random.Random(seed)

    def repost(self, ts: int, actor: str, creator: str, post: str, ip: str = "") -> None:
        ip = ip or f"10.{self.rng.randrange(256)}.{self.rng.randrange(256)}.9"
        self.b.add("repost", ts, actor, target=creator, content_id=post, ip=ip)

    def background(self, start: int, end: int, per_hour: float = 6000, creators: int = 300):
        weights = [1.0 / (i + 1) for i in range(creators)]
        ts = start
        while True:
            ts += int(self.rng.expovariate(per_hour / HOUR)) + 1
            if ts >= end:
                return
            c = self.rng.choices(range(creators), weights)[0]
            post = f"c{c}-p{(ts - T0) // (40 * MINUTE)}"  # a new post every 40 min
            self.repost(ts, f"u{self.rng.randrange(10**6)}", f"c{c}", post)

    def ring(self, creator: str, members: int, posts: int, start: int, join: float = 0.85):
        """`members` accounts repost each of `posts` new posts of `creator`, 40 min apart,
        within minutes of it (most members, not all, each time)."""
        ring = [f"ring-{creator}-{i}" for i in range(members)]
        for k in range(posts):
            posted = start + k * 40 * MINUTE + self.rng.randrange(5 * MINUTE)
            for m in ring:
                if self.rng.random() < join:
                    delay = min(int(self.rng.lognormvariate(11.5, 0.7)), 15 * MINUTE)
                    self.repost(posted + delay, m, creator, f"{creator}-post{k}")
        return set(ring)

    def lines(self) -> list[str]:
        return self.b.sorted_lines()


def _found(lines: list[str] | list[bytes], settings=SETTINGS) -> list[Finding]:
    engine = Engine(settings)
    raws = [x.encode() if isinstance(x, str) else x for x in lines]
    found = engine.process(raws, "test").findings + engine.finish().findings
    return [f for f in found if f.detector == "lockstep_group"]


def test_rounds_split_on_gaps_and_span_whatever_the_order() -> None:
    actions = [(0, "a"), (60_000, "b"), (90_000, "c"), (900_000, "d"), (910_000, "e")]
    for order in (actions, actions[::-1]):
        got = rounds("p", order, gap_ms=120_000, max_span_ms=600_000)
        assert [sorted(r.actors) for r in got] == [["a", "b", "c"], ["d", "e"]]
    long = [(i * 60_000, f"x{i}") for i in range(30)]  # a steady trickle: cut by max span
    assert [len(r.actors) for r in rounds("p", long, 120_000, 600_000)] == [11, 11, 8]


def test_rounds_of_one_item_never_make_a_group_alone() -> None:
    crew = frozenset(f"a{i}" for i in range(20))  # the same crowd on one item, again and again
    slots = [Round("p", k * 10**6, k * 10**6 + 1, crew) for k in range(5)]
    kw = dict(min_shared=5, link_share=0.4, member_share=0.5, min_members=10)
    assert lockstep_groups(slots, min_items=3, **kw) == []
    slots += [Round("q", 9 * 10**6, 9 * 10**6 + 1, crew), Round("r", 10**7, 10**7 + 1, crew)]
    (group,) = lockstep_groups(slots, min_items=3, **kw)
    assert set(group.joined) == crew and all(n == 3 for n in group.joined.values())


def test_a_repost_ring_is_one_group_naming_its_members() -> None:
    w = World(seed=1)
    w.background(T0, T0 + 6 * HOUR)
    ring = w.ring("c40", members=80, posts=5, start=T0 + 90 * MINUTE)
    found = _found(w.lines())
    assert found, "the ring was not found"
    assert len({f.subject_id for f in found}) == 1  # one group, reported as it grew
    assert all(f.subject_type == "group" and f.article == "18(4)" for f in found)
    named = {m for f in found for m in f.members}
    assert named <= ring  # no passer-by
    assert len(named) >= 0.9 * len(ring)
    first = min(found, key=lambda f: f.ts)
    assert first.evidence["target"] == "c40" and first.evidence["items"] >= CFG.min_items
    assert first.ts <= T0 + 90 * MINUTE + 3 * 40 * MINUTE + 30 * MINUTE  # by its 3rd round
    last = max(found, key=lambda f: f.ts)
    assert sum(last.evidence["members_by_items_joined"].values()) == last.evidence["members"]
    assert all(r["members"] <= r["actors"] for r in last.evidence["rounds"])


def test_a_group_larger_than_its_listed_members_is_not_reported_again_and_again() -> None:
    w = World(seed=7)
    w.background(T0, T0 + 6 * HOUR, per_hour=2000)
    ring = w.ring("c9", members=150, posts=6, start=T0 + HOUR)
    few = load_settings(
        overrides={"detectors": {**ONLY, "lockstep_group": {"enabled": True, "max_members": 40}}}
    )
    found = _found(w.lines(), few)
    assert found and {m for f in found for m in f.members} <= ring
    assert all(len(f.members) == 40 and f.evidence["members"] > 100 for f in found)
    assert len({f.subject_id for f in found}) == 1
    assert len(found) <= 6  # at most a report per round, not one per window


def test_click_rings_are_seen_when_clicks_are_looked_at() -> None:
    w = World(seed=8)
    w.background(T0, T0 + 5 * HOUR, per_hour=2000)
    ring = w.ring("c11", members=40, posts=4, start=T0 + HOUR)
    clicks = [line.replace('"type": "repost"', '"type": "click"') for line in w.lines()]
    assert _found(clicks) == []  # reposts only, by default
    on = {**ONLY, "lockstep_group": {"enabled": True, "actions": ["click", "repost"]}}
    found = _found(clicks, load_settings(overrides={"detectors": on}))
    named = {m for f in found for m in f.members}
    assert named <= ring and len(named) >= 0.9 * len(ring)


def test_a_viral_post_is_one_round_not_a_group() -> None:
    w = World(seed=2)
    w.background(T0, T0 + 4 * HOUR)
    start = T0 + 2 * HOUR
    for i in range(4000):  # 4,000 people repost one post within 20 minutes
        w.repost(start + i * 300, f"fan{i}", "c3", "c3-viral")
    for k in range(4):  # each of its next posts draws a crowd too, a third of them back
        for i in range(300):  # from the viral one (so its rounds share ~100 accounts)
            fan = f"fan{w.rng.randrange(4000)}" if i % 3 == 0 else f"new{k}-{i}"
            w.repost(start + (k + 1) * 30 * MINUTE + i * 2000, fan, "c3", f"c3-next{k}")
    assert _found(w.lines()) == []


def test_fans_coming_back_to_every_post_and_overlapping_fan_bases_are_no_group() -> None:
    w = World(seed=3)
    w.background(T0, T0 + 8 * HOUR)
    shared = [f"both{i}" for i in range(600)]  # fans of both stars
    fans = {
        "starA": shared + [f"a{i}" for i in range(1400)],
        "starB": shared + [f"b{i}" for i in range(1400)],
    }
    for star, base in fans.items():
        for k in range(8):  # a post an hour; 10% of the fans repost it within 30 minutes
            posted = T0 + HOUR + k * HOUR
            for fan in w.rng.sample(base, len(base) // 10):
                w.repost(posted + w.rng.randrange(30 * MINUTE), fan, star, f"{star}-{k}")
    loyal = [f"loyal{i}" for i in range(40)]  # and 40 loyal fans repost every post of starA,
    for k in range(8):  # at their own times of the day
        for fan in loyal:
            ts = T0 + HOUR + k * HOUR + w.rng.randrange(5 * HOUR)
            w.repost(ts, fan, "starA", f"starA-{k}")
    assert _found(w.lines()) == []


def test_a_carrier_nat_is_no_group() -> None:
    """Accounts sharing an address are not acting in step: addresses are no evidence here."""
    w = World(seed=4)
    w.background(T0, T0 + 6 * HOUR)
    nat = "100.64.7.9"  # 300 phones behind one address, reposting what they like
    for i in range(3000):
        c = w.rng.randrange(50)
        ts = T0 + w.rng.randrange(6 * HOUR)
        w.repost(ts, f"phone{i % 300}", f"c{c}", f"c{c}-p{(ts - T0) // (40 * MINUTE)}", ip=nat)
    assert _found(w.lines()) == []


def test_disorder_and_the_distributed_runtime_change_nothing() -> None:
    w = World(seed=5)
    w.background(T0, T0 + 5 * HOUR, per_hour=3000)
    ring = w.ring("c7", members=60, posts=4, start=T0 + HOUR, join=0.9)
    lines = w.lines()
    expected = {f.finding_id: f for f in _found(lines)}
    assert expected and {m for f in expected.values() for m in f.members} <= ring
    assert set(f.finding_id for f in _found(shuffle_within(lines, 20_000))) == set(expected)

    stages = [s for s in build_stages(SETTINGS) if s.detector == "lockstep_group"]
    topics = Topics("t", 2)
    run = run_partitioned(SETTINGS, stages, [x.encode() for x in lines], topics, chunk=1000)
    assert run.duplicates > 0
    assert set(run.found) == set(expected)
    assert all(run.found[i].members == expected[i].members for i in expected)


def test_state_is_bounded_by_the_horizon_the_cap_and_the_ttl() -> None:
    cfg = CFG.__class__(**{**{f: getattr(CFG, f) for f in CFG.__struct_fields__},
                           "max_actions": 500})  # fmt: skip
    stage = LockstepGroupStage(cfg, SETTINGS.severity)
    w = World(seed=6)
    w.background(T0, T0 + 10 * HOUR, per_hour=20000, creators=5)  # a few very busy accounts
    runner = KeyedRunner(stage)
    events = _decode(w.lines())
    for at in range(0, len(events), 5000):
        runner.add_batch(events[at : at + 5000])
        runner.advance(events[at].ts)
        for state in runner.store.values():
            m = state.model
            assert m.actions == sum(map(len, m.items.values())) <= cfg.max_actions
            assert all(ts >= events[at].ts - cfg.horizon_ms - cfg.window_ms
                       for mine in m.items.values() for ts, _ in mine)  # fmt: skip
            assert len(pickle.dumps(m)) < 60 * cfg.max_actions  # ~30 bytes an action
    runner.flush()
    assert runner.evict_idle(events[-1].ts + cfg.idle_ttl_ms + 2 * cfg.window_ms) == 5
    assert len(runner.store) == 0


def test_accounts_whose_items_never_draw_a_crowd_keep_no_state() -> None:
    w = World(seed=9)
    for i in range(2000):  # 2,000 accounts, one repost each on one of their posts
        w.repost(T0 + i * 5_000, f"u{i}", f"quiet{i}", f"quiet{i}-p")
    ring = w.ring("c5", members=30, posts=3, start=T0 + 10 * MINUTE)
    engine = Engine(SETTINGS)
    found = engine.process([x.encode() for x in w.lines()], "t").findings
    found += engine.finish().findings
    assert {m for f in found for m in f.members} <= ring and found
    assert engine.state_size()["lockstep_group"] == 1  # only the ring's account


def _decode(lines: list[str]) -> list:
    from pipeline.contract.events import decoder

    return [decoder.decode(line) for line in lines]


@pytest.mark.parametrize(
    "bad",
    [
        {"actions": []},
        {"horizon_ms": 60_000},
        {"min_items": 1},
        {"link_share": 0.0},
        {"member_share": 1.5},
        {"idle_ttl_ms": 1000},
    ],
)
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ConfigError, match="lockstep_group"):
        load_settings(overrides={"detectors": {"lockstep_group": bad}})
