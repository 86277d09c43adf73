"""`duplicate_content`: a copy-paste campaign (one message, lightly edited, by many accounts
under many items) is flagged with its accounts; a crowd typing "+1" or "哈哈哈" and a
template the whole platform types all day are not; both runtimes and any arrival order
find the same."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest

from pipeline.contract.findings import Finding
from pipeline.core.settings import ConfigError, load_settings
from pipeline.detectors import build_stages
from pipeline.detectors.duplicate_content import KEY, DuplicateContentStage
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from pipeline.lab.simulation.text import COMMON_PHRASES, organic_comment
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, replay_three_ways
from tests.stage_partitions import engine_findings, run_partitioned

ON = {"enabled": True}  # whatever the defaults, these tests run duplicate_content
SETTINGS = load_settings(
    overrides={"kafka": {"partitions": 2}, "detectors": {"duplicate_content": ON}}
)
SPAM = "兼职日结300元，在家就能做，有意向的加我V：k2231"


class World:
    """Comments on a platform: people chatting on creators' items all day."""

    def __init__(self, seed: int) -> None:
        self.b = StreamBuilder(seed)
        self.r = random.Random(seed)

    def comment(self, ts: int, actor: str, text: str, repost: bool = False) -> None:
        owner = f"creator{self.r.randrange(60)}"
        item = f"{owner}-p{self.r.randrange(5)}"
        kind = "repost" if repost else "comment"
        ip = f"10.{zlib.crc32(actor.encode()) % 200}.1.1"
        self.b.add(kind, ts, actor, target=owner, content_id=item, text=text,
                   device_id=f"d-{actor}", ip=ip)  # fmt: skip

    def chatter(self, start: int, end: int, per_minute: float = 40) -> None:
        """Organic comments from many people; templates collide by chance."""
        for _ in range(int((end - start) / MINUTE * per_minute)):
            self.comment(start + self.r.randrange(end - start), f"p{self.r.randrange(20_000)}",
                         organic_comment(self.r))  # fmt: skip
        for _ in range(int((end - start) / MINUTE * per_minute / 10)):  # reposts, no text
            self.b.add("repost", start + self.r.randrange(end - start), "p1", target="c",
                       content_id="c-p1")  # fmt: skip

    def template(self, start: int, end: int, text: str, per_minute: float) -> set[str]:
        """A phrase the whole platform types all day, by different people."""
        people = set()
        for _ in range(int((end - start) / MINUTE * per_minute)):
            who = f"fan{self.r.randrange(50_000)}"
            people.add(who)
            self.comment(start + self.r.randrange(end - start), who, text)
        return people

    def crowd(self, start: int, span: int, people: int) -> set[str]:
        """Hundreds of people typing the same short phrases within minutes."""
        phrases = [v for p in ("+1", "哈哈哈", "congrats!", "好") for v in COMMON_PHRASES[p]]
        crowd = {f"crowd{i}" for i in range(people)}
        for who in sorted(crowd):
            self.comment(start + self.r.randrange(span), who, self.r.choice(phrases))
        return crowd

    def copy_paste(self, start: int, span: int, bots: int, message: str) -> set[str]:
        """One message, edited a little each time, by `bots` accounts, 1-3 posts each."""
        members = {f"spam{i}" for i in range(bots)}
        for who in sorted(members):
            for _ in range(self.r.randint(1, 3)):
                self.comment(start + self.r.randrange(span), who, self._edit(message),
                             repost=self.r.random() < 0.2)  # fmt: skip
        return members

    def _edit(self, text: str) -> str:
        out = []
        for c in text:
            roll = self.r.random()
            if roll < 0.1 and "!" <= c <= "~":
                c = chr(ord(c) + 0xFEE0)
            elif roll < 0.2 and c.isdigit():
                c = str(self.r.randrange(10))
            elif roll < 0.22:
                c += " "
            out.append(c)
        if self.r.random() < 0.3:  # a swapped pair of characters
            i = self.r.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
        return "".join(out) + self.r.choice(("", "🔥🔥", "!!", "～"))

    def lines(self) -> list[bytes]:
        return [line.encode() for line in self.b.sorted_lines()]


def _findings(lines: list[bytes], settings=SETTINGS) -> list[Finding]:
    stages = [s for s in build_stages(settings) if s.detector == "duplicate_content"]
    return engine_findings(settings, stages, lines)


def _world(seed: int = 1) -> tuple[World, set[str], set[str], set[str]]:
    w = World(seed)
    w.chatter(T0, T0 + 4 * HOUR)
    fans = w.template(T0, T0 + 4 * HOUR, "my mom would love this, saving it for later", 2.5)
    crowd = w.crowd(T0 + 2 * HOUR, 20 * MINUTE, people=400)
    bots = w.copy_paste(T0 + 3 * HOUR, 30 * MINUTE, bots=40, message=SPAM)
    return w, fans, crowd, bots


def test_copy_paste_campaign_is_flagged_with_its_accounts_and_nothing_else() -> None:
    w, fans, crowd, bots = _world()
    found = _findings(w.lines())
    assert found
    named = {m for f in found for m in f.members}
    assert len(named & bots) >= 0.9 * len(bots)
    assert not named & (fans | crowd)
    assert named <= bots  # nor anyone in the chatter
    for f in found:
        assert f.detector == "duplicate_content" and f.article == "18(4)"
        assert f.subject_type == "group" and f.subject_id.startswith("dup:")
        assert T0 + 3 * HOUR <= f.evidence["first_ts"] < T0 + 3 * HOUR + 30 * MINUTE
        assert f.evidence["accounts"] >= 10 and f.evidence["items"] >= 5
        assert f.evidence["expected_accounts"] < 1
        assert "near-copies" in f.evidence["explanation"]
    assert len({f.subject_id for f in found}) == 1  # one message, one stable group id


def test_a_crowd_of_short_phrases_and_a_common_template_are_not_flagged() -> None:
    w, *_ = _world(seed=2)
    w.template(T0 + 3 * HOUR, T0 + 4 * HOUR, "my mom would love this, saving it for later", 2.5)
    w.crowd(T0 + 3 * HOUR, 15 * MINUTE, people=600)
    lines = [line for line in w.lines() if b"spam" not in line]
    assert _findings(lines) == []


def test_a_new_template_doubling_is_ordinary_but_a_new_message_is_not() -> None:
    """The memory is about how common a text was: a template twice as popular in the
    evening as in the morning is not a campaign; the same count of accounts posting a
    message never seen before is."""
    w = World(seed=3)
    w.chatter(T0, T0 + 4 * HOUR)
    w.template(T0, T0 + 2 * HOUR, "who else is watching this on the train home", 1.5)
    w.template(T0 + 2 * HOUR, T0 + 4 * HOUR, "who else is watching this on the train home", 3)
    assert _findings(w.lines()) == []
    bots = w.copy_paste(T0 + 3 * HOUR, 20 * MINUTE, bots=30, message="Made $500 this week "
                        "from home with one simple trick, link in my bio x9")  # fmt: skip
    found = _findings(w.lines())
    assert found and {m for f in found for m in f.members} <= bots


THINGS = (
    "recipe", "route", "workout", "playlist", "trick", "hairstyle", "setup", "diet",
    "stretch", "method", "app", "filter", "lens", "sauce", "game", "schedule", "plan",
    "drill", "pose", "hack", "tool", "brush", "look", "song", "spell", "guide", "map",
    "combo", "pattern", "habit",
)  # fmt: skip


def test_a_template_typed_all_day_in_many_wordings_is_ordinary() -> None:
    """ "I tried this recipe / route / workout ... and it actually worked": thirty
    wordings of one template, each typed about once a window all day: one family of
    near-copies whose wordings are each rare. A family is as common as its wordings
    together, so its usual size is no burst."""
    w = World(seed=5)
    w.chatter(T0, T0 + 4 * HOUR)
    window = 15 * MINUTE
    for k in range(4 * HOUR // window):
        for thing in THINGS:
            who = f"fan{w.r.randrange(50_000)}"
            ts = T0 + k * window + w.r.randrange(window)
            w.comment(ts, who, f"I tried this {thing} and it actually worked")
    assert _findings(w.lines()) == []


def test_the_first_windows_only_learn() -> None:
    w = World(seed=4)
    w.chatter(T0, T0 + 2 * HOUR)
    w.copy_paste(T0 + 5 * MINUTE, 20 * MINUTE, bots=40, message=SPAM)
    found = _findings(w.lines())
    assert found == []  # (a diverse crowd in the first hour is taken as the normal)
    w.copy_paste(T0 + 90 * MINUTE, 20 * MINUTE, bots=40, message="关注我每天分享考研资料干货，"
                 "互关必回，私信领取全套笔记")  # fmt: skip
    found = _findings(w.lines())
    assert found
    assert all(f.window_start >= T0 + SETTINGS.detectors.duplicate_content.warmup_ms for f in found)


def test_a_campaign_from_a_few_devices_is_found_in_the_first_hour_and_not_learned() -> None:
    """While the memory of common texts is learned, a burst is judged by who posted it: a
    crowd on a few shared devices (or of fresh accounts) is a campaign from its first
    window, and its message never becomes a habit; a diverse crowd is the normal."""
    w = World(seed=6)
    w.chatter(T0, T0 + 2 * HOUR)
    farm = {f"spam{i}" for i in range(40)}
    for i, who in enumerate(sorted(farm)):
        for _ in range(2):
            ts = T0 + 5 * MINUTE + w.r.randrange(20 * MINUTE)
            owner = f"creator{w.r.randrange(60)}"
            w.b.add("comment", ts, who, target=owner, content_id=f"{owner}-p0",
                    text=w._edit(SPAM), device_id=f"farm-phone{i % 4}",
                    ip=f"203.0.113.{i % 7}")  # fmt: skip
    w.copy_paste(T0 + 90 * MINUTE, 20 * MINUTE, bots=40, message=SPAM)  # again, later
    found = _findings(w.lines())
    early = [f for f in found if f.window_start < T0 + HOUR]
    assert early and {m for f in early for m in f.members} <= farm
    assert "near-copies" in early[0].evidence["explanation"]
    late = [f for f in found if f.window_start >= T0 + 90 * MINUTE]
    assert late  # not a habit: the first windows flagged it, so they taught nothing of it


@pytest.mark.parametrize("slow", [False, True], ids=["burst", "slow-family"])
def test_replays_in_order_again_and_shuffled_give_the_same_findings(
    tmp_path: Path, slow: bool
) -> None:
    w = _slow_world(seed=8, farm=True)[0] if slow else _world(seed=5)[0]
    runs = replay_three_ways(tmp_path, w.b.sorted_lines(), "duplicate_content")
    assert runs[0]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("slow", [False, True], ids=["burst", "slow-family"])
def test_the_distributed_stage_finds_what_the_engine_finds_despite_redelivery(slow: bool) -> None:
    w = _slow_world(seed=9, farm=True)[0] if slow else _world(seed=6)[0]
    lines = w.lines()
    expected = {f.finding_id: f for f in _findings(lines)}
    assert expected
    assert any("slow_windows" in f.evidence for f in expected.values()) == slow
    stages = [s for s in build_stages(SETTINGS) if s.detector == "duplicate_content"]
    run = run_partitioned(SETTINGS, stages, lines, Topics("t", 2), chunk=1000, max_events=300)
    assert set(run.found) == set(expected)
    assert all(run.found[i].members == f.members for i, f in expected.items())
    assert run.duplicates > 0
    assert set(run.tables["duplicate_content"]) == {KEY}  # all texts meet in one key


def test_memory_is_bounded_however_many_texts() -> None:
    cfg = load_settings(
        overrides={"detectors": {"duplicate_content": {"enabled": True, "max_buckets": 500}}}
    )
    stage = DuplicateContentStage(cfg.detectors.duplicate_content, cfg.severity)
    w = World(seed=7)
    w.chatter(T0, T0 + 3 * HOUR, per_minute=60)
    engine = Engine(cfg, stages=[stage])
    engine.process(w.lines(), "f")
    engine.finish()
    (runner,) = engine.runners
    (state,) = runner.store.values()  # one key: the texts
    assert 400 <= len(state.model.commonness.shares) <= 500


@pytest.mark.parametrize(
    "bad",
    [
        {"permutations": 30, "bands": 8},
        {"min_similarity": 0.0},
        {"min_ratio": 0.5},
        {"min_accounts": 0},
        {"habit_ms": 1000},
        {"max_buckets": 100_000},
        {"slow_families": 1000},
        {"slow_min_accounts": 20},
        {"slow_accounts": 5},
        {"window_ms": 1000, "hop_ms": 900000},
    ],
)
def test_invalid_settings_are_rejected_with_a_clear_error(bad: dict) -> None:
    with pytest.raises(ConfigError, match=r"detectors\.duplicate_content"):
        load_settings(overrides={"detectors": {"duplicate_content": bad}})


def _slow_world(seed: int, farm: bool, start: int = T0 + 90 * MINUTE) -> tuple[World, set[str]]:
    """Chatter, and from `start` (in the second hour) one message posted by three
    accounts a window for two hours: never the ten accounts one window needs. From a
    farm's four phones, or by ordinary people each on their own."""
    w = World(seed)
    w.chatter(T0, T0 + 5 * HOUR)
    posters = set()
    window = 15 * MINUTE
    for k in range(8):
        for j in range(3):
            who = f"slow{k}-{j}"
            posters.add(who)
            for _ in range(w.r.randint(1, 2)):
                ts = start + k * window + w.r.randrange(window)
                owner = f"creator{w.r.randrange(60)}"
                device = f"farm-phone{(3 * k + j) % 4}" if farm else f"d-{who}"
                ip = f"203.0.113.{(3 * k + j) % 7}" if farm else f"10.{k}.{j}.9"
                w.b.add("comment", ts, who, target=owner, content_id=f"{owner}-p1",
                        text=w._edit(SPAM), device_id=device, ip=ip)  # fmt: skip
    return w, posters


def test_a_message_posted_a_few_at_a_time_adds_up_across_windows() -> None:
    w, farm = _slow_world(seed=8, farm=True)
    found = _findings(w.lines())
    assert found
    named = {m for f in found for m in f.members}
    assert len(named) >= SETTINGS.detectors.duplicate_content.min_accounts
    assert named <= farm  # nobody in the chatter
    for f in found:
        assert f.evidence["slow_windows"] >= 2
        assert f.evidence["slow_since"] >= T0 + 90 * MINUTE - 15 * MINUTE
        assert f.evidence["accounts"] >= 10 > f.evidence["posts"]
        assert "a few at a time" in f.evidence["explanation"]
    # each window's finding names the earlier windows' posters too
    assert len(found[0].members) >= 10


def test_a_message_posted_a_few_at_a_time_since_the_stream_began_is_no_habit() -> None:
    """The same farm, at it when the stream begins: its first windows, while the memory
    of common texts is learned, are judged by who posted them, and the family is found
    before the memory could take it for the platform's normal."""
    w, farm = _slow_world(seed=8, farm=True, start=T0 + 5 * MINUTE)
    found = _findings(w.lines())
    assert found and {m for f in found for m in f.members} <= farm
    warmup = SETTINGS.detectors.duplicate_content.warmup_ms
    assert min(f.window_start for f in found) < T0 + warmup
    people, _ = _slow_world(seed=8, farm=False, start=T0 + 5 * MINUTE)
    assert _findings(people.lines()) == []


def test_an_ordinary_message_posted_a_few_at_a_time_by_people_is_not_flagged() -> None:
    """The same pace by people on their own phones and lines: a phrase that comes back a
    few at a time all day, not a campaign."""
    w, _ = _slow_world(seed=8, farm=False)
    assert _findings(w.lines()) == []
