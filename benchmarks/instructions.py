"""CPU instructions of `lockstep replay` next to the decode-only baseline, counted by
valgrind's cachegrind: the same on every run, where wall-clock ratios on a shared machine
move by a fifth from one minute to the next. For telling whether a change to the hot path
saves work; the throughput target itself is `benchmarks.throughput`'s wall-clock ratio.

    python -m benchmarks.instructions [--events 400000] [--disable DETECTOR ...]

Needs `valgrind` (Debian: `apt-get install valgrind`). Each measurement runs in its own
process under cachegrind (about 50 times slower than native, so a few minutes); a third
run that only starts up, imports and reads the settings is subtracted from both.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.streams import ensure_file

DATA = Path(__file__).resolve().parent / ".data"
ROOT = Path(__file__).resolve().parent.parent

# What each measured process does after its imports: nothing, decode, or replay.
_DRIVER = """
import sys, tempfile
from pathlib import Path
from benchmarks.throughput import decode_only, full_replay
what, path, disabled = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
overrides = {"detectors": {name: {"enabled": False} for name in disabled}}
if what == "decode":
    decode_only(path)
elif what == "replay":
    full_replay(path, overrides)
else:
    from pipeline.core.settings import load_settings
    load_settings(overrides=overrides)
"""


def instructions(what: str, path: Path, disabled: list[str]) -> int:
    """Instructions one driver process executes, start to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={tmp}/cg.out",
                sys.executable,
                "-c",
                _DRIVER,
                what,
                str(path),
                *disabled,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"},  # same probes
            capture_output=True,
            text=True,
            check=False,
        )
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"cachegrind run '{what}' failed: {out.stderr.strip()[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--disable", action="append", default=[], help="turn a detector off")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    path = ensure_file(DATA / f"mixed-{args.events}.jsonl", args.events)
    start = instructions("start", path, args.disable)
    decode = instructions("decode", path, args.disable) - start
    replay = instructions("replay", path, args.disable) - start
    print(f"{args.events:,} events; detectors off: {args.disable or 'none'}")
    print(f"decode-only: {decode / args.events:,.0f} instructions per event")
    print(f"replay:      {replay / args.events:,.0f} instructions per event")
    print(f"ratio decode / replay (the throughput ratio if time followed instructions): "
          f"{decode / replay:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
