"""`edge_burst`: follower bursts on any account, in constant memory, the same in both
runtimes. A burst of fresh accounts on a never-seen account is flagged with its members;
an organic viral crowd and a busy account's daily rhythm are not; state is one sketch per
shard however many accounts are followed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from models import EdgeBurst
from pipeline.contract.events import Follow
from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.core.stage import KeyedRunner
from pipeline.detectors import build_stages
from pipeline.detectors.edge_burst import EdgeBurstStage
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, daily_rhythm, replay_three_ways
from tests.stage_partitions import runtimes_agree

DAY = 24 * HOUR
ON = {"enabled": True}  # whatever the defaults, these tests run edge_burst
SETTINGS = load_settings(overrides={"kafka": {"partitions": 2}, "detectors": {"edge_burst": ON}})
TICK = SETTINGS.detectors.edge_burst.tick_ms


class World:
    """Accounts with an organic audience: established users on their own devices and
    networks following a few hundred accounts of Zipf-like popularity."""

    def __init__(self, seed: int) -> None:
        self.b = StreamBuilder(seed=seed)
        self.rng = random.Random(seed)
        self.n = 0

    def follow(self, ts: int, target: str, young: bool = False, net: str = "", device: str = ""):
        self.n += 1
        r = self.rng
        age = r.randrange(HOUR, DAY) if young else r.randrange(200 * DAY, 2000 * DAY)
        ip = f"{net}.{r.randrange(1, 255)}" if net else f"10.{r.randrange(256)}.{self.n % 256}.7"
        actor = f"p{self.n}"
        self.b.add(
            "follow", ts, actor, target=target, origin="user", consent=True,
            actor_created_at=ts - age, ip=ip, device_id=device or f"d{self.n}",
        )  # fmt: skip
        return actor

    def background(self, start: int, end: int, accounts: int = 300, per_hour: float = 3000):
        weights = [1.0 / (i + 1) ** 1.1 for i in range(accounts)]
        ts = start
        while True:
            ts += int(self.rng.expovariate(per_hour / HOUR)) + 1
            if ts >= end:
                return
            target = self.rng.choices(range(accounts), weights)[0]
            self.follow(ts, f"acct{target}")

    def bought(self, target: str, start: int, count: int, span_ms: int) -> set[str]:
        """Fresh accounts from a few /24s and a handful of devices."""
        bots = set()
        for i in range(count):
            ts = start + self.rng.randrange(span_ms)
            net, device = f"198.51.{100 + i % 3}", f"farm{i % 8}"
            bots.add(self.follow(ts, target, young=True, net=net, device=device))
        return bots

    def lines(self) -> list[bytes]:
        return [line.encode() for line in self.b.sorted_lines()]


def _engine_findings(lines: list[bytes], settings=SETTINGS) -> list[Finding]:
    engine = Engine(settings)
    return engine.process(lines, "test").findings + engine.finish().findings


def _mine(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.detector == "edge_burst"]


def test_a_bought_burst_on_a_never_seen_account_is_flagged_with_its_members() -> None:
    w = World(seed=1)
    w.background(T0, T0 + 3 * HOUR)
    start = T0 + 2 * HOUR + 17_000
    bots = w.bought("newbie", start, count=300, span_ms=3 * MINUTE)
    found = _engine_findings(w.lines())
    mine = _mine(found)
    assert mine and {f.subject_id for f in mine} == {"newbie"}
    first = min(mine, key=lambda f: f.window_end)
    assert first.window_end - start <= 2 * TICK
    assert first.article == "12" and first.subject_type == "account"
    assert first.evidence["young_share"] == 1.0 and first.evidence["expected"] < 1.0
    named = {m for f in mine for m in f.members}
    assert named == bots  # every bot, and no organic follower
    # follower_jump has no history of "newbie" to expect a number from: it judges the
    # window on who the followers are, so it names the same burst on its own grounds
    jumps = [f for f in found if f.detector == "follower_jump" and f.subject_id == "newbie"]
    assert jumps and all("judged on who" in f.evidence["explanation"] for f in jumps)


def test_an_organic_viral_crowd_is_not_flagged_however_large() -> None:
    w = World(seed=2)
    w.background(T0, T0 + 3 * HOUR)
    start = T0 + 2 * HOUR
    for i in range(6000):  # 6,000 established, diverse fans in 20 minutes: 300 a tick
        w.follow(start + i * 200, "star")
    for i in range(400):  # and a never-seen account's first post goes viral
        w.follow(start + i * 300, "newcomer")
    assert _mine(_engine_findings(w.lines())) == []


def test_a_busy_account_with_a_daily_rhythm_is_not_flagged() -> None:
    b = StreamBuilder(seed=3)  # followers without ages, addresses or devices: only the
    for i in range(5):  # score can keep these quiet, the composition cannot
        b.poisson_follows(f"steady{i}", T0, T0 + 26 * HOUR, daily_rhythm(300 * (i + 1), 0.2))
    lines = [line.encode() for line in b.sorted_lines()]
    assert len(lines) > 100_000
    assert _mine(_engine_findings(lines)) == []


def test_replays_in_order_again_and_shuffled_give_the_same_findings(tmp_path: Path) -> None:
    w = World(seed=4)
    w.background(T0, T0 + 2 * HOUR)
    w.bought("newbie", T0 + 70 * MINUTE, count=200, span_ms=2 * MINUTE)
    w.bought("shop", T0 + 95 * MINUTE, count=150, span_ms=4 * MINUTE)
    runs = replay_three_ways(tmp_path, w.b.sorted_lines(), "edge_burst")
    assert runs[0] and {f["subject_id"] for f in runs[0]} == {"newbie", "shop"}
    assert runs[0] == runs[1] == runs[2]


def test_state_is_one_sketch_per_shard_whatever_the_number_of_accounts() -> None:
    stage = EdgeBurstStage(SETTINGS.detectors.edge_burst, SETTINGS.severity)
    runner = KeyedRunner(stage)
    events = [
        Follow(event_id=f"e{i}", ts=T0 + i * 60, actor=f"u{i % 977}", target=f"acct{i}")
        for i in range(50_000)
    ]
    for at in range(0, len(events), 5000):
        runner.add_batch(events[at : at + 5000])
        runner.advance(events[at].ts)
    runner.flush()
    assert len(runner.store) == stage.shards == SETTINGS.detectors.edge_burst.shards
    assert all(not s.panes for s in runner.store.values())  # ticks are transient
    keys = [stage.key_of(e) for e in events[:2000]]
    assert set(keys) == set(runner.store)  # every shard in use: the hash spreads targets
    assert len(set(keys)) == stage.shards


def test_the_distributed_stage_finds_what_the_engine_finds_despite_redelivery() -> None:
    w = World(seed=5)
    w.background(T0, T0 + 3 * HOUR)
    bots = w.bought("newbie", T0 + 2 * HOUR, count=300, span_ms=3 * MINUTE)
    lines = w.lines()
    stages = [s for s in build_stages(SETTINGS) if s.detector == "edge_burst"]
    topics = Topics("t", 2)
    run = runtimes_agree(SETTINGS, stages, lines, topics, chunk=1000, max_events=300)
    found, table = run.found, run.tables["edge_burst"]
    assert {m for f in found.values() for m in f.members} == bots
    assert {k for k in table} <= {f"edge_burst/{i}" for i in range(stages[0].shards)}
    assert {topics.partition_of(k) for k in table} == {0, 1}  # shards spread over partitions


def test_a_destination_is_judged_alone_whatever_the_order_of_its_tick() -> None:
    scores = []
    for order in (1, -1):
        m = EdgeBurst(rows=2, buckets=512, decay=0.9, seed=3, warmup=2)
        for t in range(10):
            m.update_many([f"u{i}" for i in range(50)], [f"v{i % 25}" for i in range(50)], [t] * 50)
        src = ["spree"] * 100 + [f"bot{i}" for i in range(80)]  # one source following 100
        dst = [f"w{i}" for i in range(100)] + ["v3"] * 80  # ... and 80 new followers of v3
        per_event = m.update_many(src[::order], dst[::order], [10] * 180, raw=True)[::order]
        scores.append((m.destination_burst("v3"), m.destination_burst("w7")))
    assert scores[0] == scores[1]
    (count, expected, raw), (_, _, spree_target) = scores[0]
    assert count >= 80 and expected < 3 and raw > 100  # z > 10
    # the spree is the source's burst (its events score high), not each target's
    assert per_event[:100].max() > 100 and spree_target < 4


@pytest.mark.parametrize(
    "bad", [{"shards": 0}, {"tick_ms": 0}, {"decay": 1.0}, {"threshold": 1.5}, {"buckets": 0}]
)
def test_invalid_settings_are_rejected_with_a_clear_error(bad: dict) -> None:
    with pytest.raises(ConfigError, match=r"detectors\.edge_burst"):
        load_settings(overrides={"detectors": {"edge_burst": bad}})
