"""Start-up time of the `lockstep` command, next to a Python that only imports numpy.

    python -m benchmarks.startup [--runs 15]

Times whole processes, as a user starts them: the venv's `lockstep` console script with
`--help`, and with `replay EMPTY --out DIR` on an empty events file (all the work of
starting a replay and writing its outputs, none of reading events), and the baseline
`python -c "import numpy"`. Each round runs the three in turn, so a burst of machine noise
falls on all of them, after a warm-up round that also compiles every module into a
bytecode cache of the run's own (PYTHONPYCACHEPREFIX): each process then starts from
bytecode, as an installed command does, even where the environment writes none
(PYTHONDONTWRITEBYTECODE). Reports each median wall time, its ratio to the baseline's,
and the target: `--help` at most 3x the baseline, the empty replay at most 5x (a command
that imports detectors, Kafka or HTTP clients before it needs them misses them).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = 'python -c "import numpy"'
HELP = "lockstep --help"
REPLAY = "lockstep replay EMPTY --out DIR"
TARGETS = {HELP: 3.0, REPLAY: 5.0}  # at most this many times the baseline


def _commands(home: Path) -> dict[str, list[str]]:
    """What each row runs, by its label: the venv's console script, as a user runs it."""
    lockstep = str(Path(sys.executable).with_name("lockstep"))
    empty = home / "empty.jsonl"
    empty.write_bytes(b"")
    return {
        BASELINE: [sys.executable, "-c", "import numpy"],
        HELP: [lockstep, "--help"],
        REPLAY: [lockstep, "replay", str(empty), "--out", str(home / "out")],
    }


def _wall_s(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env
    )
    return time.perf_counter() - started


def _medians(commands: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall time of each command over `runs` rounds, after a warm-up round."""
    times: dict[str, list[float]] = {label: [] for label in commands}
    for round_ in range(runs + 1):
        for label, command in commands.items():
            seconds = _wall_s(command, env)
            if round_:
                times[label].append(seconds)
    return {label: statistics.median(runs) for label, runs in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed rounds (at least 9)")
    args = parser.parse_args()
    if args.runs < 9:
        parser.error("--runs must be at least 9, so that one slow run cannot move the median")
    with tempfile.TemporaryDirectory(prefix="lockstep-startup-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(home / "bytecode")
        medians = _medians(_commands(home), args.runs, env)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; {args.runs} interleaved runs each, median wall time"
    )
    width = max(len(label) for label in medians)
    print(f"{'':{width}}  {'median ms':>9}  {'x baseline':>10}  target")
    for label, median in medians.items():
        ratio = median / medians[BASELINE]
        target = TARGETS.get(label)
        verdict = (
            "" if target is None else f"<= {target:g}x  {'met' if ratio <= target else 'MISSED'}"
        )
        print(f"{label:{width}}  {median * 1000:9.1f}  {ratio:10.2f}  {verdict}".rstrip())


if __name__ == "__main__":
    main()
