"""ROC-AUC and edges/s of `models.EdgeBurst` on the DARPA 1998 edge stream, as MIDAS scores it.

    python -m benchmarks.darpa [--rows 4] [--buckets 1024] [--seed 0] [--decay 0.95]
                               [--factor 0.5] [--limit N] [--per-call-limit N]
                               [--rounds 3] [--grid] [--zip PATH]

The stream is `darpa_original.csv` in `../shared/benchmarks/darpa/darpa_original.zip`
(4,554,344 rows `srcIP,dstIP,MM/DD/YYYY-HH:MM,attack`), prepared as the MIDAS papers do:
every IP becomes its rank among the sorted distinct IP strings (sources and destinations
in one id space), every timestamp 1 + its rank among the sorted distinct timestamp
strings (a dense minute index), the label is attack != '-', and each edge is scored on
arrival in file order; quality is ROC-AUC over all edges (scikit-learn). The mapped
arrays are cached in benchmarks/.data/darpa-mapped.npz (the first run parses the zip).

Rows, all in one process over the same integer arrays:

- do-nothing loop: a Python loop calling a function that returns 0.0 for each edge, the
  floor of any one-call-per-edge detector;
- `EdgeBurst.score` per call and `EdgeBurst.score_many` batched (numpy integer ids), the
  stream score (against the all-time level);
- `EdgeBurst.update_many`, the burst score (against a decayed history, `--decay`), for
  contrast: what the follower-burst stage reads, not made for this stream;
- MIDAS-R, plain Python, written here from the paper's description (current counts
  decayed by `--factor` at each tick, all-time totals, the chi-squared score, the largest
  of edge, source and destination), one call per edge.

`--limit N` runs every row on the first N edges; `--per-call-limit N` only the per-call
rows (the batched ones still cover `--limit`). Each row reports edges/s of wall-clock time
and of this process's CPU time (other load on the machine moves the first); the batched
row is the median of `--rounds` runs. `--grid` adds the batched stream score's ROC-AUC
over rows x buckets x hash seeds, to show it is no knife-edge. Prints a table and writes
benchmarks/.data/darpa-YYYYMMDD-HHMMSS.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models import EdgeBurst

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
ZIP = ROOT.parent / "shared" / "benchmarks" / "darpa" / "darpa_original.zip"
MEMBER = "darpa_original.csv"


# -- the stream -------------------------------------------------------------------------


def parse(zip_path: Path) -> dict[str, np.ndarray]:
    """The zip's rows mapped as MIDAS maps them: src, dst (int32 ranks among the sorted
    distinct IP strings, one id space), t (1 + rank among the sorted distinct timestamp
    strings) and label (attack != '-'), in file order."""
    with zipfile.ZipFile(zip_path) as z:
        text = z.read(MEMBER)
    lines = text.split(b"\n")
    del text
    if lines and not lines[-1]:
        lines.pop()
    rows = (line.rstrip(b"\r").split(b",") for line in lines)
    src, dst, stamp, attack = zip(*rows, strict=True)
    del lines
    ips = {ip: i for i, ip in enumerate(sorted(set(src) | set(dst)))}
    stamps = {s: i + 1 for i, s in enumerate(sorted(set(stamp)))}
    n = len(src)
    return {
        "src": np.fromiter(map(ips.__getitem__, src), dtype=np.int32, count=n),
        "dst": np.fromiter(map(ips.__getitem__, dst), dtype=np.int32, count=n),
        "t": np.fromiter(map(stamps.__getitem__, stamp), dtype=np.int32, count=n),
        "label": np.fromiter((a != b"-" for a in attack), dtype=np.bool_, count=n),
    }


def load(zip_path: Path = ZIP) -> dict[str, np.ndarray]:
    """`parse`, cached under benchmarks/.data/ (keyed by the zip's size and mtime)."""
    stat = zip_path.stat()
    stamp = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
    cache = DATA / "darpa-mapped.npz"
    if cache.exists():
        with np.load(cache) as z:
            if np.array_equal(z["zip"], stamp):
                return {k: z[k] for k in ("src", "dst", "t", "label")}
    arrays = parse(zip_path)
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, zip=stamp, **arrays)
    tmp.replace(cache)
    return arrays


# -- the reference ----------------------------------------------------------------------


class MidasR:
    """MIDAS-R (Bhatia et al., AAAI 2020), plain Python, one call per edge.

    Count-min sketches (`rows` x `buckets`, hashes (a*x + b) mod p mod buckets) of the
    current and the total count of each edge, source and destination. At each new tick
    the current counts are multiplied by `factor` (MIDAS-R's temporal decay) instead of
    reset; each edge adds one to its edge, source and destination in both. A key's score
    is the chi-squared statistic (a - s/t)^2 t^2 / (s (t - 1)) of its current count a
    against its total s over t ticks; the edge's is the largest of the three."""

    P = (1 << 61) - 1

    def __init__(self, rows: int = 2, buckets: int = 1024, factor: float = 0.5, seed: int = 0):
        rng = random.Random(seed)
        self.rows, self.buckets, self.factor = rows, buckets, factor
        self.hashes = [(rng.randrange(1, self.P), rng.randrange(self.P)) for _ in range(rows)]
        self.cur = np.zeros((3, rows * buckets))
        self.tot = np.zeros((3, rows * buckets))
        self.views = [(memoryview(self.cur[f]), memoryview(self.tot[f])) for f in range(3)]
        self.t = 1

    def __call__(self, src: int, dst: int, t: int) -> float:
        if t > self.t:
            self.cur *= self.factor
            self.t = t
        t = self.t
        buckets, p = self.buckets, self.P
        best = 0.0
        for f, x in enumerate(((src << 32) | dst, src, dst)):
            cur, tot = self.views[f]
            a = s = math.inf
            for r, (ha, hb) in enumerate(self.hashes):
                j = r * buckets + (ha * x + hb) % p % buckets
                c = cur[j] + 1.0
                cur[j] = c
                if c < a:
                    a = c
                c = tot[j] + 1.0
                tot[j] = c
                if c < s:
                    s = c
            if t > 1:
                score = (a - s / t) ** 2 * t * t / (s * (t - 1))
                if score > best:
                    best = score
        return best


# -- measuring --------------------------------------------------------------------------


def nothing(src: int, dst: int, t: int) -> float:
    return 0.0


def timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """`run()`, its wall-clock seconds and its process CPU seconds (other load on the
    machine moves the first; the second is this process's own work)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = run()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def per_call(fn: Callable[[int, int, int], float], src: list, dst: list, t: list) -> Any:
    """`timed` of one call per edge, in a Python loop, keeping the scores."""
    return timed(lambda: np.array([fn(s, d, tt) for s, d, tt in zip(src, dst, t, strict=True)]))


def auc(label: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(label, scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4, help="EdgeBurst count-min rows")
    parser.add_argument("--buckets", type=int, default=1024, help="EdgeBurst buckets per row")
    parser.add_argument("--decay", type=float, default=0.95, help="burst score's history decay")
    parser.add_argument("--seed", type=int, default=0, help="EdgeBurst hash seed")
    parser.add_argument("--factor", type=float, default=0.5, help="MIDAS-R's decay factor")
    parser.add_argument("--limit", type=int, default=None, help="only the first N edges")
    parser.add_argument("--per-call-limit", type=int, default=None, help="per-call rows: N")
    parser.add_argument("--rounds", type=int, default=3, help="batched runs (median reported)")
    parser.add_argument("--grid", action="store_true", help="ROC-AUC over rows x buckets")
    parser.add_argument("--zip", type=Path, default=ZIP)
    args = parser.parse_args()

    data, seconds, _ = timed(lambda: load(args.zip))
    print(f"loaded {len(data['t']):,} edges in {seconds:.1f} s")
    n = len(data["t"]) if args.limit is None else min(args.limit, len(data["t"]))
    src, dst, t, label = (data[k][:n] for k in ("src", "dst", "t", "label"))
    k = n if args.per_call_limit is None else min(args.per_call_limit, n)
    lists = [a[:k].tolist() for a in (src, dst, t)]
    params = {"rows": args.rows, "buckets": args.buckets, "seed": args.seed}
    results: list[dict[str, Any]] = []
    print(f"{n:,} edges ({label.mean():.1%} attacks); per-call rows on the first {k:,}")
    print(f"  {'':<46} {'edges/s':>10} {'CPU edges/s':>12} {'ROC-AUC':>8}")

    def record(name: str, edges: int, wall: list[float], cpu: list[float], scores: Any) -> None:
        wall, cpu = sorted(wall), sorted(cpu)
        row = {
            "name": name,
            "edges": edges,
            "wall_s": [round(w, 3) for w in wall],
            "cpu_s": [round(c, 3) for c in cpu],
            "edges_per_s": round(edges / wall[len(wall) // 2]),
            "cpu_edges_per_s": round(edges / cpu[len(cpu) // 2]),
            "roc_auc": None if scores is None else auc(label[:edges], scores),
        }
        results.append(row)
        quality = "" if row["roc_auc"] is None else f"{row['roc_auc']:.4f}"
        print(
            f"  {name:<46} {row['edges_per_s']:>10,} {row['cpu_edges_per_s']:>12,} {quality:>8}",
            flush=True,
        )

    _, wall, cpu = per_call(nothing, *lists)
    record("do-nothing loop (one call per edge)", k, [wall], [cpu], None)
    scores, wall, cpu = per_call(EdgeBurst(**params).score, *lists)
    record("EdgeBurst.score (per call)", k, [wall], [cpu], scores)
    walls, cpus = [], []
    for _ in range(args.rounds):
        scores, wall, cpu = timed(lambda: EdgeBurst(**params).score_many(src, dst, t))
        walls.append(wall)
        cpus.append(cpu)
    record(f"EdgeBurst.score_many (batched, {args.rounds} runs)", n, walls, cpus, scores)
    burst = EdgeBurst(**params, decay=args.decay)
    scores, wall, cpu = timed(lambda: burst.update_many(src, dst, t))
    record(f"EdgeBurst.update_many (burst, decay {args.decay:g})", n, [wall], [cpu], scores)
    scores, wall, cpu = per_call(MidasR(factor=args.factor), *lists)
    record(f"MIDAS-R reference (per call, factor {args.factor:g})", k, [wall], [cpu], scores)
    _, wall, cpu = per_call(nothing, *lists)  # again: the machine's load may have moved
    record("do-nothing loop, again", k, [wall], [cpu], None)

    grid = []
    if args.grid:
        print("batched stream score, ROC-AUC by rows x buckets, for hash seeds 0, 1, 2:")
        for rows in (1, 2, 4, 8):
            for buckets in (256, 1024, 4096):
                aucs = []
                for seed in (0, 1, 2):
                    model = EdgeBurst(rows=rows, buckets=buckets, seed=seed)
                    aucs.append(auc(label, model.score_many(src, dst, t)))
                grid.append({"rows": rows, "buckets": buckets, "roc_auc_by_seed": aucs})
                shown = "  ".join(f"{a:.4f}" for a in aucs)
                print(f"  rows {rows}, buckets {buckets:>5}: {shown}", flush=True)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "numpy": np.__version__,
        "edges": n,
        "per_call_edges": k,
        "edgeburst": params,
        "decay": args.decay,
        "midas_r_factor": args.factor,
        "rows": results,
        "grid": grid,
    }
    DATA.mkdir(parents=True, exist_ok=True)
    out = DATA / f"darpa-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
