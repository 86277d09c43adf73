"""`lockstep evaluate`'s scoring on a tiny hand-made world: a perfect findings file scores
100%, an empty one 0, and each matching rule (subjects, owners, member overlap, time) and
false-positive count holds on its own. No simulator involved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from rich.console import Console

from benchmarks.quality import kind_rows, markdown, negative_rows
from pipeline.lab.evaluation import (
    evaluate,
    perfect_findings,
    read_findings,
    render_table,
)
from pipeline.lab.evaluation.plot import MAX_PANELS, choose_panels, count_events, plot
from pipeline.lab.labels import Campaign, HardNegative, Labels
from tests.helpers import HOUR, MINUTE, T0

BOTS = [f"bot{i}" for i in range(10)]
FARM = [f"farm{i}" for i in range(5)]
FANS = [f"fan{i}" for i in range(20)]
NAT = [f"nat{i}" for i in range(8)]


def world() -> Labels:
    burst = Campaign(
        id="c1",
        kind="follower_burst",
        article="12",
        subject_type="account",
        subjects=["victim"],
        members=BOTS,
        start=T0 + 60 * MINUTE,
        end=T0 + 70 * MINUTE,
    )
    farm = Campaign(
        id="c2",
        kind="click_farm",
        article="12",
        subject_type="content",
        subjects=["post1"],
        members=FARM,
        start=T0 + 120 * MINUTE,
        end=T0 + 180 * MINUTE,
        owners=["creator"],
    )
    forced = Campaign(
        id="c3",
        kind="forced_follow",
        article="12",
        subject_type="account",
        subjects=["app_official"],
        members=[],
        start=T0 + 30 * MINUTE,
        end=T0 + 200 * MINUTE,
    )
    negatives = [
        HardNegative(
            id="n1",
            kind="viral_spike",
            subject_type="account",
            subjects=["star"],
            members=FANS,
            start=T0 + 90 * MINUTE,
            end=T0 + 100 * MINUTE,
        ),
        HardNegative(
            id="n2",
            kind="carrier_nat",
            subject_type="account",
            subjects=[],
            members=NAT,
            start=T0,
            end=T0 + 4 * HOUR,
        ),
    ]
    return Labels(
        seed=7,
        start=T0,
        end=T0 + 4 * HOUR,
        scenarios=["all"],
        campaigns=[burst, farm, forced],
        hard_negatives=negatives,
    )


def finding(
    subject_id: str,
    ts: int,
    members: list[str] | None = None,
    subject_type: str = "account",
    detector: str = "follower_jump",
    window: tuple[int, int] | None = None,
) -> dict[str, Any]:
    start, end = window or (ts - 5 * MINUTE, ts)
    return {
        "finding_id": f"{detector}-{subject_id}-{ts}",
        "detector": detector,
        "article": "12",
        "subject_type": subject_type,
        "subject_id": subject_id,
        "members": members or [],
        "score": 0.9,
        "severity": "high",
        "window_start": start,
        "window_end": end,
        "ts": ts,
        "evidence": {},
    }


def campaign(report: Any, cid: str) -> Any:
    return next(c for c in report.campaigns if c.id == cid)


def test_perfect_findings_score_everything() -> None:
    labels = world()
    report = evaluate(labels, perfect_findings(labels))
    s = report.summary
    assert (s.detected, s.campaigns) == (3, 3)
    assert s.mean_member_recall == 1.0
    assert s.account_precision == 1.0 and s.account_recall == 1.0
    assert s.fake_accounts == len(labels.fake_accounts())  # bots, farm, victim, creator, app
    assert "creator" in labels.fake_accounts()
    assert s.median_latency_s == 0.0 and s.max_latency_s == 0.0
    assert s.hard_negative_findings == 0 and s.hard_negative_accounts_flagged == 0
    assert campaign(report, "c3").member_recall is None  # no members: null, not averaged


def test_empty_findings_score_zero() -> None:
    report = evaluate(world(), [])
    s = report.summary
    assert s.detected == 0 and s.detection_rate == 0.0
    assert s.mean_member_recall == 0.0
    assert s.account_recall == 0.0
    assert s.account_precision is None  # nothing flagged: no precision to speak of
    assert s.median_latency_s is None
    assert all(k.detected == 0 for k in report.campaign_kinds)
    decoded = json.loads(report.to_json())
    assert decoded["summary"]["account_precision"] is None
    assert decoded["summary"]["account_recall"] == 0.0


def test_a_missed_campaign_lowers_detection_and_recall() -> None:
    labels = world()
    found = [f for f in perfect_findings(labels) if "c2" not in f["evidence"]["explanation"]]
    report = evaluate(labels, found)
    assert (report.summary.detected, report.summary.campaigns) == (2, 3)
    missed = campaign(report, "c2")
    assert not missed.detected and missed.latency_s is None and missed.member_recall == 0.0
    assert report.summary.mean_member_recall == 0.5  # c1 1.0, c2 0.0, c3 not averaged
    fake = labels.fake_accounts()
    assert report.summary.account_recall == pytest.approx((len(fake) - 6) / len(fake))
    assert report.summary.account_precision == 1.0
    rows = {k.kind: (k.detected, k.campaigns) for k in report.campaign_kinds}
    assert rows == {"follower_burst": (1, 1), "click_farm": (0, 1), "forced_follow": (1, 1)}


def test_an_owner_finding_detects_a_content_campaign() -> None:
    report = evaluate(world(), [finding("creator", T0 + 125 * MINUTE)])
    farm = campaign(report, "c2")
    assert farm.detected and farm.detectors == ["follower_jump"]
    assert farm.member_recall == 0.0  # the owner is no member


def test_member_overlap_needs_half_of_the_finding_inside() -> None:
    ts = T0 + 65 * MINUTE
    outsiders = ["x1", "x2", "x3"]
    half = finding("g1", ts, BOTS[:3] + outsiders, subject_type="group", detector="lockstep")
    report = evaluate(world(), [half])
    burst = campaign(report, "c1")
    assert burst.detected and burst.member_recall == pytest.approx(0.3)
    assert burst.detectors == ["lockstep"]

    minority = finding("g2", ts, BOTS[:1] + outsiders, subject_type="group")
    assert not campaign(evaluate(world(), [minority]), "c1").detected
    # the unmatched finding still flags its accounts: one fake out of four
    assert evaluate(world(), [minority]).summary.account_precision == 0.25


def test_a_member_as_account_subject_counts_for_recall() -> None:
    report = evaluate(world(), [finding("bot3", T0 + 62 * MINUTE)])
    assert campaign(report, "c1").member_recall == pytest.approx(0.1)


def test_latency_is_event_time_from_the_start_to_the_earliest_hit() -> None:
    start = T0 + 60 * MINUTE
    found = [
        finding("victim", start + 12 * MINUTE),
        finding("victim", start + 7 * MINUTE, detector="other"),
        finding("victim", start - MINUTE),  # before the campaign: no hit
    ]
    burst = campaign(evaluate(world(), found), "c1")
    assert burst.latency_s == 420.0
    assert burst.findings == 2 and burst.detectors == ["follower_jump", "other"]


def test_time_rule_bounds_the_window() -> None:
    end = T0 + 70 * MINUTE
    late = finding("victim", end + 2 * HOUR)  # evidence window an hour past the slack
    assert not campaign(evaluate(world(), [late]), "c1").detected
    within = finding("victim", end + 50 * MINUTE)
    assert campaign(evaluate(world(), [within]), "c1").detected
    stale = finding("victim", end + 2 * HOUR, window=(T0 + 65 * MINUTE, end))
    assert campaign(evaluate(world(), [stale]), "c1").detected  # old evidence, emitted late


def test_hard_negative_hits_are_false_positives_by_kind() -> None:
    labels = world()
    found = [
        *perfect_findings(labels),
        finding("star", T0 + 95 * MINUTE, members=FANS[:4]),
        finding("g9", T0 + 2 * HOUR, members=NAT[:3], subject_type="group", detector="lockstep"),
        finding("nat1", T0 + 3 * HOUR, detector="churn"),
        # mostly bots, one NAT user among them: not about the NAT, but that user is flagged
        finding("x", T0 + 3 * HOUR, members=[*BOTS[:5], NAT[5]], subject_type="group"),
    ]
    report = evaluate(labels, found)
    by_kind = {n.kind: n for n in report.negative_kinds}
    assert by_kind["viral_spike"].findings == 1
    assert by_kind["viral_spike"].accounts_flagged == 5  # star and four fans
    assert by_kind["carrier_nat"].findings == 2
    assert by_kind["carrier_nat"].accounts_flagged == 4
    assert report.summary.hard_negative_findings == 3
    assert report.summary.hard_negative_accounts_flagged == 9
    nat = next(n for n in report.hard_negatives if n.id == "n2")
    assert nat.detectors == ["churn", "lockstep"]
    flagged = len(labels.fake_accounts()) + 9
    assert report.summary.account_precision == pytest.approx(len(labels.fake_accounts()) / flagged)
    assert report.summary.detected == 3  # the false positives take nothing away from recall
    # follower_jump: star, four fans and the NAT user among bots; lockstep: three NAT
    # users; churn: nat1
    assert report.innocents_by_detector == {"churn": 1, "follower_jump": 6, "lockstep": 3}


def test_read_findings_names_the_bad_line(tmp_path: Path) -> None:
    good = [finding("victim", T0 + 65 * MINUTE), finding("star", T0 + 95 * MINUTE)]
    path = tmp_path / "findings.jsonl"
    path.write_text("\n".join(json.dumps(f) for f in good) + "\n\n")
    assert read_findings(path) == good

    path.write_text(json.dumps(good[0]) + "\n\n{not json\n")
    with pytest.raises(ValueError, match=r"findings\.jsonl:3"):
        read_findings(path)
    missing = {k: v for k, v in good[0].items() if k != "ts"}
    path.write_text(json.dumps(missing) + "\n")
    with pytest.raises(ValueError, match=r"findings\.jsonl:1: .*ts"):
        read_findings(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"findings\.jsonl:1: .*object"):
        read_findings(path)


def test_report_renders_and_serialises() -> None:
    labels = world()
    report = evaluate(labels, perfect_findings(labels)[:1])
    console = Console(record=True, width=120)
    render_table(report, console)
    text = console.export_text()
    assert "campaigns detected" in text and "1 / 3" in text
    assert "missed: c2 (click_farm), c3 (forced_follow)" in text
    assert msgspec.json.decode(report.to_json())["seed"] == 7


def _events(path: Path) -> None:
    """Ten follows on the victim, a click with an RFC 3339 time, a follow of the star, and
    lines a plot must skip: bad JSON, not an object, bad or missing ts, before the world."""
    follows = [
        {"type": "follow", "ts": T0 + 61 * MINUTE + i, "actor": bot, "target": "victim"}
        for i, bot in enumerate(BOTS)
    ]
    click = {"type": "click", "ts": "2026-01-01T02:05:00Z", "actor": "farm0", "target": "creator"}
    events = [
        *follows,
        {**click, "content_id": "post1"},
        {"type": "follow", "ts": T0 + 91 * MINUTE, "actor": "fan0", "target": "star"},
        {"type": "follow", "ts": "yesterday", "actor": "victim"},
        {"type": "follow", "actor": "victim"},
        {"type": "follow", "ts": T0 - HOUR, "actor": "victim"},
    ]
    lines = [json.dumps({"event_id": f"e{i}", **e}) for i, e in enumerate(events)]
    path.write_text("\n".join([*lines, "{not json", "[1, 2]"]) + "\n")


def test_count_events_tolerates_malformed_lines(tmp_path: Path) -> None:
    labels = world()
    _events(tmp_path / "events.jsonl")
    panels = choose_panels(labels, [])
    for panel in panels:
        panel.counts = np.zeros(300)
    count_events(labels.start, panels, tmp_path / "events.jsonl")
    totals = {p.title.split(":")[0]: sum(p.counts) for p in panels}
    assert totals["follower_burst c1"] == 10
    assert totals["click_farm c2"] == 1  # the RFC 3339 timestamp is read
    assert totals["viral_spike n1"] == 1
    assert totals["forced_follow c3"] == 0


def test_plot_writes_a_png(tmp_path: Path) -> None:
    from matplotlib.image import imread

    labels = world()
    _events(tmp_path / "events.jsonl")
    found = [*perfect_findings(labels), finding("star", T0 + 95 * MINUTE)]
    out = tmp_path / "evaluation.png"
    plot(labels, found, tmp_path / "events.jsonl", out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_panels_are_capped_and_keep_negatives_and_every_kind() -> None:
    base = world()
    many = [
        msgspec.structs.replace(c, id=f"{c.id}-{i}", subjects=[f"{s}{i}" for s in c.subjects])
        for i in range(8)
        for c in base.campaigns
    ]
    negatives = [
        msgspec.structs.replace(n, id=f"{n.id}-{i}") for i in range(5) for n in base.hard_negatives
    ]
    labels = msgspec.structs.replace(base, campaigns=many, hard_negatives=negatives)
    panels = choose_panels(labels, [])
    assert len(panels) == MAX_PANELS
    kinds = {p.title.split()[0] for p in panels}
    assert kinds == {"follower_burst", "click_farm", "forced_follow", "viral_spike", "carrier_nat"}
    assert sum(p.title.startswith(("viral", "carrier")) for p in panels) == MAX_PANELS // 3


def test_quality_benchmark_tables_pool_seeds() -> None:
    labels = world()
    reports = [evaluate(labels, perfect_findings(labels)), evaluate(labels, [])]
    rows = {k.kind: k for k in kind_rows(reports)}
    assert (rows["follower_burst"].detected, rows["follower_burst"].campaigns) == (1, 2)
    assert rows["follower_burst"].mean_member_recall == 0.5
    assert rows["forced_follow"].mean_member_recall is None
    assert [n.kind for n in negative_rows(reports)] == ["viral_spike", "carrier_nat"]
    text = markdown(reports, minutes=240, scale=1.0, today="2026-11-28")
    assert "--seeds 7 7 --minutes 240 --scale 1" in text
    assert "| follower_burst | 1/2 | 50.0% | 0 s |" in text
    assert "| 7 | 0/3 | n/a | 0.0% | 0 |" in text
