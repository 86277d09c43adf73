"""`follower_jump` judges who the new followers are and whether attention came with them:
a viral moment from established, diverse accounts is organic however large; a burst of
fresh accounts on shared devices is not; a steady drip of followers that the account's
engagement does not explain is a level shift; the platform's own follows never make
anyone a suspect."""

from __future__ import annotations

import random

from models import FollowSupport, network_of
from pipeline.core.settings import load_settings
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder

DAY = 24 * HOUR
SETTINGS = load_settings()


class World:
    """An account with an audience: clicks on its content and the follows they bring, from
    established users on their own devices and networks."""

    def __init__(self, seed: int) -> None:
        self.b = StreamBuilder(seed=seed)
        self.rng = random.Random(seed)
        self.n = 0

    def user(self, young: bool = False, net: str | None = None, device: str | None = None):
        self.n += 1
        r = self.rng
        age = r.randrange(HOUR, DAY) if young else r.randrange(200 * DAY, 2000 * DAY)
        ip = f"{net}.{r.randrange(1, 255)}" if net else f"10.{r.randrange(256)}.{self.n % 256}.7"
        return f"p{self.n}", age, ip, device or f"d{self.n}"

    def follow(self, ts: int, target: str, origin: str = "user", **who) -> str:
        actor, age, ip, device = self.user(**who)
        self.b.add(
            "follow", ts, actor, target=target, origin=origin, consent=True,
            actor_created_at=ts - age, ip=ip, device_id=device,
        )  # fmt: skip
        return actor

    def audience(self, target: str, start: int, end: int, clicks_per_hour: float, ratio: float):
        """Clicks at `clicks_per_hour`, and one follow per `1/ratio` clicks."""
        ts = start
        while True:
            ts += int(self.rng.expovariate(clicks_per_hour / HOUR)) + 1
            if ts >= end:
                return
            actor, *_ = self.user()
            self.b.add("click", ts, actor, target=target, content_id=f"{target}-post")
            if self.rng.random() < ratio:
                self.follow(ts, target)

    def findings(self) -> list:
        engine = Engine(SETTINGS)
        lines = [x.encode() for x in self.b.sorted_lines()]
        found = engine.process(lines, "test").findings + engine.finish().findings
        return [f for f in found if f.detector == "follower_jump"]


def test_a_viral_moment_from_established_diverse_accounts_is_not_flagged() -> None:
    w = World(seed=1)
    w.audience("star", T0, T0 + 8 * HOUR, clicks_per_hour=600, ratio=0.02)
    # 40 minutes of 30x attention and followers, converting better than usual
    w.audience("star", T0 + 5 * HOUR, T0 + 5 * HOUR + 40 * MINUTE, 18_000, ratio=0.05)
    assert w.findings() == []


def test_a_burst_of_fresh_accounts_on_shared_devices_is_flagged_and_named() -> None:
    w = World(seed=2)
    w.audience("shop", T0, T0 + 8 * HOUR, clicks_per_hour=300, ratio=0.02)
    start = T0 + 5 * HOUR
    bots = {
        w.follow(start + i * 600, "shop", young=True, net="198.51.100", device=f"farm{i % 4}")
        for i in range(250)
    }
    found = w.findings()
    assert found and {f.subject_id for f in found} == {"shop"}
    first = min(found, key=lambda f: f.ts)
    assert first.evidence["kind"] == "burst" and first.evidence["young_share"] > 0.9
    assert first.window_end - start <= 2 * SETTINGS.detectors.follower_jump.window_ms
    named = {m for f in found for m in f.members}
    assert named <= bots and len(named) >= 200  # the organic followers are not accused


def test_a_steady_drip_the_audience_does_not_explain_is_a_level_shift() -> None:
    w = World(seed=3)
    w.audience("mid", T0, T0 + 10 * HOUR, clicks_per_hour=900, ratio=0.01)
    start = T0 + 4 * HOUR
    for i in range(600):  # +100 an hour for six hours: aged accounts, diverse addresses
        w.follow(start + i * 36_000, "mid")
    found = w.findings()
    assert found and {f.subject_id for f in found} == {"mid"}
    assert {f.evidence["kind"] for f in found} == {"level_shift"}
    assert min(f.ts for f in found) - start <= 2 * HOUR
    assert all(f.members == [] for f in found)  # indistinguishable: named, not guessed
    assert "engagement explains" in found[0].evidence["explanation"]


def test_the_platforms_own_follows_make_no_one_a_suspect() -> None:
    w = World(seed=4)
    w.audience("popular", T0, T0 + 8 * HOUR, clicks_per_hour=600, ratio=0.02)
    start = T0 + 5 * HOUR
    for i in range(300):  # newcomers handed a default follow at sign-up
        w.follow(start + i * 400, "popular", origin="onboarding_default", young=True)
    assert all(f.members == [] for f in w.findings())


def test_follow_support_predicts_from_attention_and_accumulates_excess() -> None:
    s = FollowSupport(alpha=0.05, warmup=6, allowance=1.0, min_ratio=1.5)
    for _ in range(40):
        s.update(follows=10, engagement=500)
    assert s.update(follows=100, engagement=5_000) < 1.0  # 10x attention, 10x follows
    s.cusum = 0.0
    for _ in range(6):
        s.update(follows=30, engagement=500)  # three times what attention explains
    # excess windows teach the ratio only a little: the drip is not yet the normal
    assert s.predicted is not None and 10 <= s.predicted < 15
    assert s.cusum > 12


def test_network_of_groups_hosts_by_block() -> None:
    assert network_of("192.0.2.1") == network_of("192.0.2.200") == "192.0.2"
    assert network_of("2001:db8:abcd:1::1") == "2001:db8:abcd"
    assert network_of("") == network_of(None) == ""
