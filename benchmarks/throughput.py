"""Events per second of `lockstep replay` next to a decode-only baseline, in one process.

    python -m benchmarks.throughput [--events 1000000] [--rounds 3]

Both read the same file with the same reader; the baseline decodes every line into a
typed event and does nothing else. Each round runs the baseline and then replay back to
back; the reported ratio is the median of the per-round ratios, so a burst of machine
noise in one round does not decide the result.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from benchmarks.streams import ensure_file
from pipeline.contract.events import decoder
from pipeline.core.settings import load_settings
from pipeline.core.sources import LineSource
from pipeline.embedded.replay import replay

DATA = Path(__file__).resolve().parent / ".data"


def decode_only(path: Path) -> tuple[float, int]:
    decode = decoder.decode
    source = LineSource(str(path), load_settings().input.max_event_bytes)  # as replay reads
    started = time.perf_counter()
    n = 0
    for lines in source:
        for line in lines:
            decode(line)
        n += len(lines)
    elapsed = time.perf_counter() - started
    source.close()
    return n / elapsed, n


def full_replay(path: Path, overrides: dict | None = None) -> tuple[float, dict]:
    settings = load_settings(overrides=overrides)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        summary = replay(str(path), out, settings)
        elapsed = time.perf_counter() - started
    return summary["inputs"] / elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--enable", action="append", default=[], help="turn a detector on")
    parser.add_argument("--disable", action="append", default=[], help="turn a detector off")
    args = parser.parse_args()
    switches = {name: {"enabled": True} for name in args.enable}
    switches.update({name: {"enabled": False} for name in args.disable})
    overrides = {"detectors": switches} if switches else None
    path = ensure_file(DATA / f"mixed-{args.events}.jsonl", args.events)
    base, full = [], []
    summary: dict = {}
    for _ in range(args.rounds):
        base.append(decode_only(path)[0])
        rate, summary = full_replay(path, overrides)
        full.append(rate)
    ratios = sorted(f / b for f, b in zip(full, base, strict=True))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    print(f"machine: {machine}; {args.events:,} events, {args.rounds} rounds")
    print(f"detector switches over the default config: {switches or 'none'}")
    print(f"events by type: {summary['events_by_type']}")
    print(f"findings: {summary['findings']}, dead letters: {summary['dead_letters']}")
    print(f"decode-only baseline events/s by round: {', '.join(f'{r:,.0f}' for r in base)}")
    print(f"replay events/s by round:               {', '.join(f'{r:,.0f}' for r in full)}")
    print(f"ratio replay / baseline by round: {', '.join(f'{r:.1%}' for r in ratios)}")
    print(f"median ratio replay / baseline: {ratios[len(ratios) // 2]:.1%}")


if __name__ == "__main__":
    main()
