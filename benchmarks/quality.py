"""Detection quality on simulated worlds, over several seeds.

Campaigns found, members named, how late, account precision and recall, and false positives
on hard negatives:

    .venv/bin/python -m benchmarks.quality [--seeds 1 2 3] [--minutes 360] [--scale 1.0] [--plot]
    .venv/bin/python -m benchmarks.quality --board [--seeds 1 ... 12] [--workers 2]

Per seed: `simulate` writes the events and labels under benchmarks/.data/quality/, `replay`
runs them in-process with the default config, `evaluate` scores the findings (rules in
pipeline/lab/evaluation/score.py). Prints a table per seed and per kind, then Markdown to paste
into benchmarks/RESULTS.md. Campaigns of a kind are pooled over seeds, so the kind rows
weigh every planted campaign equally.

`--board` is the harder scoreboard (benchmarks/board.py): cold-start, short and large
worlds, each class over the seeds (1-12 unless `--seeds` names others, such as held-out
ones), `--workers` worlds at a time, summed up per class and kind with a verdict on each
criterion of issue 18's done-when. `--cold` makes the single-class mode's worlds cold.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import board
from pipeline.core.settings import load_settings
from pipeline.embedded.replay import replay
from pipeline.lab.evaluation import evaluate, read_findings
from pipeline.lab.evaluation.plot import plot
from pipeline.lab.evaluation.report import percent, seconds
from pipeline.lab.evaluation.score import CampaignScore, Report
from pipeline.lab.labels import CAMPAIGN_KINDS, NEGATIVE_KINDS

DATA = Path(__file__).resolve().parent / ".data" / "quality"


@dataclass(frozen=True)
class SeedRun:
    seed: int
    report: Report
    events: int
    simulate_s: float
    replay_s: float


@dataclass(frozen=True)
class KindRow:
    kind: str
    detected: int
    campaigns: int
    mean_member_recall: float | None
    median_latency_s: float | None


@dataclass(frozen=True)
class NegativeRow:
    kind: str
    negatives: int
    findings: int
    accounts_flagged: int


def run_seed(
    seed: int, minutes: int, scale: float, draw: bool = False, cold: bool = False
) -> SeedRun:
    """Simulate, replay and evaluate one world; its files stay on disk to look into."""
    from pipeline.lab.simulation import simulate

    where = DATA / f"seed{seed}-{minutes}min-x{scale:g}{'-cold' if cold else ''}"
    where.mkdir(parents=True, exist_ok=True)
    events, labels_path, out = where / "events.jsonl", where / "labels.json", where / "out"
    started = time.perf_counter()
    labels = simulate(
        minutes=minutes,
        seed=seed,
        scenarios=None,
        out=events,
        labels_out=labels_path,
        scale=scale,
        cold=cold,
    )
    simulated = time.perf_counter()
    summary = replay(str(events), out, load_settings(), progress=False)
    replayed = time.perf_counter()
    findings = read_findings(out / "findings.jsonl")
    report = evaluate(labels, findings)
    (where / "report.json").write_bytes(report.to_json())
    if draw:
        plot(labels, findings, events, where / "evaluation.png")
    return SeedRun(
        seed=seed,
        report=report,
        events=summary["events"],
        simulate_s=simulated - started,
        replay_s=replayed - simulated,
    )


def kind_rows(reports: Sequence[Report]) -> list[KindRow]:
    """Campaign kinds pooled over seeds, in the labels' order of kinds."""
    pooled: dict[str, list[CampaignScore]] = {kind: [] for kind in CAMPAIGN_KINDS}
    for report in reports:
        for c in report.campaigns:
            pooled[c.kind].append(c)
    rows = []
    for kind, group in pooled.items():
        if not group:
            continue
        recalls = [c.member_recall for c in group if c.member_recall is not None]
        latencies = [c.latency_s for c in group if c.latency_s is not None]
        rows.append(
            KindRow(
                kind=kind,
                detected=sum(c.detected for c in group),
                campaigns=len(group),
                mean_member_recall=sum(recalls) / len(recalls) if recalls else None,
                median_latency_s=statistics.median(latencies) if latencies else None,
            )
        )
    return rows


def negative_rows(reports: Sequence[Report]) -> list[NegativeRow]:
    """Hard-negative kinds summed over seeds, in the labels' order of kinds."""
    totals: dict[str, list[int]] = {}
    for report in reports:
        for n in report.negative_kinds:
            row = totals.setdefault(n.kind, [0, 0, 0])
            row[0] += n.negatives
            row[1] += n.findings
            row[2] += n.accounts_flagged
    return [NegativeRow(kind, *totals[kind]) for kind in NEGATIVE_KINDS if kind in totals]


def command(seeds: Sequence[int], minutes: int, scale: float, cold: bool = False) -> str:
    seed_args = " ".join(str(s) for s in seeds)
    return (
        f".venv/bin/python -m benchmarks.quality --seeds {seed_args} "
        f"--minutes {minutes} --scale {scale:g}{' --cold' if cold else ''}"
    )


def markdown(
    reports: Sequence[Report], minutes: int, scale: float, today: str, cold: bool = False
) -> str:
    """The section for benchmarks/RESULTS.md."""
    seeds = [r.seed for r in reports]
    start = "cold (everything begins in the first five minutes)" if cold else "warm"
    lines = [
        "## Detection quality on simulated worlds",
        "",
        f"    {command(seeds, minutes, scale, cold)}",
        "",
        textwrap.fill(
            f"Seeds {', '.join(map(str, seeds))}; {minutes} min of event time each, scale "
            f"{scale:g}, {start}; default config; run {today}. Campaigns of a kind are pooled "
            "over seeds; latency is event time from a campaign's start to its first finding.",
            width=95,
        ),
        "",
        "| campaign kind | detected (all seeds) | mean member recall | median latency |",
        "|---|---|---|---|",
    ]
    for k in kind_rows(reports):
        lines.append(
            f"| {k.kind} | {k.detected}/{k.campaigns} | {percent(k.mean_member_recall)} "
            f"| {seconds(k.median_latency_s)} |"
        )
    lines += [
        "",
        "| seed | campaigns detected | account precision | account recall "
        "| hard-negative false positives |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        s = r.summary
        lines.append(
            f"| {r.seed} | {s.detected}/{s.campaigns} | {percent(s.account_precision)} "
            f"| {percent(s.account_recall)} | {s.hard_negative_findings} |"
        )
    lines += [
        "",
        "| hard-negative kind | negatives (all seeds) | false-positive findings "
        "| innocent accounts flagged |",
        "|---|---|---|---|",
    ]
    for n in negative_rows(reports):
        lines.append(f"| {n.kind} | {n.negatives} | {n.findings} | {n.accounts_flagged} |")
    return "\n".join(lines) + "\n"


def print_tables(runs: Sequence[SeedRun], console: Console) -> None:
    per_seed = Table(title="Per seed")
    columns = (
        "seed",
        "events",
        "findings",
        "detected",
        "member recall",
        "median latency",
        "precision",
        "recall",
        "HN false positives",
    )
    for name in columns:
        per_seed.add_column(name, justify="right")
    for run in runs:
        s = run.report.summary
        per_seed.add_row(
            str(run.seed),
            f"{run.events:,}",
            f"{s.findings:,}",
            f"{s.detected}/{s.campaigns}",
            percent(s.mean_member_recall),
            seconds(s.median_latency_s),
            percent(s.account_precision),
            percent(s.account_recall),
            f"{s.hard_negative_findings:,}",
        )
    console.print(per_seed)

    reports = [run.report for run in runs]
    kinds = Table(title="Campaign kinds, all seeds")
    for name in ("kind", "detected", "mean member recall", "median latency"):
        kinds.add_column(name, justify="left" if name == "kind" else "right")
    for k in kind_rows(reports):
        kinds.add_row(
            k.kind,
            f"{k.detected}/{k.campaigns}",
            percent(k.mean_member_recall),
            seconds(k.median_latency_s),
        )
    console.print(kinds)

    negatives = Table(title="Hard-negative kinds, all seeds")
    for name in ("kind", "negatives", "false-positive findings", "accounts flagged"):
        negatives.add_column(name, justify="left" if name == "kind" else "right")
    for n in negative_rows(reports):
        negatives.add_row(n.kind, str(n.negatives), str(n.findings), str(n.accounts_flagged))
    console.print(negatives)


def run_board(seeds: Sequence[int], workers: int, console: Console) -> dict[str, list[Report]]:
    """Every world of every class, `workers` at a time (the largest first, so the small
    ones fill in at the end); reports by class, in seed order."""
    jobs = sorted(
        ((c, seed) for c in board.CLASSES for seed in seeds),
        key=lambda job: -job[0].minutes * job[0].scale,
    )
    runs: dict[str, list[SeedRun]] = {c.name: [] for c in board.CLASSES}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(run_seed, seed, c.minutes, c.scale, cold=c.cold): (c, seed)
            for c, seed in jobs
        }
        for future in as_completed(futures):
            c, seed = futures[future]
            run = future.result()
            runs[c.name].append(run)
            s = run.report.summary
            missed = sorted({x.kind for x in run.report.campaigns if not x.detected})
            console.print(
                f"{c.name} seed {seed}: {run.events:,} events simulated in "
                f"{run.simulate_s:.1f} s, replayed in {run.replay_s:.1f} s; "
                f"{s.detected}/{s.campaigns} detected"
                + (f", missed {', '.join(missed)}" if missed else ""),
                markup=False,
            )
    return {
        name: [run.report for run in sorted(group, key=lambda r: r.seed)]
        for name, group in runs.items()
    }


def print_board(reports: dict[str, list[Report]], window_ms: int, console: Console) -> None:
    classes = Table(title="World classes")
    columns = (
        "class",
        "worlds",
        "detected",
        "worlds missed",
        "precision worst",
        "pooled",
        "HN findings",
        "HN accounts",
        "burst median",
        "burst max",
        "drip recall mean",
        "min",
    )
    for name in columns:
        classes.add_column(name, justify="left" if name == "class" else "right")
    for name, group in reports.items():
        c = board.class_row(name, group)
        classes.add_row(
            name,
            str(c.worlds),
            f"{c.detected}/{c.campaigns}",
            str(c.worlds_missed),
            percent(c.precision_min),
            percent(c.precision_pooled),
            str(c.negative_findings),
            str(c.negative_accounts),
            board.windows(c.burst_median_s, window_ms),
            board.windows(c.burst_max_s, window_ms),
            percent(c.drip_recall_mean),
            percent(c.drip_recall_min),
        )
    console.print(classes)
    kinds = Table(title="Campaign kinds per world class")
    columns = ("class", "kind", "detected", "worlds missed", "member recall", "median", "max")
    for name in columns:
        kinds.add_column(name, justify="left" if name in ("class", "kind") else "right")
    for name, group in reports.items():
        for k in board.kind_rows(name, group):
            kinds.add_row(
                name,
                k.kind,
                f"{k.detected}/{k.campaigns}",
                f"{k.worlds_missed}/{k.worlds}",
                percent(k.mean_member_recall),
                seconds(k.median_latency_s),
                seconds(k.max_latency_s),
            )
    console.print(kinds)
    for v in board.verdicts(reports, window_ms):
        console.print(f"{'pass' if v.passed else 'FAIL'}  {v.criterion}: {v.detail}", markup=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--minutes", type=int, default=360)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--cold", action="store_true", help="no warm-up: campaigns at once")
    parser.add_argument("--plot", action="store_true", help="also draw evaluation.png per seed")
    parser.add_argument("--board", action="store_true", help="the harder scoreboard")
    parser.add_argument("--workers", type=int, default=2, help="--board: worlds at a time")
    args = parser.parse_args()
    console = Console(highlight=False)
    if not console.is_terminal:  # piped into a file: keep the wide tables readable
        console.width = 160
    if args.board:
        seeds = args.seeds or list(range(1, 13))
        started = datetime.datetime.now(datetime.UTC)
        reports = run_board(seeds, args.workers, console)
        window_ms = load_settings().detectors.follower_jump.window_ms
        print_board(reports, window_ms, console)
        took = (datetime.datetime.now(datetime.UTC) - started).total_seconds() / 60
        when = f"{started:%Y-%m-%d %H:%M} UTC ({took:.0f} min, {args.workers} at a time)"
        seed_args = " ".join(map(str, seeds))
        cmd = f".venv/bin/python -m benchmarks.quality --board --seeds {seed_args}"
        print()
        print(board.markdown(reports, window_ms, cmd, when))
        return
    runs = []
    for seed in args.seeds or [1, 2, 3]:
        run = run_seed(seed, args.minutes, args.scale, draw=args.plot, cold=args.cold)
        runs.append(run)
        s = run.report.summary
        console.print(
            f"seed {seed}: {run.events:,} events simulated in {run.simulate_s:.1f} s, replayed "
            f"in {run.replay_s:.1f} s; {s.detected}/{s.campaigns} campaigns detected",
            markup=False,
        )
    print_tables(runs, console)
    today = datetime.date.today().isoformat()
    print()
    print(markdown([run.report for run in runs], args.minutes, args.scale, today, args.cold))


if __name__ == "__main__":
    main()
