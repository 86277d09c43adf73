"""The evaluation report on a terminal: a summary, then one row per campaign kind and per
hard-negative kind, then the campaigns that were missed (what to look at next)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pipeline.lab.evaluation.score import Report

MISSED_SHOWN = 10


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def render_table(report: Report, console: Console) -> None:
    s = report.summary
    summary = Table(title=f"Evaluation (seed {report.seed}, {s.findings:,} findings)")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("campaigns detected", f"{s.detected} / {s.campaigns}")
    summary.add_row("mean member recall", percent(s.mean_member_recall))
    latency = f"{seconds(s.median_latency_s)} / {seconds(s.max_latency_s)}"
    summary.add_row("latency median / max", latency)
    summary.add_row("account precision", percent(s.account_precision))
    summary.add_row(
        "account recall",
        f"{percent(s.account_recall)} ({s.fake_accounts_flagged:,} of {s.fake_accounts:,})",
    )
    summary.add_row("accounts flagged", f"{s.accounts_flagged:,}")
    summary.add_row("hard-negative false-positive findings", f"{s.hard_negative_findings:,}")
    summary.add_row("hard-negative accounts flagged", f"{s.hard_negative_accounts_flagged:,}")
    console.print(summary)

    kinds = Table(title="Campaigns by kind")
    for name in ("kind", "detected", "mean member recall", "median latency"):
        kinds.add_column(name, justify="left" if name == "kind" else "right")
    for k in report.campaign_kinds:
        kinds.add_row(
            k.kind,
            f"{k.detected} / {k.campaigns}",
            percent(k.mean_member_recall),
            seconds(k.median_latency_s),
        )
    if report.campaign_kinds:
        console.print(kinds)

    negatives = Table(title="Hard negatives by kind")
    for name in ("kind", "negatives", "false-positive findings", "accounts flagged"):
        negatives.add_column(name, justify="left" if name == "kind" else "right")
    for n in report.negative_kinds:
        negatives.add_row(n.kind, str(n.negatives), f"{n.findings:,}", f"{n.accounts_flagged:,}")
    if report.negative_kinds:
        console.print(negatives)

    missed = [c for c in report.campaigns if not c.detected]
    if missed:
        shown = ", ".join(f"{c.id} ({c.kind})" for c in missed[:MISSED_SHOWN])
        more = f" and {len(missed) - MISSED_SHOWN} more" if len(missed) > MISSED_SHOWN else ""
        console.print(f"missed: {shown}{more}", markup=False)
