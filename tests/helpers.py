"""Small, explicit event streams for tests, and a way to run the real `lockstep` command."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
HOUR = 60 * MINUTE


class StreamBuilder:
    """Accumulates contract events; ids are unique and stable for a seed."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, ts: int, actor: str, **fields: Any) -> dict[str, Any]:
        event = {
            "event_id": f"e{len(self.events)}",
            "type": kind,
            "ts": int(ts),
            "actor": actor,
            **fields,
        }
        self.events.append(event)
        return event

    def poisson_follows(
        self,
        target: str,
        start: int,
        end: int,
        rate_per_hour: float | Any,
        active: bool = False,
    ) -> None:
        """Organic follows: a Poisson process; `rate_per_hour` may be a function of ts.
        `active` fans also click the account's posts a few times in the hour around
        their follow, as a real platform's readers do (a stream where every follower is
        silent gives silent_followers no normal to judge against)."""
        rate_of = rate_per_hour if callable(rate_per_hour) else (lambda _ts: rate_per_hour)
        peak = max(rate_of(t) for t in range(start, end, 10 * MINUTE))
        ts = start
        while True:  # thinning: exact for a time-varying rate
            ts += int(self.rng.expovariate(peak / HOUR)) + 1
            if ts >= end:
                return
            if self.rng.random() < rate_of(ts) / peak:
                fan = f"fan{self.rng.randrange(10**7)}"
                self.add("follow", ts, fan, target=target, origin="user", consent=True)
                for _ in range(self.rng.randrange(1, 4) if active else 0):
                    at = max(start, ts + self.rng.randrange(-30 * MINUTE, 30 * MINUTE))
                    post = f"{target}/p{self.rng.randrange(3)}"
                    self.add("click", at, fan, target=target, content_id=post)
                if self.rng.random() < 0.03:
                    self.add("unfollow", ts + self.rng.randrange(HOUR), fan, target=target)

    def burst(
        self, target: str, start: int, count: int, span_ms: int, prefix: str = "bot"
    ) -> list[str]:
        bots = [f"{prefix}{i}" for i in range(count)]
        for bot in bots:
            self.add("follow", start + self.rng.randrange(span_ms), bot, target=target)
        return bots

    def sorted_lines(self) -> list[str]:
        return [
            json.dumps(e, ensure_ascii=False) for e in sorted(self.events, key=lambda e: e["ts"])
        ]


def daily_rhythm(base_per_hour: float, growth_per_day: float = 0.0):
    """A rate that swings ±60% over the day and grows steadily."""

    def rate(ts: int) -> float:
        day = (ts - T0) / (24 * HOUR)
        return base_per_hour * (1 + growth_per_day * day) * (1 + 0.6 * math.sin(2 * math.pi * day))

    return rate


def shuffle_within(lines: list[str], lateness_ms: int, seed: int = 3) -> list[str]:
    """Disorder the lines by jittering arrival by up to `lateness_ms`, never beyond it."""
    rng = random.Random(seed)
    keyed = [
        (json.loads(line)["ts"] + rng.uniform(0, lateness_ms), i, line)
        for i, line in enumerate(lines)
    ]
    return [line for _, _, line in sorted(keyed)]


def write_lines(path: Path, lines: Iterable[str | bytes]) -> Path:
    with open(path, "wb") as handle:
        for line in lines:
            handle.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def lockstep(
    *args: str,
    input: bytes | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run the installed command line as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replay_three_ways(tmp_path: Path, lines: list[str], detector: str) -> list[list[dict]]:
    """`lockstep replay` with `detector` enabled on `lines` in order, again, and shuffled
    within the allowed lateness: its findings from each run, for determinism checks."""
    config = tmp_path / "on.yaml"  # whatever the default, the detector runs
    config.write_text(f"detectors:\n  {detector}:\n    enabled: true\n")
    runs = []
    for name, batch in (("a", lines), ("b", lines), ("c", shuffle_within(lines, 20_000))):
        out = tmp_path / name
        events = str(write_lines(tmp_path / f"{name}.jsonl", batch))
        proc = lockstep("replay", events, "--out", str(out), "--config", str(config))
        assert proc.returncode == 0, proc.stderr.decode()
        runs.append([f for f in read_jsonl(out / "findings.jsonl") if f["detector"] == detector])
    return runs
