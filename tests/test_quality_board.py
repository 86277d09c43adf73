"""The harder scoreboard's sums and verdicts (benchmarks/board.py) on small hand-made
reports: per class and per kind, worst and pooled precision, burst latency in windows,
slow-drip recall, and a pass or a fail per criterion of the done-when. No world is run."""

from __future__ import annotations

from benchmarks.board import CLASSES, class_row, kind_rows, markdown, verdicts, windows
from pipeline.lab.evaluation.score import CampaignScore, Report, Summary

WINDOW_MS = 300_000


def _campaign(
    kind: str, detected: bool = True, recall: float | None = 1.0, latency_s: float | None = 60.0
) -> CampaignScore:
    return CampaignScore(
        id=f"{kind}-1",
        kind=kind,
        article="12",
        subject_type="account",
        subjects=["s"],
        members=10,
        detected=detected,
        findings=int(detected),
        member_recall=recall if detected else 0.0,
        latency_s=latency_s if detected else None,
        detectors=["d"] if detected else [],
    )


def _report(
    seed: int,
    campaigns: list[CampaignScore],
    flagged: int = 100,
    fake_flagged: int = 100,
    hn_findings: int = 0,
    hn_accounts: int = 0,
    innocents: dict[str, int] | None = None,
) -> Report:
    summary = Summary(
        findings=len(campaigns),
        campaigns=len(campaigns),
        detected=sum(c.detected for c in campaigns),
        detection_rate=None,
        mean_member_recall=None,
        median_latency_s=None,
        max_latency_s=None,
        accounts_flagged=flagged,
        fake_accounts=fake_flagged,
        fake_accounts_flagged=fake_flagged,
        account_precision=fake_flagged / flagged if flagged else None,
        account_recall=None,
        hard_negative_findings=hn_findings,
        hard_negative_accounts_flagged=hn_accounts,
    )
    return Report(seed, summary, [], [], campaigns, [], innocents or {})


def _good(seed: int) -> Report:
    return _report(
        seed,
        [
            _campaign("follower_burst", latency_s=90.0 * seed),
            _campaign("slow_drip", recall=0.95),
            _campaign("click_farm"),
        ],
    )


def test_a_class_sums_up_its_worlds() -> None:
    reports = [
        _good(1),
        _report(
            2,
            [
                _campaign("follower_burst", latency_s=400.0),
                _campaign("slow_drip", recall=0.5),
                _campaign("click_farm", detected=False),
            ],
            flagged=200,
            fake_flagged=190,
            hn_findings=2,
            hn_accounts=30,
        ),
    ]
    row = class_row("short-60", reports)
    assert (row.worlds, row.campaigns, row.detected, row.worlds_missed) == (2, 6, 5, 1)
    assert row.precision_min == 0.95
    assert row.precision_pooled == 290 / 300
    assert (row.negative_findings, row.negative_accounts) == (2, 30)
    assert (row.burst_median_s, row.burst_max_s, row.bursts_missed) == (245.0, 400.0, 0)
    assert row.drip_recall_mean == 0.725 and row.drip_recall_min == 0.5

    kinds = {k.kind: k for k in kind_rows("short-60", reports)}
    assert list(kinds) == ["follower_burst", "slow_drip", "click_farm"]
    farm = kinds["click_farm"]
    assert (farm.detected, farm.campaigns, farm.worlds_missed, farm.worlds) == (1, 2, 1, 2)
    assert farm.mean_member_recall == 0.5 and farm.min_member_recall == 0.0
    assert kinds["follower_burst"].max_latency_s == 400.0


def test_a_clean_board_passes_every_criterion() -> None:
    board = {c.name: [_good(1), _good(2)] for c in CLASSES}
    result = verdicts(board, WINDOW_MS)
    assert len(result) == 5
    assert all(v.passed for v in result), [v for v in result if not v.passed]
    assert "8/8 worlds without a miss" in result[0].detail


def test_each_criterion_fails_on_its_own_fault() -> None:
    def failing(bad: Report) -> list[str]:
        board = {"cold-start": [_good(1), bad], "large": [_good(1)]}
        return [v.criterion for v in verdicts(board, WINDOW_MS) if not v.passed]

    missed = _report(2, [_campaign("follower_burst"), _campaign("click_farm", detected=False)])
    assert failing(missed) == ["every campaign kind detected on every world"]
    drip = _report(2, [_campaign("follower_burst"), _campaign("slow_drip", recall=0.2)])
    assert failing(drip) == ["slow_drip member recall >= 0.9"]
    imprecise = _report(2, [_campaign("follower_burst")], flagged=100, fake_flagged=98)
    assert failing(imprecise) == ["account precision >= 0.99 on every world"]
    touched = _report(2, [_campaign("follower_burst")], hn_findings=0, hn_accounts=1)
    assert failing(touched) == ["no hard negative flagged"]
    late = _report(2, [_campaign("follower_burst", latency_s=601.0)])
    assert failing(late) == ["follower_burst latency within 2 windows (10.0 min)"]
    lost = _report(2, [_campaign("follower_burst", detected=False)])
    assert "follower_burst latency within 2 windows (10.0 min)" in failing(lost)


def test_a_world_that_flags_nothing_is_not_imprecise() -> None:
    quiet = _report(3, [_campaign("follower_burst")], flagged=0, fake_flagged=0)
    assert class_row("large", [quiet]).precision_min is None
    board = {"large": [quiet, _good(1)]}
    assert verdicts(board, WINDOW_MS)[2].passed


def test_markdown_has_the_tables_and_a_line_per_verdict() -> None:
    board = {"cold-start": [_good(1), _good(2)], "short-60": [_good(1)]}
    text = markdown(board, WINDOW_MS, ".venv/bin/python -m benchmarks.quality --board", "now")
    assert text.startswith("## The harder scoreboard\n")
    assert "| cold-start | 2 | 6/6 | 0 | 100.0% / 100.0% | 0 / 0 |" in text
    assert "| short-60 | slow_drip | 1/1 | 0/1 | 95.0% | 60 s | 60 s |" in text
    assert text.count("- **pass**") == 5 and "FAIL" not in text
    assert "- cold-start: none\n" in text
    noisy = [_report(1, [], innocents={"a": 2, "b": 5}), _report(2, [], innocents={"a": 4})]
    text = markdown({"large": noisy}, WINDOW_MS, "cmd", "now")
    assert "- large: a 6, b 5\n" in text
    assert windows(450.0, WINDOW_MS) == "1.5 windows (7.5 min)"
    assert windows(None, WINDOW_MS) == "n/a"
