"""`pipeline.lab.simulation`: a small world (four hours at 5% scale) holds every campaign and
hard negative, labelled truthfully, as valid contract events with bounded disorder, and
the same seed always writes the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from pipeline.contract.events import AnyEvent, decoder, to_epoch_ms
from pipeline.lab.labels import CAMPAIGN_KINDS, NEGATIVE_KINDS, Labels, read_labels
from pipeline.lab.simulation import SCENARIOS, simulate

MINUTES, SCALE, SEED = 240, 0.05, 11
ARTICLES = {
    "follower_burst": "12",
    "slow_drip": "12",
    "click_farm": "12",
    "forced_follow": "12",
    "repost_ring": "18(4)",
    "copy_paste": "18(4)",
    "churn": "18(4)",
    "batch_registration": "18(8)",
    "account_handover": "11",
}


@dataclass
class Run:
    events: Path
    labels_path: Path
    labels: Labels
    lines: list[bytes]
    decoded: list[AnyEvent | None]  # one per line; None for a malformed line


def _run(tmp: Path, seed: int = SEED, scenarios: list[str] | None = None) -> Run:
    events, labels_path = tmp / "events.jsonl", tmp / "labels.json"
    labels = simulate(MINUTES, seed, scenarios, out=events, labels_out=labels_path, scale=SCALE)
    lines = events.read_bytes().splitlines()
    decoded: list[AnyEvent | None] = []
    for line in lines:
        try:
            decoded.append(decoder.decode(line))
        except msgspec.DecodeError:
            decoded.append(None)
    return Run(events, labels_path, labels, lines, decoded)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("world"))


def _events(run: Run) -> list[AnyEvent]:
    """The distinct events, in file order (redeliveries dropped)."""
    seen: set[str] = set()
    out: list[AnyEvent] = []
    for e in run.decoded:
        if e is not None and e.event_id not in seen:
            seen.add(e.event_id)
            out.append(e)
    return out


def test_same_seed_same_bytes_even_with_another_hash_seed(run: Run, tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from pipeline.lab.simulation import simulate; "
        f"simulate({MINUTES}, {SEED}, None, out=Path(sys.argv[1]), "
        f"labels_out=Path(sys.argv[2]), scale={SCALE})"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out, labels = tmp_path / "e.jsonl", tmp_path / "l.json"
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code, out, labels], check=True, env=env, cwd=repo)
    assert out.read_bytes() == run.events.read_bytes()
    assert labels.read_bytes() == run.labels_path.read_bytes()
    assert read_labels(labels) == run.labels


def test_another_seed_another_world(run: Run, tmp_path: Path) -> None:
    other = _run(tmp_path, seed=SEED + 1)
    assert other.events.read_bytes() != run.events.read_bytes()
    assert other.labels.campaigns != run.labels.campaigns


def test_every_kind_is_planted_and_labelled(run: Run) -> None:
    labels = run.labels
    assert labels.scenarios == list(SCENARIOS)
    assert {c.kind for c in labels.campaigns} == set(CAMPAIGN_KINDS)
    assert {n.kind for n in labels.hard_negatives} == set(NEGATIVE_KINDS)
    ids = [c.id for c in labels.campaigns] + [n.id for n in labels.hard_negatives]
    assert len(ids) == len(set(ids))
    for c in labels.campaigns:
        assert c.article == ARTICLES[c.kind], c.id
        assert c.subjects, c.id
        assert labels.start <= c.start < c.end <= labels.end, c.id
        if c.kind == "forced_follow":
            assert c.members == [], "forced users are victims, not members"
        else:
            assert c.members, c.id
        if c.kind in ("click_farm", "copy_paste"):
            assert c.subject_type == "content", c.id
        assert c.owners if c.kind == "click_farm" else c.owners == [], c.id
        if c.kind in ("churn", "batch_registration"):
            assert c.subjects == c.members, c.id
    for n in labels.hard_negatives:
        assert n.subjects and n.members, n.id
        assert labels.start <= n.start < n.end <= labels.end, n.id
    guilty = labels.fake_accounts() | {s for c in labels.campaigns for s in c.subjects}
    for n in labels.hard_negatives:
        assert guilty.isdisjoint(n.subjects), n.id
        assert guilty.isdisjoint(n.members), n.id


def test_labelled_accounts_and_content_act_inside_their_windows(run: Run) -> None:
    times: dict[str, list[int]] = defaultdict(list)  # id -> event times it appears at
    for e in _events(run):
        ts = to_epoch_ms(e.ts)
        times["a:" + e.actor].append(ts)
        if getattr(e, "target", None):
            times["a:" + e.target].append(ts)
        if getattr(e, "content_id", None):
            times["c:" + e.content_id].append(ts)

    def inside(name: str, start: int, end: int) -> bool:
        return any(start <= t < end for t in times[name])

    for label in [*run.labels.campaigns, *run.labels.hard_negatives]:
        prefix = "c:" if label.subject_type == "content" else "a:"
        missing = [s for s in label.subjects if not inside(prefix + s, label.start, label.end)]
        missing += [m for m in label.members if not inside("a:" + m, label.start, label.end)]
        assert not missing, f"{label.id}: {missing[:5]} never act in the window"


def test_lines_are_contract_events_with_a_few_malformed(run: Run) -> None:
    malformed = run.decoded.count(None)
    assert 0 < malformed <= max(10, len(run.lines) // 1000)
    assert malformed == run.labels.params["malformed"]
    events = _events(run)
    assert {e.type for e in events} >= {
        "follow",
        "unfollow",
        "click",
        "repost",
        "comment",
        "register",
    }
    for e in events:
        assert run.labels.start <= e.ts < run.labels.end
        if e.actor_created_at is not None:
            assert e.actor_created_at <= e.ts, "nobody acts before their account exists"


def test_disorder_stays_within_the_allowed_lateness(run: Run) -> None:
    latest, worst, late = 0, 0, 0
    for e in _events(run):
        behind = latest - e.ts
        worst = max(worst, behind)
        late += behind > 1_000
        latest = max(latest, e.ts)
    assert worst <= 25_000
    assert late > 0, "some events arrive seconds late"


def test_redelivered_duplicates_repeat_an_event_byte_for_byte(run: Run) -> None:
    by_id: dict[str, list[bytes]] = defaultdict(list)
    for line, e in zip(run.lines, run.decoded, strict=True):
        if e is not None:
            by_id[e.event_id].append(line)
    repeated = {k: v for k, v in by_id.items() if len(v) > 1}
    assert 0.002 < len(repeated) / len(by_id) < 0.01
    assert all(len(set(v)) == 1 for v in repeated.values())


def test_campaigns_have_the_shape_their_kind_promises(run: Run) -> None:
    events = _events(run)
    by_campaign = {c.id: c for c in run.labels.campaigns}
    members = {m: c.id for c in run.labels.campaigns for m in c.members}
    devices, ips = defaultdict(set), defaultdict(set)
    burst_ages: list[int] = []
    forced = defaultdict(list)
    for e in events:
        cid = members.get(e.actor)
        if cid is not None:
            devices[cid].add(e.device_id)
            ips[cid].add(e.ip)
            bought = by_campaign[cid].subjects
            if cid.startswith("follower_burst") and e.type == "follow" and e.target in bought:
                burst_ages.append(e.ts - (e.actor_created_at or e.ts))
        if e.type == "follow" and e.consent is False and e.origin == "onboarding_default":
            forced[e.target].append(e.actor)
    for cid, c in by_campaign.items():
        if c.kind == "click_farm":
            assert len(ips[cid] - {None}) <= 10, "behind a few addresses"
        if c.kind == "batch_registration":
            assert len({ip.rsplit(".", 1)[0] for ip in ips[cid] - {None}}) == 1, "one network"
        if c.kind == "forced_follow":
            victims = forced[c.subjects[0]]
            assert len(set(victims)) == len(victims) >= 5
    assert burst_ages and max(burst_ages) <= 7 * 24 * 3_600_000 + 30 * 60_000, "a week at most"


def test_organic_traffic_is_varied(run: Run) -> None:
    events = _events(run)
    comments = [e.text for e in events if e.type == "comment"]
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in comments)
    assert any(t.isascii() and any(ch.isalpha() for ch in t) for t in comments)
    assert len(set(comments)) > len(comments) / 3
    assert any(e.ip and ":" in e.ip for e in events), "some IPv6"
    origins = {e.origin for e in events if e.type == "follow"}
    assert {"user", "recommendation", None} <= origins
    assert len({e.actor for e in events}) > 2_000


def test_unknown_scenario_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scenario teleport") as info:
        simulate(MINUTES, 1, ["teleport"], out=tmp_path / "e", labels_out=tmp_path / "l")
    assert "\n" not in str(info.value)
    assert all(name in str(info.value) for name in SCENARIOS)
    assert not (tmp_path / "e").exists()


def test_a_scenario_subset_plants_only_those_kinds(tmp_path: Path) -> None:
    picked = _run(tmp_path, scenarios=["viral_spike", "click_farm"])
    assert picked.labels.scenarios == ["click_farm", "viral_spike"]
    assert {c.kind for c in picked.labels.campaigns} == {"click_farm"}
    assert {n.kind for n in picked.labels.hard_negatives} == {"viral_spike"}
