"""`silent_followers`: in a follower jump that `follower_jump` flags, the established new
followers who had shown no other activity anywhere lately are named (a slow drip of
aged, diverse, bought accounts, which nothing else tells apart); followers who do click,
repost and comment elsewhere are not; the platform's own follows and fresh accounts are
not judged; both runtimes agree."""

from __future__ import annotations

import pickle
import random

import msgspec
import pytest

from models.activity import RecentActivity
from models.network import network_of
from pipeline.contract.events import decoder
from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.core.window_runner import StoreModels
from pipeline.detectors import build_stages
from pipeline.detectors.case_evidence import MAX_MEMBER_FACTS
from pipeline.detectors.silent_followers import FollowerActivityStage, SilentMemory
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder
from tests.stage_partitions import engine_findings, run_partitioned, runtimes_agree

DAY = 24 * HOUR
SETTINGS = load_settings(overrides={"kafka": {"partitions": 2}})
CHAIN = ("follower_jump", "follower_activity", "silent_followers")


class Platform:
    """Readers who click around (a few hundred posts of a few dozen accounts) and follow
    an account now and then after clicking its post; `drip` adds outside followers."""

    def __init__(self, seed: int, readers: int = 3000) -> None:
        self.b = StreamBuilder(seed=seed)
        self.rng = random.Random(seed)
        self.readers = [f"r{i}" for i in range(readers)]

    def _follow(self, ts: int, actor: str, target: str, **extra: object) -> None:
        age = self.rng.randrange(200 * DAY, 2000 * DAY)
        self.b.add(
            "follow", ts, actor, target=target, origin="user", consent=True,
            actor_created_at=ts - age, ip=f"10.{self.rng.randrange(256)}.{len(actor)}.7",
            device_id=f"d-{actor}", **extra,
        )  # fmt: skip

    def reading(self, start: int, end: int, clicks_per_hour: float, target: str) -> None:
        """Clicks on everybody's posts; `target` draws a share, and some of its readers
        follow it."""
        ts = start
        while True:
            ts += int(self.rng.expovariate(clicks_per_hour / HOUR)) + 1
            if ts >= end:
                return
            reader = self.rng.choice(self.readers)
            owner = target if self.rng.random() < 0.3 else f"creator{self.rng.randrange(40)}"
            self.b.add("click", ts, reader, target=owner, content_id=f"{owner}-post")
            if owner == target and self.rng.random() < 0.04:
                self._follow(ts + 1_000, reader, target)

    def drip(self, target: str, start: int, per_hour: int, hours: int, busy: bool) -> set[str]:
        """Aged accounts from diverse addresses follow `target` at a steady rate; `busy`
        ones click other posts before they follow."""
        accounts = set()
        for i in range(per_hour * hours):
            ts = start + i * HOUR // per_hour
            actor = f"drip{i}"
            if busy:
                self.b.add("click", ts - 20 * MINUTE, actor, target="creator1",
                           content_id="creator1-post")  # fmt: skip
            self._follow(ts, actor, target)
            accounts.add(actor)
        return accounts

    def lines(self) -> list[bytes]:
        return [x.encode() for x in self.b.sorted_lines()]


def _stages() -> list:
    return [s for s in build_stages(SETTINGS) if s.detector in CHAIN]


def _run(lines: list[bytes]) -> list[Finding]:
    engine = Engine(SETTINGS, stages=_stages())
    found: list[Finding] = []
    for i in range(0, len(lines), 2000):
        found += engine.process(lines[i : i + 2000], "t").findings
    return found + engine.finish().findings


def _world(seed: int, busy: bool) -> tuple[list[bytes], set[str]]:
    p = Platform(seed)
    p.reading(T0, T0 + 9 * HOUR, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + 4 * HOUR, per_hour=150, hours=4, busy=busy)
    return p.lines(), drip


def test_a_drip_of_accounts_that_only_follow_is_named() -> None:
    lines, drip = _world(seed=1, busy=False)
    found = _run(lines)
    jumps = [f for f in found if f.detector == "follower_jump"]
    silent = [f for f in found if f.detector == "silent_followers"]
    assert jumps and all(f.members == [] for f in jumps)  # the drip alone: named by nobody
    assert silent and {f.subject_id for f in silent} == {"mid"}
    named = {m for f in silent for m in f.members}
    assert named <= drip  # no reader, however new a follower, is accused
    assert len(named) >= 100
    first = silent[0]
    assert first.evidence["follower_jump_finding"] in {f.finding_id for f in jumps}
    assert (
        first.evidence["silent_share"] >= 0.5
        and "no other activity" in (first.evidence["explanation"])
    )


def test_a_drip_of_followers_active_elsewhere_names_nobody() -> None:
    lines, _ = _world(seed=1, busy=True)
    found = _run(lines)
    assert any(f.detector == "follower_jump" for f in found)  # the volume is still abnormal
    assert not [f for f in found if f.detector == "silent_followers"]


def test_both_runtimes_name_the_same_silent_followers() -> None:
    p = Platform(seed=2, readers=1500)
    p.reading(T0, T0 + 7 * HOUR, clicks_per_hour=3000, target="mid")
    p.drip("mid", T0 + 3 * HOUR, per_hour=150, hours=3, busy=False)
    run = runtimes_agree(SETTINGS, _stages(), p.lines(), Topics("t", 2))
    assert any(f.detector == "silent_followers" for f in run.found.values())


def test_recent_activity_forgets_by_generation_and_does_not_depend_on_sharding() -> None:
    seen = RecentActivity(generation_ms=10)
    seen.learn(["a"], 5)
    seen.learn(["b"], 12)
    assert seen.active("a", 12) and seen.active("b", 12) and not seen.active("c", 12)
    seen.learn(["c"], 25)  # a new generation: "a" (two back) is swept out
    assert not seen.active("a", 25) and seen.active("b", 25) and seen.active("c", 25)
    assert all("a" not in accounts for accounts in seen.generations.values())
    assert not seen.active("b", 60) and not seen.active("c", 60)  # a long silence
    halves = [RecentActivity(10), RecentActivity(10)]  # the same, split in two
    for account, ts in [("a", 5), ("b", 12), ("c", 25)]:
        halves[account == "b"].learn([account], ts)
    for account in "abcd":
        for ts in (12, 25, 31, 60):
            whole = RecentActivity(10)
            for acct, at in [("a", 5), ("b", 12), ("c", 25)]:
                whole.learn([acct], at)
            assert whole.active(account, ts) == halves[account == "b"].active(account, ts)
    for ts in (12, 25, 31, 60):  # `inactive` asks `active` of many accounts at once
        assert seen.inactive("abcd", ts) == {a for a in "abcd" if not seen.active(a, ts)}


def test_a_batch_folds_the_same_whole_as_a_type_at_a_time() -> None:
    """The embedded runtime folds a batch a type at a time (`kind`); a batch of mixed
    types folds to the same active accounts and follows."""
    from pipeline.contract.events import decoder

    stage = next(s for s in build_stages(SETTINGS) if s.detector == "follower_activity")
    p = Platform(seed=4, readers=200)
    p.reading(T0, T0 + HOUR, clicks_per_hour=2000, target="mid")
    events = [decoder.decode(line) for line in p.lines()]
    kinds = {e.type for e in events}
    assert kinds == {"click", "follow"}
    mixed = stage.fold(events)
    by_kind = None  # each type's batch folded into the pane's fold, as the runner does
    for kind in sorted(kinds):
        by_kind = stage.fold([e for e in events if e.type == kind], kind, by_kind)
    assert by_kind is not None
    assert mixed.active == by_kind.active != set()
    assert sorted(mixed.follows, key=id) == sorted(by_kind.follows, key=id)
    assert mixed.follows and all(e.type == "follow" for e in mixed.follows)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="other than follow"):
        load_settings(overrides={"detectors": {"silent_followers": {"activity_types": ["follow"]}}})
    with pytest.raises(ConfigError, match="memory_ms"):
        load_settings(overrides={"detectors": {"silent_followers": {"memory_ms": 60_000}}})


def test_follower_jump_counts_established_follows_by_the_rule_silent_followers_judges_by() -> None:
    """The share's denominator comes from follower_jump's panes, its numerator from
    follower_activity: both must call the same follows established."""
    from pipeline.contract.events import decoder
    from pipeline.detectors.silent_followers import counts_as_established

    jump = next(s for s in build_stages(SETTINGS) if s.detector == "follower_jump")
    young_ms = SETTINGS.detectors.follower_jump.young_account_ms
    b = StreamBuilder(seed=9)
    rng = random.Random(9)
    for i in range(400):
        origin = rng.choice(["user", "recommendation", "api", "import"])
        extra: dict[str, object] = {"origin": origin}
        age = rng.choice([None, HOUR, young_ms - 1, young_ms, 400 * DAY])
        if age is not None:
            extra["actor_created_at"] = T0 + i - age
        b.add("follow", T0 + i, f"f{i}", target="mid", **extra)
    follows = [decoder.decode(line.encode()) for line in b.sorted_lines()]
    pane = jump.new_pane()
    for f in follows:
        jump.add(pane, f)
    established = sum(counts_as_established(f, young_ms) for f in follows)
    assert 0 < established < len(follows)
    assert pane.user_follows - pane.young == established


def test_a_finding_describes_its_first_members_from_their_follows() -> None:
    """`evidence.member_facts`: the first 100 members, each as its earliest follow of the
    account in the flagged window says (age, network, device), carried from the
    `follower_activity` stage that saw the follows; the same through the distributed
    runtime's pickled state and redelivered records."""
    p = Platform(seed=2, readers=1500)
    p.reading(T0, T0 + 7 * HOUR, clicks_per_hour=3000, target="mid")
    p.drip("mid", T0 + 3 * HOUR, per_hour=1500, hours=1, busy=False)
    lines = p.lines()
    found = [f for f in engine_findings(SETTINGS, _stages(), lines) if f.detector == CHAIN[2]]
    assert found and max(len(f.members) for f in found) > MAX_MEMBER_FACTS  # the bound bites
    follows = sorted(
        (e for e in p.b.events if e["type"] == "follow" and e["target"] == "mid"),
        key=lambda e: (e["ts"], e["event_id"]),
    )
    for f in found:
        facts = f.evidence["member_facts"]
        assert list(facts) == f.members[:MAX_MEMBER_FACTS]  # every one of them described
        for m, known in facts.items():
            first = next(
                e for e in follows if e["actor"] == m and f.window_start <= e["ts"] < f.window_end
            )
            assert known == {
                "created_at": first["actor_created_at"],
                "network": network_of(first["ip"]),
                "device": first["device_id"],
            }
    expected = {f.finding_id: msgspec.to_builtins(f) for f in found}
    run = run_partitioned(SETTINGS, _stages(), lines, Topics("t", 2))
    assert run.duplicates > 0
    there = {i: msgspec.to_builtins(f) for i, f in run.found.items() if f.detector == CHAIN[2]}
    assert there == expected


def test_silent_memory_pickled_before_the_facts_still_loads() -> None:
    class Before:  # SilentMemory as it was: its follows only, pickled as slots
        __slots__ = ("follows",)

    old = Before()
    old.follows = [(T0, "a"), (T0 + 1, "b")]
    memory = SilentMemory.__new__(SilentMemory)
    memory.__setstate__(old.__reduce_ex__(pickle.HIGHEST_PROTOCOL)[2])
    assert memory.follows == [(T0, "a"), (T0 + 1, "b")] and memory.facts == []
    memory.facts.append((T0, "a", {"device": "d"}))
    again = pickle.loads(pickle.dumps(memory, protocol=pickle.HIGHEST_PROTOCOL))
    assert (again.follows, again.facts) == (memory.follows, memory.facts)


def test_a_silent_follow_record_carries_the_facts_of_its_first_followers_by_id() -> None:
    """What `follower_activity` hands on: each record the facts of its first
    `MAX_MEMBER_FACTS` followers by id (a finding describes its first members by id, each
    of them among the first of its own record), from their earliest follow in it."""
    one = {"warmup_ms": 0, "shards": 1}  # one record for all the followers
    cfg = load_settings(overrides={"detectors": {"silent_followers": one}})
    stage = FollowerActivityStage(cfg.detectors.silent_followers, young_ms=30 * DAY)
    b = StreamBuilder()
    for i in reversed(range(150)):
        ts = T0 + 1_000 + i * 100
        b.add("follow", ts, f"f{i:03d}", target="mid", origin="user", ip=f"10.0.{i}.1",
              actor_created_at=ts - 100 * DAY, device_id=f"d{i}")  # fmt: skip
    b.add("follow", T0 + 30_000, "f000", target="mid", origin="user", device_id="later")
    b.add("follow", T0 + 500, "f001", target="mid", origin="user")  # before, says nothing
    events = [decoder.decode(line.encode()) for line in b.sorted_lines()]
    records = stage.judge(
        [stage.fold(events)], StoreModels({}, stage.new_model, T0), T0, T0 + MINUTE
    )
    (record,) = records
    assert record.key == "mid" and len(record.data["follows"]) == 152
    described = record.data["facts"]
    assert list(described) == [f"f{i:03d}" for i in range(MAX_MEMBER_FACTS)]  # the bound
    assert described["f000"] == {
        "created_at": T0 + 1_000 - 100 * DAY,
        "network": "10.0.0",
        "device": "d0",  # its earliest follow's, not the later one's
    }
    assert described["f001"]["device"] == "d1"  # from the first follow that says
