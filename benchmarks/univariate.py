"""Univariate count detectors on labelled organic series: which ranks rare, genuine anomalies
above the daily rhythm and ordinary bursts.

    python -m benchmarks.univariate [--seeds 80] [--days-min 5] [--days-max 10]

Each seed builds one series of 5-minute counts (288 windows a day). Its shape is the
simulator's: the platform's daily rhythm (`pipeline.lab.simulation.clock.rhythm`) times a
creator's organic follow rate, drawn as `build_world` draws popularity (lognormal follows
an hour) times a scale drawn log-uniformly, so the series run from nearly empty to
thousands a window. The simulator's organic follows are plain Poisson on that rhythm, with
no bursts, so the rest is drawn here with numpy: day-to-day level drift, overdispersion (a
gamma multiplier per window), and ordinary bursts (a few a day, Pareto-sized, decaying over
a few windows), all unlabelled. Then labelled anomalies are injected after two days of
warm-up: spikes (1-3 windows, x2 to x20), level shifts (2-12 hours, x1.5 to x5) and drops
(30 minutes to 6 hours, to 0-50% of normal).

Scored, one `update(t, count)` per window: `models.CountBaseline` (upward EWMA z on the
Anscombe scale), `models.SeasonalBaseline`, and a plain two-sided EWMA z-score on the raw
counts (written here). Windows of the first two days are not scored (no model has a day
of history there). Metrics over all scored windows of all series of a half pooled (one
threshold for every series, so a score must mean the same on quiet and busy ones):
ROC-AUC and PR-AUC (average precision, scikit-learn), and at an alert budget of 1% of
windows (the pooled top 1%) event recall (an anomaly is found if any window of it is
alerted) and alert precision (a run of consecutive alerted windows of a series is one
alert; it is true if it touches an anomaly). "Never alert" is the reference: ROC-AUC 0.5,
PR-AUC the share of anomalous windows, recall 0.

Seeds 0..N/2-1 are the tuning half: each model's small parameter grid is scored there and
the best by event recall at the budget (then PR-AUC) is kept; seeds N/2..N-1 are held out
and only the kept parameters run there. Prints a table and writes
benchmarks/.data/univariate-YYYYMMDD-HHMMSS.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models import CountBaseline, SeasonalBaseline
from pipeline.lab.simulation.clock import EPOCH_MS, MINUTE, rhythm

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
DAY_WINDOWS = 288
WINDOW_MS = 5 * MINUTE
WARM_DAYS = 2
BUDGET = 0.01
KINDS = ("spike", "shift", "drop")


# -- the series -------------------------------------------------------------------------


def build_series(seed: int, days_min: int = 5, days_max: int = 10) -> dict[str, Any]:
    """One labelled series: counts (int64 per 5-minute window), label (bool per window)
    and events [(kind, start, end)] of the injected anomalies."""
    rng = np.random.default_rng([seed, 4])
    days = int(rng.integers(days_min, days_max + 1))
    n = days * DAY_WINDOWS
    per_hour = math.exp(rng.normal(math.log(6.0), 1.35)) * math.exp(rng.uniform(0.0, 4.5))
    starts = EPOCH_MS + np.arange(n, dtype=np.int64) * WINDOW_MS
    shape = np.mean([rhythm(starts + k * MINUTE) for k in range(5)], axis=0)
    lam = per_hour / 12.0 * shape
    # Day-to-day drift of the level.
    lam *= np.repeat(np.exp(rng.normal(0.0, 0.1, days)), DAY_WINDOWS)
    # Ordinary bursts: a few a day, Pareto-sized, decaying over a few windows.
    bursts = np.zeros(n)
    n_bursts = rng.poisson(rng.uniform(0.5, 4.0) * days)
    for at in rng.integers(0, n, n_bursts):
        size = 0.2 * (rng.pareto(1.5) + 1.0)
        tau = rng.uniform(1.0, 6.0)
        span = np.arange(at, min(n, at + int(6 * tau) + 1))
        bursts[span] += size * np.exp(-(span - at) / tau)
    lam *= 1.0 + bursts
    # Overdispersion: a gamma multiplier per window (shape k: 5 is rough, 200 near Poisson).
    k = math.exp(rng.uniform(math.log(5.0), math.log(200.0)))
    lam *= rng.gamma(k, 1.0 / k, n)
    # Labelled anomalies, not overlapping, after the warm-up days.
    label = np.zeros(n, dtype=bool)
    events: list[tuple[str, int, int]] = []
    factor = np.ones(n)
    for _ in range(int(rng.integers(2, 2 + days))):
        kind = KINDS[int(rng.integers(0, 3))]
        if kind == "spike":
            length, mult = int(rng.integers(1, 4)), math.exp(rng.uniform(math.log(2), math.log(20)))
        elif kind == "shift":
            length, mult = int(rng.integers(24, 145)), math.exp(rng.uniform(math.log(1.5), 1.61))
        else:
            length, mult = int(rng.integers(6, 73)), rng.uniform(0.0, 0.5)
        start = int(rng.integers(WARM_DAYS * DAY_WINDOWS, n - length))
        if label[max(0, start - 12) : start + length + 12].any():
            continue
        label[start : start + length] = True
        factor[start : start + length] = mult
        events.append((kind, start, start + length))
    counts = rng.poisson(lam * factor)
    return {
        "counts": counts,
        "label": label,
        "events": events,
        "per_window": per_hour / 12.0,
        "days": days,
    }


# -- the detectors ----------------------------------------------------------------------


class EwmaZ:
    """The plain reference: EWMA mean and variance of the raw count, |z| two-sided."""

    def __init__(self, alpha: float = 0.05, warmup: int = 12) -> None:
        self.alpha, self.warmup, self.mean, self.var, self.n = alpha, warmup, 0.0, 1.0, 0

    def update(self, t: int, value: float) -> float:
        if self.n == 0:
            self.mean, self.n = float(value), 1
            return 0.0
        z = abs(value - self.mean) / math.sqrt(max(self.var, 1e-6))
        diff = value - self.mean
        self.mean += self.alpha * diff
        self.var = (1.0 - self.alpha) * (self.var + self.alpha * diff * diff)
        self.n += 1
        return 0.0 if self.n <= self.warmup else z


GRIDS: dict[str, list[dict[str, float | None]]] = {
    "count_baseline": [{"alpha": a} for a in (0.02, 0.05, 0.1)],
    "ewma_z": [{"alpha": a} for a in (0.02, 0.05, 0.1)],
    "seasonal_baseline": [
        {"quantile": q, "persist_half_life": h, "onset_half_life": o, "alpha": a}
        for q in (0.95, 0.99)
        for h in (3.0, 12.0)
        for o in (None, 1.0, 3.0)
        for a in (0.03, 0.1)
    ],
}
MAKERS: dict[str, Callable[..., Any]] = {
    "count_baseline": CountBaseline,
    "ewma_z": EwmaZ,
    "seasonal_baseline": SeasonalBaseline,
}


def run(make: Callable[[], Any], series: list[dict[str, Any]]) -> list[np.ndarray]:
    """Scores of every window of every series, one fresh model per series."""
    out = []
    for s in series:
        model = make()
        out.append(np.array([model.update(t, float(x)) for t, x in enumerate(s["counts"])]))
    return out


# -- the metrics ------------------------------------------------------------------------


def metrics(series: list[dict[str, Any]], scores: list[np.ndarray] | None) -> dict[str, Any]:
    """Pooled window ROC-AUC / PR-AUC and event recall / alert precision at the budget;
    `scores` None is the never-alert reference."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    skip = WARM_DAYS * DAY_WINDOWS
    label = np.concatenate([s["label"][skip:] for s in series])
    n_events = sum(len(s["events"]) for s in series)
    if scores is None:
        return {
            "roc_auc": 0.5,
            "pr_auc": float(label.mean()),
            "recall": 0.0,
            "precision": None,
            "recall_by_kind": dict.fromkeys(KINDS, 0.0),
            "events": n_events,
        }
    pooled = np.concatenate([sc[skip:] for sc in scores])
    threshold = np.quantile(pooled, 1.0 - BUDGET)
    found = dict.fromkeys(KINDS, 0)
    total = dict.fromkeys(KINDS, 0)
    alerts = true_alerts = 0
    for s, sc in zip(series, scores, strict=True):
        alerted = np.zeros(sc.size, dtype=bool)
        alerted[skip:] = sc[skip:] > threshold
        for kind, a, b in s["events"]:
            total[kind] += 1
            found[kind] += int(alerted[a:b].any())
        edges = np.flatnonzero(np.diff(np.concatenate([[0], alerted.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            alerts += 1
            true_alerts += int(s["label"][a:b].any())
    return {
        "roc_auc": float(roc_auc_score(label, pooled)),
        "pr_auc": float(average_precision_score(label, pooled)),
        "recall": sum(found.values()) / max(n_events, 1),
        "precision": true_alerts / alerts if alerts else None,
        "recall_by_kind": {k: found[k] / total[k] if total[k] else None for k in KINDS},
        "events": n_events,
    }


def _row(name: str, m: dict[str, Any]) -> str:
    prec = "-" if m["precision"] is None else f"{m['precision']:.3f}"
    kinds = " / ".join(
        "-" if m["recall_by_kind"][k] is None else f"{m['recall_by_kind'][k]:.2f}" for k in KINDS
    )
    return (
        f"| {name} | {m['roc_auc']:.3f} | {m['pr_auc']:.3f} | {m['recall']:.3f} | {prec} "
        f"| {kinds} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=80)
    parser.add_argument("--days-min", type=int, default=5)
    parser.add_argument("--days-max", type=int, default=10)
    args = parser.parse_args()
    half = args.seeds // 2
    began = time.perf_counter()
    tune = [build_series(s, args.days_min, args.days_max) for s in range(half)]
    held = [build_series(s, args.days_min, args.days_max) for s in range(half, args.seeds)]
    result: dict[str, Any] = {
        "command": "python -m benchmarks.univariate "
        f"--seeds {args.seeds} --days-min {args.days_min} --days-max {args.days_max}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "series": {
            "tuning": {"seeds": [0, half - 1], "windows": sum(s["counts"].size for s in tune)},
            "held_out": {
                "seeds": [half, args.seeds - 1],
                "windows": sum(s["counts"].size for s in held),
            },
        },
        "grid": {},
        "chosen": {},
        "tuning": {"never_alert": metrics(tune, None)},
        "held_out": {"never_alert": metrics(held, None)},
    }
    for name, grid in GRIDS.items():
        best: tuple[tuple[float, float], dict[str, Any], dict[str, Any]] | None = None
        result["grid"][name] = []
        for params in grid:
            m = metrics(tune, run(lambda p=params, n=name: MAKERS[n](**p), tune))
            result["grid"][name].append({"params": params, **m})
            key = (m["recall"], m["pr_auc"])
            if best is None or key > best[0]:
                best = (key, params, m)
        assert best is not None
        result["chosen"][name] = best[1]
        result["tuning"][name] = best[2]
        result["held_out"][name] = metrics(
            held, run(lambda p=best[1], n=name: MAKERS[n](**p), held)
        )
    result["seconds"] = time.perf_counter() - began
    header = (
        "| model | ROC-AUC | PR-AUC | event recall @1% | alert precision @1% "
        "| recall spike / shift / drop |\n|---|---|---|---|---|---|"
    )
    for part in ("tuning", "held_out"):
        print(f"\n{part} seeds {result['series'][part]['seeds']}:")
        print(header)
        for name in ("never_alert", *GRIDS):
            print(_row(name, result[part][name]))
    print("\nchosen on the tuning half:", json.dumps(result["chosen"]))
    DATA.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = DATA / f"univariate-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
