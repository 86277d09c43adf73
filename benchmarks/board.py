"""The harder scoreboard: the world classes it runs, what it sums up per class and per
campaign kind, and its verdict on each criterion of issue 18's done-when.

Every class is cold (no warm-up: every campaign and hard negative begins in the first five
minutes), so a detector meets them with no history of the accounts involved: a six-hour
world, the short worlds a stream joined just now gives (where a warm-up would leave no
room), and a world five times the size. `benchmarks.quality --board` runs them; this
module only sums up their reports, so it is tested on small synthetic ones.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.lab.evaluation.report import percent, seconds
from pipeline.lab.evaluation.score import CampaignScore, Report
from pipeline.lab.labels import CAMPAIGN_KINDS

SLOW_DRIP_RECALL = 0.9  # the done-when's bounds
ACCOUNT_PRECISION = 0.99
BURST_WINDOWS = 2


@dataclass(frozen=True)
class WorldClass:
    name: str
    minutes: int
    scale: float
    cold: bool
    about: str


CLASSES: tuple[WorldClass, ...] = (
    WorldClass("cold-start", 360, 1.0, True, "six hours, everything begins in the first minutes"),
    WorldClass("short-60", 60, 1.0, True, "one hour, no room for a warm-up"),
    WorldClass("short-120", 120, 1.0, True, "two hours"),
    WorldClass("large", 120, 5.0, True, "two hours, five times the population and rates"),
)


@dataclass(frozen=True)
class KindRow:
    """One campaign kind on one class of worlds, its campaigns pooled over the seeds."""

    world_class: str
    kind: str
    campaigns: int
    detected: int
    worlds: int  # worlds holding this kind
    worlds_missed: int  # of them, worlds where a campaign of this kind was missed
    mean_member_recall: float | None
    min_member_recall: float | None
    median_latency_s: float | None
    max_latency_s: float | None


@dataclass(frozen=True)
class ClassRow:
    """One class of worlds over all its seeds."""

    world_class: str
    worlds: int
    campaigns: int
    detected: int
    worlds_missed: int  # worlds on which any campaign was missed
    precision_min: float | None  # the worst world's account precision
    precision_pooled: float | None  # every world's flagged accounts together
    negative_findings: int
    negative_accounts: int
    burst_median_s: float | None
    burst_max_s: float | None
    bursts_missed: int
    drip_recall_mean: float | None
    drip_recall_min: float | None


@dataclass(frozen=True)
class Verdict:
    criterion: str
    passed: bool
    detail: str


def _of_kind(reports: Sequence[Report], kind: str) -> list[CampaignScore]:
    return [c for r in reports for c in r.campaigns if c.kind == kind]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def kind_rows(world_class: str, reports: Sequence[Report]) -> list[KindRow]:
    """Per campaign kind present on these worlds, in the labels' order of kinds."""
    rows = []
    for kind in CAMPAIGN_KINDS:
        group = _of_kind(reports, kind)
        if not group:
            continue
        holding = [r for r in reports if any(c.kind == kind for c in r.campaigns)]
        missed = [r for r in holding if any(c.kind == kind and not c.detected for c in r.campaigns)]
        recalls = [c.member_recall for c in group if c.member_recall is not None]
        latencies = [c.latency_s for c in group if c.latency_s is not None]
        rows.append(
            KindRow(
                world_class=world_class,
                kind=kind,
                campaigns=len(group),
                detected=sum(c.detected for c in group),
                worlds=len(holding),
                worlds_missed=len(missed),
                mean_member_recall=_mean(recalls),
                min_member_recall=min(recalls, default=None),
                median_latency_s=statistics.median(latencies) if latencies else None,
                max_latency_s=max(latencies, default=None),
            )
        )
    return rows


def innocents_by_detector(reports: Sequence[Report]) -> dict[str, int]:
    """Per detector, the innocent accounts it flagged over the worlds, the most first."""
    total: Counter[str] = Counter()
    for r in reports:
        total.update(r.innocents_by_detector)
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


def class_row(world_class: str, reports: Sequence[Report]) -> ClassRow:
    """The class's worlds together: detection, precision, hard negatives, bursts, drips."""
    flagged = sum(r.summary.accounts_flagged for r in reports)
    fake_flagged = sum(r.summary.fake_accounts_flagged for r in reports)
    precisions = [
        r.summary.account_precision for r in reports if r.summary.account_precision is not None
    ]
    bursts = _of_kind(reports, "follower_burst")
    burst_latencies = [c.latency_s for c in bursts if c.latency_s is not None]
    drips = [c.member_recall for c in _of_kind(reports, "slow_drip") if c.member_recall is not None]
    return ClassRow(
        world_class=world_class,
        worlds=len(reports),
        campaigns=sum(r.summary.campaigns for r in reports),
        detected=sum(r.summary.detected for r in reports),
        worlds_missed=sum(any(not c.detected for c in r.campaigns) for r in reports),
        precision_min=min(precisions, default=None),
        precision_pooled=fake_flagged / flagged if flagged else None,
        negative_findings=sum(r.summary.hard_negative_findings for r in reports),
        negative_accounts=sum(r.summary.hard_negative_accounts_flagged for r in reports),
        burst_median_s=statistics.median(burst_latencies) if burst_latencies else None,
        burst_max_s=max(burst_latencies, default=None),
        bursts_missed=sum(not c.detected for c in bursts),
        drip_recall_mean=_mean(drips),
        drip_recall_min=min(drips, default=None),
    )


def verdicts(board: Mapping[str, Sequence[Report]], window_ms: int) -> list[Verdict]:
    """One verdict per criterion of the done-when, over every world of every class.

    * every campaign kind detected on every world: no campaign missed on any world;
    * slow-drip member recall: each class's mean over its slow drips >= 0.9;
    * account precision: every world's >= 0.99 (a world that flags nothing passes);
    * no hard negative flagged: no finding touches one and none of its accounts is named;
    * burst latency: every follower burst detected within two windows of follower_jump
      (`window_ms`) of its start.
    """
    classes = [class_row(name, reports) for name, reports in board.items()]
    kinds = [k for name, reports in board.items() for k in kind_rows(name, reports)]
    worlds = sum(c.worlds for c in classes)
    clean = worlds - sum(c.worlds_missed for c in classes)
    misses = [
        f"{k.kind} on {k.worlds_missed}/{k.worlds} {k.world_class}"
        for k in kinds
        if k.worlds_missed
    ]
    out = [
        Verdict(
            "every campaign kind detected on every world",
            clean == worlds and worlds > 0,
            f"{clean}/{worlds} worlds without a miss"
            + (f"; missed: {', '.join(misses)}" if misses else ""),
        )
    ]
    drip = [(c.world_class, c.drip_recall_mean) for c in classes]
    out.append(
        Verdict(
            f"slow_drip member recall >= {SLOW_DRIP_RECALL:g}",
            bool(drip) and all(v is not None and v >= SLOW_DRIP_RECALL for _, v in drip),
            "mean per class: " + ", ".join(f"{name} {percent(v)}" for name, v in drip),
        )
    )
    worst = [(c.world_class, c.precision_min, c.precision_pooled) for c in classes]
    out.append(
        Verdict(
            f"account precision >= {ACCOUNT_PRECISION:g} on every world",
            all(low is None or low >= ACCOUNT_PRECISION for _, low, _ in worst),
            "worst world / pooled per class: "
            + ", ".join(f"{name} {percent(low)} / {percent(p)}" for name, low, p in worst),
        )
    )
    findings = sum(c.negative_findings for c in classes)
    accounts = sum(c.negative_accounts for c in classes)
    out.append(
        Verdict(
            "no hard negative flagged",
            findings == 0 and accounts == 0,
            f"{findings} findings touch a hard negative, {accounts} of their accounts flagged",
        )
    )
    bound_s = BURST_WINDOWS * window_ms / 1000
    late = [(c.world_class, c.burst_max_s, c.bursts_missed) for c in classes]
    out.append(
        Verdict(
            f"follower_burst latency within {BURST_WINDOWS} windows ({seconds(bound_s)})",
            all(m == 0 and (s is None or s <= bound_s) for _, s, m in late)
            and any(s is not None for _, s, _ in late),
            "worst per class: "
            + ", ".join(
                f"{name} {windows(s, window_ms)}" + (f" ({m} missed)" if m else "")
                for name, s, m in late
            ),
        )
    )
    return out


def windows(latency_s: float | None, window_ms: int) -> str:
    """A latency in windows of follower_jump, with the time itself."""
    if latency_s is None:
        return "n/a"
    return f"{latency_s * 1000 / window_ms:.1f} windows ({seconds(latency_s)})"


def markdown(board: Mapping[str, Sequence[Report]], window_ms: int, command: str, when: str) -> str:
    """The section for benchmarks/RESULTS.md: classes, then kinds, then the verdicts."""
    seeds = sorted({r.seed for reports in board.values() for r in reports})
    described = "; ".join(
        f"{c.name}: {c.minutes} min, scale {c.scale:g}{', cold' if c.cold else ''}"
        for c in CLASSES
        if c.name in board
    )
    lines = [
        "## The harder scoreboard",
        "",
        f"    {command}",
        "",
        f"World classes ({described}); seeds {', '.join(map(str, seeds))}; default config;"
        f" run {when}. A cold world has no warm-up: every campaign and hard negative begins"
        " in its first five minutes. Latency is event time from a campaign's start to its"
        f" first finding; a window is follower_jump's {seconds(window_ms / 1000)}.",
        "",
        "| world class | worlds | campaigns detected | worlds with a miss "
        "| account precision worst / pooled | hard negatives: findings / accounts "
        "| follower_burst latency median / max | slow_drip member recall mean / min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, reports in board.items():
        c = class_row(name, reports)
        lines.append(
            f"| {name} | {c.worlds} | {c.detected}/{c.campaigns} | {c.worlds_missed} "
            f"| {percent(c.precision_min)} / {percent(c.precision_pooled)} "
            f"| {c.negative_findings} / {c.negative_accounts} "
            f"| {windows(c.burst_median_s, window_ms)} / {windows(c.burst_max_s, window_ms)} "
            f"| {percent(c.drip_recall_mean)} / {percent(c.drip_recall_min)} |"
        )
    lines += [
        "",
        "| world class | campaign kind | detected | worlds with a miss | mean member recall "
        "| median latency | max latency |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, reports in board.items():
        for k in kind_rows(name, reports):
            lines.append(
                f"| {name} | {k.kind} | {k.detected}/{k.campaigns} "
                f"| {k.worlds_missed}/{k.worlds} | {percent(k.mean_member_recall)} "
                f"| {seconds(k.median_latency_s)} | {seconds(k.max_latency_s)} |"
            )
    lines += ["", "Accounts flagged outside every campaign, by the detector that flagged them:", ""]
    for name, reports in board.items():
        innocents = innocents_by_detector(reports)
        listed = ", ".join(f"{d} {n}" for d, n in innocents.items()) or "none"
        lines.append(f"- {name}: {listed}")
    lines += ["", "Done-when of issue 18:", ""]
    for v in verdicts(board, window_ms):
        lines.append(f"- **{'pass' if v.passed else 'FAIL'}** {v.criterion}: {v.detail}")
    return "\n".join(lines) + "\n"
