"""`evidence.member_items`: a group's members by item (`lockstep_ring`,
`duplicate_content`), bounded, true to the stream it was found in, the same in both
runtimes; finding ids untouched by it; and the console's case view carrying it for its
members-by-item picture."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from pipeline.console import views
from pipeline.contract.findings import Finding, make_finding
from pipeline.detectors.case_evidence import (
    MAX_PICTURED_ITEMS,
    MAX_PICTURED_MEMBERS,
    member_items,
)
from pipeline.detectors.lockstep_ring import (
    ROUND_MEMBERS_KEPT,
    LockstepRingStage,
    Ring,
    RingModel,
    _ranked,
)
from pipeline.distributed.topics import Topics
from tests.helpers import HOUR, MINUTE, T0, lockstep
from tests.stage_partitions import engine_findings, run_partitioned
from tests.test_console_api import AUTH, _console
from tests.test_duplicate_content import SETTINGS as DUP_SETTINGS
from tests.test_duplicate_content import SPAM
from tests.test_duplicate_content import World as Texts
from tests.test_lockstep_group import World
from tests.test_lockstep_ring import SETTINGS as RING_SETTINGS
from tests.test_lockstep_ring import _spread_ring, _stages
from tests.test_review_api import _serving


def _ring_world(members: int = 40) -> tuple[World, set[str]]:
    w = World(seed=23)
    w.background(T0, T0 + 5 * HOUR, per_hour=2000)
    return w, _spread_ring(w, members=members, customers=6, start=T0 + HOUR)


def _texts_world() -> tuple[Texts, set[str]]:
    w = Texts(3)
    w.chatter(T0, T0 + 4 * HOUR)
    return w, w.copy_paste(T0 + 3 * HOUR, 30 * MINUTE, bots=40, message=SPAM)


def _dup_stages() -> list:
    from pipeline.detectors import build_stages

    return [s for s in build_stages(DUP_SETTINGS) if s.detector == "duplicate_content"]


def _shape(f: Finding) -> dict[str, Any]:
    grid = f.evidence["member_items"]
    assert set(grid) == {"members", "items", "acts", "members_total", "items_total"}
    assert grid["members"] == f.members[:MAX_PICTURED_MEMBERS]
    assert 0 < len(grid["items"]) <= min(MAX_PICTURED_ITEMS, grid["items_total"])
    pairs = [(i, j) for i, j, _ in grid["acts"]]
    assert pairs == sorted(set(pairs))  # one per member and item, by member then item
    assert all(0 <= i < len(grid["members"]) and 0 <= j < len(grid["items"]) for i, j in pairs)
    return grid


def test_the_helper_keeps_the_first_members_the_earliest_act_and_nothing_outside() -> None:
    members = [f"m{i}" for i in range(MAX_PICTURED_MEMBERS + 5)]
    items = [{"content_id": "a"}, {"content_id": "b"}]
    acts = [("m0", 0, 30), ("m0", 0, 10), ("m1", 1, 5), ("m54", 0, 1), ("x", 0, 1), ("m1", 2, 1)]
    grid = member_items(members, items, acts, 55, 9)["member_items"]
    assert grid == {
        "members": members[:MAX_PICTURED_MEMBERS],
        "items": items,
        "acts": [[0, 0, 10], [1, 1, 5]],
        "members_total": 55,
        "items_total": 9,
    }
    assert member_items(members, items, [("x", 0, 1)], 1, 1) == {}  # nothing to draw


def test_a_rings_members_by_item_are_the_rounds_each_member_acted_in() -> None:
    w, ring = _ring_world()
    lines = [x.encode() for x in w.lines()]
    found = [f for f in engine_findings(RING_SETTINGS, _stages(), lines)
             if f.detector == "lockstep_ring"]  # fmt: skip
    assert found
    reposts = [e for e in w.b.events if e["type"] == "repost" and e["actor"] in ring]
    for f in found:
        grid = _shape(f)
        assert grid["members_total"] == f.evidence["members"] <= len(ring)
        assert grid["items_total"] == len(grid["items"])  # a few rounds: all of them
        last = f.evidence["rounds"][-len(grid["items"]) :]
        assert [c["content_id"] for c in grid["items"]] == [r["content_id"] for r in last]
        truth = set()
        for j, c in enumerate(grid["items"]):
            for i, m in enumerate(grid["members"]):
                if any(e["actor"] == m and e["content_id"] == c["content_id"]
                       and c["start"] <= e["ts"] <= c["end"] for e in reposts):  # fmt: skip
                    truth.add((i, j))
        assert {(i, j) for i, j, _ in grid["acts"]} == truth  # exactly who acted where
        starts = [c["start"] for c in grid["items"]]
        assert all(ts == starts[j] for _, j, ts in grid["acts"])  # when: the round's start


def test_a_ring_picture_shows_the_first_fifty_of_many_members() -> None:
    w, _ = _ring_world(members=80)
    lines = [x.encode() for x in w.lines()]
    found = [f for f in engine_findings(RING_SETTINGS, _stages(), lines)
             if f.detector == "lockstep_ring"]  # fmt: skip
    assert found
    for f in found:
        grid = _shape(f)
        assert len(grid["members"]) == MAX_PICTURED_MEMBERS < grid["members_total"]
        assert len(grid["acts"]) >= 0.6 * MAX_PICTURED_MEMBERS * len(grid["items"])


def test_a_ring_state_from_before_the_field_still_judges_without_it() -> None:
    """A ring kept before rounds said who acted in them (six-field round records) is read
    as before: its finding has no picture rather than an empty one, and the rounds it
    meets again are recorded with their members from then on."""
    stage = LockstepRingStage(RING_SETTINGS.detectors.lockstep_group, RING_SETTINGS.severity)
    members = {f"m{i}": 3 for i in range(12)}
    old = {f"i{k}@{T0 + k}": [f"t{k}", f"i{k}", T0 + k, T0 + k + 60_000, 14, 12]
           for k in range(3)}  # fmt: skip
    gid = "g"
    ring = Ring(rounds=old, joined=dict(members), named=0, last_ts=T0 + 3 * 60_000)
    finding = stage._finding(gid, ring, T0 + HOUR)
    assert finding is not None and "member_items" not in finding.evidence
    model = RingModel(rings={gid: ring})
    rid = f"i0@{T0}"
    again = [["t0", "i0", T0, T0 + 60_000, 14, 12, sorted(members)]]
    from pipeline.core.derived import Derived

    pane = [Derived(stream="ring_candidate", key="k", ts=T0 + 1, event_id="x",
                    data={"rounds": again, "joined": members})]  # fmt: skip
    stage.evaluate("k", model, [pane], T0, T0 + HOUR)
    assert model.rings[gid].rounds[rid][6] == sorted(members)
    assert len(_ranked([f"a{i}" for i in range(500)], {f"a{i}": 1 for i in range(500)})) == (
        ROUND_MEMBERS_KEPT
    )


def test_a_copy_paste_campaigns_members_by_item_are_their_posts() -> None:
    w, bots = _texts_world()
    lines = [x.encode() for x in w.b.sorted_lines()]
    found = [f for f in engine_findings(DUP_SETTINGS, _dup_stages(), lines)
             if f.detector == "duplicate_content"]  # fmt: skip
    assert found
    for f in found:
        grid = _shape(f)
        assert grid["members_total"] == f.evidence["accounts"]
        assert grid["items_total"] == f.evidence["items"]
        posts = [e for e in w.b.events if e.get("text") and e["actor"] in grid["members"]
                 and f.window_start <= e["ts"] < f.window_end]  # fmt: skip
        first: dict[tuple[int, int], int] = {}
        column = {c["content_id"]: j for j, c in enumerate(grid["items"])}
        for e in posts:
            if e["content_id"] in column and e["actor"] in bots:
                key = (grid["members"].index(e["actor"]), column[e["content_id"]])
                first[key] = min(first.get(key, e["ts"]), e["ts"])
        assert {(i, j): ts for i, j, ts in grid["acts"]} == first
        assert [c["start"] for c in grid["items"]] == sorted(c["start"] for c in grid["items"])


def test_the_stage_partitions_give_the_same_members_by_item_as_the_engine() -> None:
    cases = [
        (RING_SETTINGS, _stages(), [x.encode() for x in _ring_world()[0].lines()]),
        (DUP_SETTINGS, _dup_stages(), [x.encode() for x in _texts_world()[0].b.sorted_lines()]),
    ]
    for settings, stages, lines in cases:
        found = engine_findings(settings, stages, lines)
        expected = {f.finding_id: msgspec.to_builtins(f) for f in found
                    if "member_items" in f.evidence}  # fmt: skip
        assert expected
        run = run_partitioned(settings, stages, lines, Topics("t", 2), chunk=1500)
        there = {i: msgspec.to_builtins(f) for i, f in run.found.items() if i in expected}
        assert there == expected


def _group(evidence: dict[str, Any], minute: int = 0) -> Finding:
    start = T0 + minute * MINUTE
    return make_finding(
        detector="duplicate_content", article="18(4)", subject_type="group",
        subject_id="dup:x", window_start=start, window_end=start + 10 * MINUTE,
        score=0.9, severity="high", members=["a", "b"],
        evidence={"explanation": "x", **evidence},
    )  # fmt: skip


def test_the_case_view_picture_takes_a_valid_members_by_item_and_drops_a_broken_one() -> None:
    grid = {"members": ["a", "b"], "items": [{"content_id": "p1"}, {"content_id": "p2"}],
            "acts": [[0, 0, T0], [1, 1, T0 + 5]], "members_total": 2, "items_total": 2}  # fmt: skip
    good = _group({"member_items": grid})
    assert views._picture([good]) == {
        "kind": "items", "finding_id": good.finding_id, "member_items": grid,
        "items_finding_id": good.finding_id,
    }  # fmt: skip
    rounds = _group({"rounds": [{"content_id": "p1", "start": T0, "end": T0 + 1}]}, 30)
    both = views._picture([good, rounds])
    assert both is not None and both["kind"] == "rounds" and both["finding_id"] == rounds.finding_id
    assert both["member_items"] == grid and both["items_finding_id"] == good.finding_id
    for broken in (
        {**grid, "acts": [[0, 2, T0]]},  # no such item
        {**grid, "acts": [[0, 0]]},
        {**grid, "acts": []},
        {**grid, "members": "ab"},
        {**grid, "items": [{"id": "p1"}, {"content_id": "p2"}]},
        "grid",
    ):
        assert views._picture([_group({"member_items": broken})]) is None
    assert views._picture([_group({})]) is None  # a finding without it: as before


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`lockstep replay` of a ring across accounts and of a copy-paste campaign."""
    work = tmp_path_factory.mktemp("member_items")
    out = {}
    for name, lines in (
        ("ring", _ring_world()[0].lines()),
        ("copies", _texts_world()[0].b.sorted_lines()),
    ):
        events = work / f"{name}.jsonl"
        events.write_text("\n".join(lines) + "\n")
        rep = lockstep("replay", str(events), "--out", str(work / name))
        assert rep.returncode == 0, rep.stderr.decode()
        out[name] = work / name
    return out


@pytest.mark.parametrize(("name", "detector"), [("ring", "lockstep_ring"),
                                                ("copies", "duplicate_content")])  # fmt: skip
def test_the_case_view_carries_the_members_by_item(
    replayed: dict[str, Path], name: str, detector: str
) -> None:
    from pipeline.console.index import ConsoleIndex
    from pipeline.enforcement.policy import load_policy

    out = replayed[name]
    index = ConsoleIndex(out, str(out / "audit.sqlite"), load_policy().cooldown_s * 1000)
    index.refresh()
    ids = [c.case_id for c in index.book.cases.values() if detector in c.detectors]
    index.close()
    assert ids

    async def fetch() -> list[dict[str, Any]]:
        async with _serving(_console(out)) as base, httpx.AsyncClient(headers=AUTH) as client:
            return [(await client.get(f"{base}/api/cases/{i}")).json() for i in ids]

    for view in asyncio.run(fetch()):
        picture = view["picture"]
        grid = picture["member_items"]
        source = next(f for f in view["findings"] if f["finding_id"] == picture["items_finding_id"])
        assert source["detector"] == detector and grid == source["evidence"]["member_items"]
        assert grid["acts"] and grid["members"] == source["members"][:MAX_PICTURED_MEMBERS]
        assert picture["kind"] == ("rounds" if detector == "lockstep_ring" else "items")


def test_a_churners_series_is_its_quick_undos_building_up_to_the_count_judged() -> None:
    from tests.test_churn import _run, _world

    b = _world(seed=1)
    found = _run(b.sorted_lines())
    assert found
    cfg = RING_SETTINGS.detectors.churn
    undone = {f["target"]: f["ts"] for f in b.events if f["type"] == "follow"}
    for f in found:
        s = f.evidence["series"]
        assert len(s["t"]) == len(s["value"]) == len(s["expected"]) == cfg.horizon_ms // cfg.hop_ms
        assert s["t"][-1] == f.window_end and s["t"] == sorted(s["t"])
        assert {b - a for a, b in zip(s["t"], s["t"][1:], strict=False)} == {cfg.hop_ms}
        assert s["value"][-1] == f.evidence["quick_undos"] and s["expected"][-1] == cfg.prior_undos
        assert s["value"] == sorted(s["value"]) and s["expected"] == sorted(s["expected"])
        quick = sorted(  # the actor's unfollows within undo_within_ms of the follow, in the
            e["ts"]  # horizon judged (the first hop's point takes any older one remembered)
            for e in b.events
            if e["type"] == "unfollow" and e["actor"] == f.subject_id
            and 0 <= e["ts"] - undone.get(e["target"], -10**15) <= cfg.undo_within_ms
            and f.window_end - cfg.horizon_ms < e["ts"] < f.window_end
        )  # fmt: skip
        for t, v in zip(s["t"][1:], s["value"][1:], strict=True):
            assert v - s["value"][0] == sum(1 for ts in quick if s["t"][0] <= ts < t)
