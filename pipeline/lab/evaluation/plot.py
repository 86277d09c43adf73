"""`lockstep evaluate --plot`: what happened around each planted campaign and hard negative,
so a person can see why a detector fired, fired late, or stayed silent.

One panel per campaign subject and per hard negative (at most MAX_PANELS, spread over the
kinds): events per minute involving the panel's ids (as actor, target or content item),
the labelled window shaded, and a vertical line at the `ts` of each finding on those ids
(solid) or otherwise matched to that campaign or negative (dashed). Drawn with the Agg
canvas directly, so it never needs a display or touches pyplot's global state.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from pipeline.lab.evaluation.inputs import ScoredFinding, as_scored
from pipeline.lab.evaluation.match import CampaignMatch, NegativeMatch, guilty_ids
from pipeline.lab.labels import CAMPAIGN_KINDS, NEGATIVE_KINDS, Labels

MAX_PANELS = 12
COLUMNS = 3
MINUTE_MS = 60_000
CAMPAIGN_SHADE = "tab:red"
NEGATIVE_SHADE = "tab:green"


@dataclass
class Panel:
    title: str
    ids: frozenset[str]
    start: int
    end: int
    shade: str
    related: list[ScoredFinding]  # findings matched to the campaign or negative
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))


class _Touch(msgspec.Struct):
    """The fields of an event that say whom it involves and when; the rest is skipped."""

    ts: int | str
    actor: str | None = None
    target: str | None = None
    content_id: str | None = None


def plot(
    labels: Labels,
    findings: list[dict[str, Any]],
    events_path: str | Path | None,
    out_png: str | Path,
) -> None:
    """Write the PNG; without events the panels show only windows and findings."""
    scored = as_scored(findings)
    panels = choose_panels(labels, scored)
    minutes = math.ceil((labels.end - labels.start) / MINUTE_MS) + 1
    for panel in panels:
        panel.counts = np.zeros(minutes)
    if events_path is not None:
        count_events(labels.start, panels, events_path)
    _draw(labels.start, panels, scored, minutes).savefig(out_png, format="png", dpi=100)


def choose_panels(labels: Labels, findings: list[ScoredFinding]) -> list[Panel]:
    """Every campaign's first subject before any second one, kinds taking turns, so a capped
    grid still shows every kind; negatives get at least a third of it when there are any."""
    ranked: list[tuple[tuple[int, int, int], Panel]] = []
    seen_in_kind: dict[str, int] = {}
    for c in labels.campaigns:
        rank = seen_in_kind[c.kind] = seen_in_kind.get(c.kind, -1) + 1
        match = CampaignMatch(c)
        related = [f for f in findings if match.hits(f)]
        groups = [[s] for s in c.subjects] or [list(c.members)]
        for i, ids in enumerate(groups):
            name = ids[0] if len(ids) == 1 else f"{len(ids)} members"
            panel = Panel(
                f"{c.kind} {c.id}: {name}", frozenset(ids), c.start, c.end, CAMPAIGN_SHADE, related
            )
            ranked.append(((i, rank, CAMPAIGN_KINDS.index(c.kind)), panel))
    campaign_panels = [p for _, p in sorted(ranked, key=lambda item: item[0])]

    guilty = guilty_ids(labels)
    ranked = []
    seen_in_kind = {}
    for n in labels.hard_negatives:
        rank = seen_in_kind[n.kind] = seen_in_kind.get(n.kind, -1) + 1
        negative = NegativeMatch(n, guilty)
        related = [f for f in findings if negative.touches(f)]
        ids = list(n.subjects) or list(n.members)
        name = ids[0] if len(ids) == 1 else f"{len(ids)} ids"
        panel = Panel(
            f"{n.kind} {n.id}: {name}", frozenset(ids), n.start, n.end, NEGATIVE_SHADE, related
        )
        ranked.append(((0, rank, NEGATIVE_KINDS.index(n.kind)), panel))
    negative_panels = [p for _, p in sorted(ranked, key=lambda item: item[0])]

    negatives = min(len(negative_panels), max(MAX_PANELS - len(campaign_panels), MAX_PANELS // 3))
    return campaign_panels[: MAX_PANELS - negatives] + negative_panels[:negatives]


def count_events(start: int, panels: Sequence[Panel], events_path: str | Path) -> None:
    """Stream the events once, adding each to the minute of every panel it involves; lines
    that are not events (bad JSON, missing or odd ts) are skipped, as a plot must not fail
    on input replay would dead-letter."""
    index: dict[str, list[Panel]] = {}
    for panel in panels:
        for i in panel.ids:
            index.setdefault(i, []).append(panel)
    decode = msgspec.json.Decoder(_Touch).decode
    for line in _lines(Path(events_path)):
        try:
            event = decode(line)
        except msgspec.DecodeError:
            continue
        involved = {
            id(p): p
            for key in (event.actor, event.target, event.content_id)
            if key is not None and key in index
            for p in index[key]
        }
        if not involved:
            continue
        ts = _epoch_ms(event.ts)
        if ts is None:
            continue
        minute = (ts - start) // MINUTE_MS
        for panel in involved.values():
            if 0 <= minute < len(panel.counts):
                panel.counts[minute] += 1


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as raw:
        gzipped = path.suffix == ".gz" or raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as lines:
        yield from lines


def _epoch_ms(ts: int | str) -> int | None:
    if isinstance(ts, int):
        return ts
    try:
        return int(datetime.fromisoformat(ts).timestamp() * 1000)
    except ValueError:
        return None


def _draw(start: int, panels: list[Panel], findings: list[ScoredFinding], minutes: int) -> Figure:
    columns = min(COLUMNS, max(len(panels), 1))
    rows = max(math.ceil(len(panels) / columns), 1)
    width = 5 * max(columns, 2)  # room for the legend above a lone panel
    fig = Figure(figsize=(width, 2.8 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    if not panels:
        axes[0].text(0.5, 0.5, "no campaigns or hard negatives", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    x = np.arange(minutes)
    for ax, panel in zip(axes, panels, strict=False):
        ax.plot(x, panel.counts, color="tab:blue", linewidth=0.8)
        ax.axvspan(_at(panel.start, start), _at(panel.end, start), color=panel.shade, alpha=0.15)
        on_subject = {f.ts for f in findings if f.subject_id in panel.ids}
        for ts in sorted(on_subject):
            ax.axvline(_at(ts, start), color="black", linewidth=0.8)
        for ts in sorted({f.ts for f in panel.related} - on_subject):
            ax.axvline(_at(ts, start), color="tab:orange", linewidth=0.8, linestyle="--")
        ax.set_title(_label(panel.title), fontsize=9)
        ax.set_xlim(0, minutes - 1)
        ax.set_ylim(0, max(1.0, float(np.max(panel.counts, initial=0)) * 1.1))
        ax.tick_params(labelsize=8)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    for ax in axes[(rows - 1) * columns :]:
        ax.set_xlabel("minutes from start", fontsize=8)
    for ax in axes[::columns]:
        ax.set_ylabel("events / min", fontsize=8)
    fig.legend(handles=_legend(), loc="outside upper center", ncols=5, fontsize=8)
    return fig


def _at(ts: int, start: int) -> float:
    return (ts - start) / MINUTE_MS


def _label(text: str, limit: int = 48) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")  # ids are shown as typed, never as mathtext


def _legend() -> list[Any]:
    return [
        Line2D([], [], color="tab:blue", linewidth=0.8, label="events / min"),
        Patch(color=CAMPAIGN_SHADE, alpha=0.15, label="campaign"),
        Patch(color=NEGATIVE_SHADE, alpha=0.15, label="hard negative"),
        Line2D([], [], color="black", linewidth=0.8, label="finding on subject"),
        Line2D([], [], color="tab:orange", linestyle="--", label="other matching finding"),
    ]
