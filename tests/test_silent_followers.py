"""`silent_followers`: the established new followers who do next to nothing around their
follow, next to the platform's followers, are named when they are most of an account's
new followers (a slow drip of aged, diverse, bought accounts, which nothing else tells
apart), with or without a follower_jump flag and from a stream's first hour; followers
who do click, repost and comment are not; the platform's own follows, fresh accounts and
accounts spreading follows over many accounts are not judged; both runtimes agree."""

from __future__ import annotations

import pickle
import random
import zlib
from itertools import pairwise

import msgspec
import pytest

from models.activity import ActivityCounts
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
    """Readers who click around (posts of a few dozen accounts) and follow an account now
    and then after clicking its post; `drip` adds outside followers."""

    def __init__(self, seed: int, readers: int = 3000) -> None:
        self.b = StreamBuilder(seed=seed)
        self.rng = random.Random(seed)
        self.readers = [f"r{i}" for i in range(readers)]

    def _follow(
        self, ts: int, actor: str, target: str, device: str = "", ip: str = "", origin: str = "user"
    ) -> None:
        age = self.rng.randrange(200 * DAY, 2000 * DAY)
        home = zlib.crc32(actor.encode())  # an address of one's own
        self.b.add(
            "follow", ts, actor, target=target, origin=origin, consent=True,
            actor_created_at=ts - age, device_id=device or f"d-{actor}",
            ip=ip or f"10.{home >> 16 & 255}.{home >> 8 & 255}.{home & 255}",
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
            if self.rng.random() < 0.04:  # some readers follow the account they read
                self._follow(ts + 1_000, reader, owner)

    def drip(
        self,
        target: str,
        start: int,
        per_hour: int,
        hours: int,
        busy: bool,
        pairs: bool = False,
        proxies: bool = False,
        busy_of_four: int = 1,
        recommended_of_four: int = 0,
        clicks_each: int = 0,
    ) -> set[str]:
        """Aged accounts from diverse addresses follow `target` at a steady rate; `busy`
        ones click other posts around their follow, as often as the readers do. `pairs`:
        four accounts to a phone, `busy_of_four` of them busy; `proxies`: four to an
        address; `recommended_of_four` of each four follow as if the platform had
        suggested it; every one clicks `clicks_each` times around its follow."""
        accounts = set()
        for i in range(int(per_hour * hours)):
            ts = start + i * HOUR // per_hour
            actor = f"drip{i}"
            clicks = list(range(-60, 0, 60 // clicks_each)) if clicks_each else []
            if busy or ((pairs or proxies) and i % 4 >= 4 - busy_of_four):
                clicks = [-70, -40, -20, 5, 15, 25]
            for before in clicks:
                self.b.add("click", ts + before * MINUTE, actor, target="creator1",
                           content_id="creator1-post")  # fmt: skip
            proxy = f"203.0.{i // 1024}.{i // 4 % 256}" if proxies else ""
            origin = "recommendation" if i % 4 < recommended_of_four else "user"
            device = f"farm{i // 4}" if pairs else ""
            self._follow(ts, actor, target, device=device, ip=proxy, origin=origin)
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
    # a reader who happened to click once in the hours around its follow looks as quiet:
    # a few of them, next to hundreds of drip accounts
    assert len(named - drip) <= 0.02 * len(named)
    assert len(named & drip) >= 0.9 * len(drip)
    linked = [f for f in silent if f.evidence["kind"] == "follow_up"]
    assert linked and {f.evidence["follower_jump_finding"] for f in linked} <= {
        f.finding_id for f in jumps
    }
    # flagged again only once enough followers are new to its findings: not a finding per
    # judged window for one case
    cfg = SETTINGS.detectors.silent_followers
    for a, b in pairwise(silent):
        assert len(set(b.members) - set(a.members)) >= cfg.renotify_new
    first = silent[0]
    assert first.evidence["silent_alone_named"]  # a farm of its own phones and lines
    assert first.evidence["silent_share"] >= 0.5
    assert first.evidence["platform_silent_share"] < 0.5
    assert "of the usual follower's actions" in first.evidence["explanation"]
    assert first.window_start < first.evidence["follows_until"] < first.window_end


def test_a_drip_under_way_when_the_stream_starts_is_named_within_the_hour() -> None:
    """No history of the followed account is needed: its followers are judged against the
    platform's from the first minutes."""
    p = Platform(seed=3)
    p.reading(T0, T0 + 3 * HOUR, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0, per_hour=150, hours=3, busy=False)
    found = _run(p.lines())
    silent = [f for f in found if f.detector == "silent_followers"]
    assert silent and {f.subject_id for f in silent} == {"mid"}
    assert silent[0].ts - T0 <= HOUR and silent[0].evidence["kind"] == "composition"
    named = {m for f in silent for m in f.members}
    assert len(named - drip) <= 0.02 * len(named)
    watched_out = {f"drip{i}" for i in range(150 * 3) if i * HOUR // 150 < 2 * HOUR}
    assert len(named & watched_out) >= 0.9 * len(watched_out)


def test_followers_still_watched_when_the_input_ends_are_judged_on_what_was_seen() -> None:
    """A backtest on a slice of the logs ends while the drip goes on: its latest members,
    not watched for `observe_ms` yet, are judged on the hours seen of them, not dropped.
    (A live stream never ends: the distributed runtime judges them once watched out.)"""
    p = Platform(seed=9)
    end = T0 + 2 * HOUR
    p.reading(T0, end, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + 20 * MINUTE, per_hour=200, hours=1, busy=False)
    late = {f"late{i}" for i in range(30)}
    for i, actor in enumerate(sorted(late)):  # the latest, within the last observe_ms
        p._follow(end - 15 * MINUTE + i * 20_000, actor, "mid", device=f"farm-late{i % 8}")
    silent = [f for f in _run(p.lines()) if f.detector == "silent_followers"]
    named = {m for f in silent for m in f.members}
    assert len(named & drip) >= 0.9 * len(drip)
    assert len(named & late) >= 0.9 * len(late)
    assert len(named - drip - late) <= 0.02 * len(named)
    cfg = SETTINGS.detectors.silent_followers
    assert max(f.ts for f in silent) < end + cfg.judge_ms  # at the input's end, not after


def test_accounts_that_spread_follows_or_registered_lately_are_not_judged() -> None:
    """Accounts following dozens of accounts (churn's business) are no evidence about any
    one of them; an account seen registering is young though its follow says no age."""
    p = Platform(seed=5)
    p.reading(T0, T0 + 3 * HOUR, clicks_per_hour=6000, target="mid")
    for i in range(300):  # spreaders: 15 follows each within minutes, one of them of mid
        ts = T0 + 30 * MINUTE + i * 20_000
        for k in range(15):
            p._follow(ts + k * 5_000, f"spread{i}", "mid" if k == 7 else f"acct{k}")
    for i in range(300):  # newcomers: registered, then a follow that says no age
        ts = T0 + 30 * MINUTE + i * 20_000
        p.b.add("register", ts, f"new{i}", actor_created_at=ts)
        p.b.add("follow", ts + 30_000, f"new{i}", target="pop", origin="user")
    found = _run(p.lines())
    assert not [f for f in found if f.detector == "silent_followers"]


def test_a_drip_member_that_also_clicks_is_named_by_the_phone_it_shares() -> None:
    """Four accounts to a phone, one of them clicking as readers do: the busy one is
    not low-activity, but it followed from a device a low-activity follower used."""
    p = Platform(seed=4)
    p.reading(T0, T0 + 5 * HOUR, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + HOUR, per_hour=200, hours=3, busy=False, pairs=True)
    silent = [f for f in _run(p.lines()) if f.detector == "silent_followers"]
    assert silent and {f.subject_id for f in silent} == {"mid"}
    named = {m for f in silent for m in f.members}
    busy = {f"drip{i}" for i in range(3, 600, 4)}
    # the farm shares its phones; a quiet reader on a phone and line of its own is, among
    # the account's followers, no quieter than the platform's: not named
    assert named <= drip
    assert any(f.evidence["silent_alone"] and not f.evidence["silent_alone_named"] for f in silent)
    assert len(named & busy) >= 0.8 * len(named & (drip - busy)) / 3
    assert any(f.evidence["sharers"] for f in silent)
    assert "from a device or address one of them used" in silent[-1].evidence["explanation"]


def test_a_drip_member_that_also_clicks_is_named_by_the_proxy_it_shares() -> None:
    """The same with four accounts to a residential proxy, each on its own phone."""
    p = Platform(seed=5)
    p.reading(T0, T0 + 5 * HOUR, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + HOUR, per_hour=200, hours=3, busy=False, proxies=True)
    silent = [f for f in _run(p.lines()) if f.detector == "silent_followers"]
    named = {m for f in silent for m in f.members}
    busy = {f"drip{i}" for i in range(3, 600, 4)}
    assert named <= drip  # (the quiet readers on their own, as above)
    assert len(named & busy) >= 0.8 * len(named & (drip - busy)) / 3
    assert sum(f.evidence["sharers"] for f in silent) >= 0.8 * len(named & busy)


def test_a_drip_half_of_whose_members_click_is_flagged_by_the_phones_they_share() -> None:
    """Two of every four accounts on a phone click as readers do: the low-activity ones
    are fewer than half the account's new followers, but those sharing their phones
    count with them."""
    p = Platform(seed=6)
    p.reading(T0, T0 + 5 * HOUR, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + HOUR, per_hour=200, hours=3, busy=False, pairs=True, busy_of_four=2)
    silent = [f for f in _run(p.lines()) if f.detector == "silent_followers"]
    assert silent and {f.subject_id for f in silent} == {"mid"}
    first = min(silent, key=lambda f: f.ts)
    assert first.evidence["silent_share"] < 0.5 <= first.evidence["suspect_share"]
    named = {m for f in silent for m in f.members}
    assert len(named - drip) <= 0.02 * len(named) and len(named) >= 0.8 * len(drip)


def test_a_drip_member_whose_follow_the_platform_seems_to_have_made_is_named_by_its_phone() -> None:
    """A follow the platform made (a suggestion) is no evidence that it was bought, so a
    quiet follower that came that way counts for nothing; one on the phone of a
    low-activity follower of the account is a farm's all the same, and is named."""
    p = Platform(seed=7)
    p.reading(T0, T0 + 5 * HOUR, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + HOUR, per_hour=200, hours=3, busy=False, pairs=True,
                  busy_of_four=0, recommended_of_four=1)  # fmt: skip
    silent = [f for f in _run(p.lines()) if f.detector == "silent_followers"]
    named = {m for f in silent for m in f.members}
    suggested = {f"drip{i}" for i in range(0, 600, 4)}
    judged = {f"drip{i}" for i in range(600) if i * HOUR // 200 < 2 * HOUR + 30 * MINUTE}
    assert len(named - drip) <= 0.02 * len(named)
    assert len(named & suggested & judged) >= 0.9 * len(suggested & judged)
    first = min(silent, key=lambda f: f.ts)
    assert first.evidence["established_follows"] < len(judged)  # (the suggested: not counted)

    alone = Platform(seed=7)  # the same quiet accounts, every follow a suggestion
    alone.reading(T0, T0 + 5 * HOUR, clicks_per_hour=6000, target="mid")
    alone.drip("mid", T0 + HOUR, per_hour=200, hours=3, busy=False, pairs=True,
               busy_of_four=0, recommended_of_four=4)  # fmt: skip
    assert not [f for f in _run(alone.lines()) if f.detector == "silent_followers"]


def test_a_farm_whose_accounts_each_click_now_and_then_is_named_by_the_phones_they_share() -> None:
    """Each account clicks a couple of times around its follow: no quieter than some
    readers, but four of them on one phone, all alike, took far less than four readers
    do. Readers behind one carrier address, clicking as readers do, are not a farm."""
    p = Platform(seed=8)
    p.reading(T0, T0 + 5 * HOUR, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + HOUR, per_hour=200, hours=3, busy=False, pairs=True,
                  busy_of_four=0, clicks_each=2)  # fmt: skip
    nat = [f"r{i}" for i in range(40)]
    for k, reader in enumerate(nat):  # they read as readers do, and follow from one address
        p._follow(T0 + HOUR + k * 4 * MINUTE, reader, "mid", ip="100.64.0.1")
    found = _run(p.lines())
    silent = [f for f in found if f.detector == "silent_followers"]
    named = {m for f in silent for m in f.members}
    judged = {f"drip{i}" for i in range(600) if i * HOUR // 200 < 2 * HOUR + 30 * MINUTE}
    assert len(named & judged) >= 0.8 * len(judged)
    assert len(named - drip) <= 0.02 * len(named) and len(named & set(nat)) <= 2
    assert sum(f.evidence["sharers"] for f in silent) >= 0.5 * len(named)


def test_a_drip_of_followers_active_elsewhere_names_nobody() -> None:
    lines, _ = _world(seed=1, busy=True)
    found = _run(lines)
    assert any(f.detector == "follower_jump" for f in found)  # the volume is still abnormal
    assert not [f for f in found if f.detector == "silent_followers"]


def test_both_runtimes_name_the_same_silent_followers() -> None:
    p = Platform(seed=2, readers=1500)
    p.reading(T0, T0 + 7 * HOUR, clicks_per_hour=3000, target="mid")
    p.drip("mid", T0 + 4 * HOUR, per_hour=150, hours=3, busy=False)  # on to the end
    run = runtimes_agree(SETTINGS, _stages(), p.lines(), Topics("t", 2))
    assert any(f.detector == "silent_followers" for f in run.found.values())


def test_activity_counts_forget_by_generation_and_do_not_depend_on_sharding() -> None:
    seen = ActivityCounts(generation_ms=10, keep_ms=20)
    seen.learn({"a": 2}, 5)
    seen.learn({"b": 1, "a": 1}, 12)
    assert (seen.since("a", 0), seen.since("a", 10), seen.since("c", 0)) == (3, 1, 0)
    seen.learn({"c": 400}, 35)  # generation 3: generation 0 (three back) is swept out
    assert seen.since("a", 0) == 1 and seen.since("c", 0) == 255  # counts are capped
    again = pickle.loads(pickle.dumps(seen))
    assert again.since("a", 0) == 1 and again.since("c", 30) == 255
    halves = [ActivityCounts(10, 20), ActivityCounts(10, 20)]  # the same, split in two
    whole = ActivityCounts(10, 20)
    for account, ts in [("a", 5), ("b", 12), ("c", 25), ("a", 31), ("b", 47)]:
        halves[account == "b"].learn({account: 1}, ts)
        whole.learn({account: 1}, ts)
    for account in "abcd":
        for ts in (0, 12, 25, 31, 60):
            assert whole.since(account, ts) == halves[account == "b"].since(account, ts)
    with pytest.raises(ValueError):
        ActivityCounts(10, 5)


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
    assert mixed.active == by_kind.active and sum(mixed.active.values()) > 0
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
    account in the memory judged says (age, network, device), carried from the
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
                e
                for e in follows
                if e["actor"] == m and f.window_start <= e["ts"] < f.evidence["follows_until"]
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
    """A state kept by an earlier version: its silent followers become judged low ones."""

    class Before:  # SilentMemory as it was: its follows only, pickled as slots
        __slots__ = ("follows",)

    old = Before()
    old.follows = [(T0, "a"), (T0 + 1, "b")]
    memory = SilentMemory.__new__(SilentMemory)
    memory.__setstate__(old.__reduce_ex__(pickle.HIGHEST_PROTOCOL)[2])
    blank = ("", "", None, None)  # device, address, actions, the usual follower's
    assert memory.judged == [(T0, "a", True, None, *blank), (T0 + 1, "b", True, None, *blank)]
    memory = SilentMemory.__new__(SilentMemory)
    memory.__setstate__(([(T0, "a")], [(T0, "a", {"device": "d"})], None))
    assert memory.judged == [(T0, "a", True, None, *blank)] and memory.facts[0][1] == "a"
    memory = SilentMemory.__new__(SilentMemory)  # judged before devices: 4 fields
    memory.__setstate__(([(T0, "a", False, 0.2)], [], None, None, {}, "judged"))
    assert memory.judged == [(T0, "a", False, 0.2, *blank)]
    memory.__setstate__(([(T0, "a", False, 0.2, "d")], [], None, None, {}, "judged"))
    assert memory.judged == [(T0, "a", False, 0.2, "d", *blank[1:])]  # before addresses: 5
    memory.__setstate__(([(T0, "a", False, 0.2, "d", "h")], [], None, None, {}, [], "judged"))
    assert memory.judged == [(T0, "a", False, 0.2, "d", "h", None, None)]  # before actions
    assert memory.platform == []  # before the platform's follows were judged
    assert memory.pending == {} and memory.settled == {}  # before followers were settled
    memory.jump = (T0, "f1", 0.7)
    again = pickle.loads(pickle.dumps(memory, protocol=pickle.HIGHEST_PROTOCOL))
    assert (again.judged, again.facts, again.jump) == (memory.judged, memory.facts, memory.jump)


def test_a_silent_follow_record_carries_the_facts_of_its_first_low_followers_by_id() -> None:
    """What `follower_activity` hands on once its followers are watched out: each record
    the facts of its first `MAX_MEMBER_FACTS` low-activity followers by id (a finding
    describes its first members by id, each of them among the first of its own record),
    from their earliest follow in it."""
    cfg = load_settings(overrides={"detectors": {"silent_followers": {"shards": 1}}})
    sf = cfg.detectors.silent_followers
    stage = FollowerActivityStage(sf, young_ms=30 * DAY)
    models = StoreModels({}, stage.new_model, T0)

    def window(start: int, b: StreamBuilder) -> list:
        events = [decoder.decode(line.encode()) for line in b.sorted_lines()]
        return stage.judge([stage.fold(events)], models, start, start + MINUTE)

    readers = StreamBuilder()  # readers click, then follow another account
    for i in range(200):
        for k in range(3):
            readers.add("click", T0 + i * 100 + k, f"r{i}", target="x", content_id="x/1")
    assert window(T0, readers) == []
    later = T0 + 15 * MINUTE
    follows = StreamBuilder()
    for i in range(200):
        follows.add("follow", later + i * 100, f"r{i}", target="other", origin="user")
    (on_its_way,) = window(later, follows)  # watched, not yet judged: where they came from
    assert on_its_way.data["judged"] == [] and len(on_its_way.data["started"]) == 200
    tick = StreamBuilder()
    judged_at = later + sf.observe_ms + MINUTE
    tick.add("click", judged_at, "r0", target="x", content_id="x/1")
    (readers_record,) = window(judged_at, tick)
    assert readers_record.key == "other" and not any(
        low for _, _, low, *_ in readers_record.data["judged"]
    )
    start = judged_at + MINUTE
    b = StreamBuilder()
    for i in reversed(range(150)):
        ts = start + 1_000 + i * 100
        b.add("follow", ts, f"f{i:03d}", target="mid", origin="user", ip=f"10.0.{i}.1",
              actor_created_at=ts - 100 * DAY, device_id=f"d{i}")  # fmt: skip
    b.add("follow", start + 30_000, "f000", target="mid", origin="user", device_id="later")
    b.add("follow", start + 500, "f001", target="mid", origin="user")  # before, says nothing
    (started,) = window(start, b)
    assert started.data["judged"] == [] and len(started.data["started"]) == 152
    tick = StreamBuilder()
    judged_at = start + sf.observe_ms + MINUTE
    tick.add("click", judged_at, "r0", target="x", content_id="x/1")
    (record,) = window(judged_at, tick)
    assert record.key == "mid" and len(record.data["judged"]) == 152
    assert all(low for _, _, low, *_ in record.data["judged"])
    rows = {a: where for _, a, _, *where in record.data["judged"]}
    device, address, actions, usual = rows["f005"]
    assert (device, address, actions) == ("d5", "10.0.5.1", 0)  # as it followed; silent
    assert usual > 0  # what the usual follower took over the same span
    assert record.data["low_share"] == 0.0  # the readers' share, before these
    described = record.data["facts"]
    assert list(described) == [f"f{i:03d}" for i in range(MAX_MEMBER_FACTS)]  # the bound
    assert described["f000"] == {
        "created_at": start + 1_000 - 100 * DAY,
        "network": "10.0.0",
        "device": "d0",  # its earliest follow's, not the later one's
    }
    assert described["f001"]["device"] == "d1"  # from the first follow that says


def test_one_quiet_reader_beside_a_busy_one_on_a_carriers_line_is_no_farm() -> None:
    """A carrier's address shared by two readers of the account, one quiet and one busy,
    names neither; a phone two quiet accounts share with a busy one names the busy one
    too, and so does a quiet account's phone whose other follower is still watched."""
    from pipeline.detectors.silent_followers import _shared_places, _sharers

    seen = [  # (follower, device, address, actions, the usual follower's over the span)
        ("quiet", "d1", "100.64.0.1", 1, 8.3),
        ("busy", "d2", "100.64.0.1", 38, 9.8),
        ("farm-a", "phone", "10.0.0.1", 0, 9.0),
        ("farm-b", "phone", "10.0.0.2", 1, 9.0),
        ("farm-c", "phone", "10.0.0.3", 12, 9.0),
        ("farm-d", "phone2", "10.0.0.4", 0, 9.0),
        ("farm-e", "phone2", "10.0.0.5", None, None),  # still watched
    ]
    low = {"quiet", "farm-a", "farm-b", "farm-d"}
    assert _sharers(_shared_places(seen), low, 0.5) == ["farm-c", "farm-e"]


def test_quiet_followers_of_their_own_are_named_once_they_stay_quiet() -> None:
    """A drip of accounts each on a phone and line of its own, and readers who follow the
    same account as quietly but take to clicking within the next hours: the account is
    flagged at once, the drip's members once they have stayed quiet for `settle_ms`,
    and the readers not at all."""
    cfg = SETTINGS.detectors.silent_followers
    p = Platform(seed=9)
    p.reading(T0, T0 + 7 * HOUR, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + HOUR, per_hour=150, hours=3, busy=False)
    woke = [f"late{i}" for i in range(30)]
    for k, reader in enumerate(woke):  # quiet around the follow, then reading as readers do
        ts = T0 + HOUR + k * 5 * MINUTE
        p._follow(ts, reader, "mid")
        for minutes in range(30, 115, 12):
            p.b.add("click", ts + minutes * MINUTE, reader, target="creator2",
                    content_id="creator2-post")  # fmt: skip
    silent = [f for f in _run(p.lines()) if f.detector == "silent_followers"]
    first = min(silent, key=lambda f: f.ts)
    assert first.ts <= T0 + 2 * HOUR and first.evidence["settling"] > 0
    follows = {e["actor"]: e["ts"] for e in p.b.events if e["type"] == "follow"}
    named = {m: f.window_end for f in silent for m in f.members}
    assert not named.keys() & set(woke)
    judged = {a for a in drip if follows[a] < T0 + 4 * HOUR - cfg.observe_ms}
    assert len(named.keys() & judged) >= 0.9 * len(judged)
    assert all(named[a] >= follows[a] + cfg.settle_ms for a in named.keys() & drip)
    assert any(f.evidence["kind"] == "settled" for f in silent)


def test_a_slice_ending_names_every_quiet_follower_still_settling_a_finding_at_a_time() -> None:
    """A log that ends 80 minutes into a drip of accounts each on a phone and line of
    its own: none has been watched on for `settle_ms`, so the end of the input settles
    them all on what was seen, and they are named however many, `max_members` to a
    finding."""
    settings = load_settings(
        overrides={
            "kafka": {"partitions": 2},
            "detectors": {"silent_followers": {"max_members": 40}},
        }
    )
    p = Platform(seed=10)
    p.reading(T0, T0 + 90 * MINUTE, clicks_per_hour=6000, target="mid")
    drip = p.drip("mid", T0 + 10 * MINUTE, per_hour=300, hours=1, busy=False)
    stages = [s for s in build_stages(settings) if s.detector in CHAIN]
    engine = Engine(settings, stages=stages)
    lines = p.lines()
    found = engine.process(lines, "t").findings + engine.finish().findings
    silent = [f for f in found if f.detector == "silent_followers"]
    assert len({f.finding_id for f in silent}) == len(silent)
    assert all(len(f.members) <= 40 for f in silent)
    assert sum(f.evidence["kind"] == "settled" for f in silent) >= 2
    named = {m for f in silent for m in f.members}
    assert len(named & drip) >= 0.9 * len(drip) and len(named - drip) <= 0.02 * len(named)
