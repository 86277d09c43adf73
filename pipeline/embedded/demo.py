"""The built-in demo stream: a few hours of a small platform with one follower jump in it.

Forty creators gain followers and clicks at their own steady rates; three hours in, one of
them receives 320 follows in four minutes from accounts registered moments before. A
duplicate and two malformed lines show the dead-letter path. Timestamps end near now.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import msgspec

DEMO_HOURS = 4
BURST_TARGET = "creator_07"
_encode = msgspec.json.encode


def demo_events(seed: int = 7, now_ms: int | None = None) -> list[bytes]:
    rng = random.Random(seed)
    end = (now_ms or int(time.time() * 1000)) // 60_000 * 60_000
    start = end - DEMO_HOURS * 3_600_000
    events: list[dict[str, object]] = []

    def add(kind: str, ts: int, actor: str, **extra: object) -> None:
        events.append(
            {"event_id": f"demo-{len(events)}", "type": kind, "ts": ts, "actor": actor, **extra}
        )

    creators = [f"creator_{i:02d}" for i in range(40)]
    for rank, creator in enumerate(creators):
        per_hour = 60.0 / (rank + 1) ** 0.8  # heavy-tailed popularity
        ts = start
        while True:
            ts += int(rng.expovariate(per_hour / 3_600_000))
            if ts >= end:
                break
            fan = f"user_{rng.randrange(20_000):05d}"
            add("follow", ts, fan, target=creator, origin="user", consent=True)
            for _ in range(rng.randrange(4)):
                add(
                    "click",
                    ts + rng.randrange(60_000),
                    fan,
                    target=creator,
                    content_id=f"{creator}/post_{rng.randrange(5)}",
                )
            if rng.random() < 0.05:
                add("unfollow", ts + rng.randrange(600_000), fan, target=creator)
    burst_at = start + 3 * 3_600_000
    for i in range(320):
        bot, born = f"fresh_{i:04d}", burst_at - rng.randrange(120_000, 600_000)
        add("register", born, bot, ip=f"203.0.113.{i % 8}", device_id=f"dev-{i % 5}")
        add(
            "follow",
            burst_at + rng.randrange(240_000),
            bot,
            target=BURST_TARGET,
            origin="user",
            consent=True,
            actor_created_at=born,
        )
    events = [e for e in events if int(e["ts"]) < end]  # type: ignore[call-overload]
    events.sort(key=lambda e: int(e["ts"]) + rng.randrange(-5_000, 5_000))  # type: ignore[call-overload]
    lines = [_encode(e) + b"\n" for e in events]
    lines.insert(len(lines) // 3 + 5, lines[len(lines) // 3])  # an upstream redelivery
    lines.insert(len(lines) // 2, b'{"type": "follow", "actor": "broken"\n')
    lines.insert(len(lines) // 2, b'{"event_id": "x", "type": "teleport", "ts": 1, "actor": "a"}\n')
    return lines


def paced(lines: list[bytes], seconds: float) -> Iterator[bytes]:
    """Yield lines spread over about `seconds` of wall time, so the demo can be watched."""
    step = max(len(lines) // 100, 1)
    pause = seconds / max(len(lines) / step, 1)
    for i in range(0, len(lines), step):
        yield from lines[i : i + step]
        time.sleep(pause)
