"""Resident memory of the embedded engine over an endless-looking stream.

    python -m benchmarks.memory [--events 10000000] [--accounts 1000000] [--mix all]

Ten million events whose actors and follow targets cycle through a million accounts run
through the engine with the default settings; RSS is sampled every million events. After
the first cycle every account holds state, and after three every account has also been
through its first windows (baseline initialised, panes allocated): from then on the
stream adds nothing, so RSS must stay flat. The report gives each sample and max/min over
the samples after those three warm-up cycles. `--mix all` runs a stream of every event
type instead (`cycling_mixed_lines`: comments and reposts with texts that rarely repeat,
registrations from scattered addresses, and every 10 minutes of event time a registration
batch, a ring's round on a new account and a churner), for the detectors that keep texts,
rounds, groups, watched accounts or registration bursts; `--rate` sets its events per
second of event time (lower: more hours, past every horizon).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time

import psutil

from benchmarks.streams import (
    FOLLOW_SHARE,
    MIXED_FOLLOW_SHARE,
    cycling_lines,
    cycling_mixed_lines,
)
from pipeline.core.settings import load_settings
from pipeline.embedded.engine import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=1_000_000)
    parser.add_argument("--mix", choices=("follows", "all"), default="follows")
    parser.add_argument(
        "--rate", type=int, default=2_000, help="events per second of event time (--mix all)"
    )
    args = parser.parse_args()
    process = psutil.Process()
    engine = Engine(load_settings())
    rss_start = process.memory_info().rss
    samples: list[tuple[int, int, dict[str, int]]] = []
    done, next_sample = 0, args.every
    started = time.perf_counter()
    findings = 0
    if args.mix == "all":
        stream = cycling_mixed_lines(args.events, args.accounts, args.rate)
    else:
        stream = cycling_lines(args.events, args.accounts)
    for batch in stream:
        result = engine.process(batch, "memory-benchmark")
        findings += len(result.findings)
        done += len(batch)
        if done >= next_sample:
            gc.collect()
            sizes = engine.state_size()
            sizes["python_blocks"] = sys.getallocatedblocks()
            samples.append((done, process.memory_info().rss, sizes))
            next_sample += args.every
    elapsed = time.perf_counter() - started
    follow_share = FOLLOW_SHARE if args.mix == "follows" else MIXED_FOLLOW_SHARE
    warmup = int(3 * args.accounts / follow_share)
    warm = [rss for n, rss, _ in samples if n >= warmup]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(
        f"{done:,} events cycling through {args.accounts:,} accounts in {elapsed:,.0f} s "
        f"({done / elapsed:,.0f} events/s), {findings} findings"
    )
    print(f"RSS before the stream: {rss_start / 2**20:,.0f} MiB")
    for n, rss, sizes in samples:
        print(f"  after {n:>12,} events: RSS {rss / 2**20:8,.0f} MiB  state {sizes}")
    if warm:
        print(
            f"after warm-up (>= {3 * args.accounts:,} events): max/min RSS = "
            f"{max(warm) / min(warm):.3f} (flat within {max(warm) / min(warm) - 1:.1%})"
        )


if __name__ == "__main__":
    main()
