"""Write the events as JSON lines in the event contract's shape.

Columns are turned into dicts a chunk at a time (so a million events never exist as
Python objects at once) and msgspec encodes each chunk as newline-delimited JSON, UTF-8
with non-ASCII text written as is (no \\u escapes).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from pipeline.contract.events import EVENT_TYPES
from pipeline.lab.simulation.disorder import corrupt
from pipeline.lab.simulation.log import ORIGINS
from pipeline.lab.simulation.world import World

CHUNK = 50_000
_encoder = msgspec.json.Encoder()


def event_ids(seed: int, n: int) -> np.ndarray:
    """`n` distinct opaque 64-bit ids for a seed: an invertible mix of the index, so ids
    are unique and say nothing about order or origin."""
    x = np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x = x * np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return x


class Renderer:
    """Turns rows of the assembled columns into contract event dicts."""

    def __init__(self, world: World, cols: dict[str, np.ndarray]) -> None:
        self.cols = cols
        self.seed = world.seed
        self.size = cols["ts"].size
        self.ids = event_ids(world.seed, self.size)
        self.accounts = world.accounts.ids
        self.contents = world.contents.ids
        self.texts = world.texts
        self.addresses = world.addresses.values
        self.devices = world.devices.values

    def rows(self, index: np.ndarray) -> list[dict[str, object]]:
        c = {k: v[index].tolist() for k, v in self.cols.items()}
        ids = self.ids[index].tolist()
        accounts, contents, texts = self.accounts, self.contents, self.texts
        addresses, devices = self.addresses, self.devices
        out: list[dict[str, object]] = []
        for i in range(len(ids)):
            event: dict[str, object] = {
                "event_id": f"{ids[i]:016x}",
                "type": EVENT_TYPES[c["kind"][i]],
                "ts": c["ts"][i],
                "actor": accounts[c["actor"][i]],
            }
            if (target := c["target"][i]) >= 0:
                event["target"] = accounts[target]
            if (content := c["content"][i]) >= 0:
                event["content_id"] = contents[content]
            if (text := c["text"][i]) >= 0:
                event["text"] = texts[text]
            if (origin := c["origin"][i]) >= 0:
                event["origin"] = ORIGINS[origin]
            if (consent := c["consent"][i]) >= 0:
                event["consent"] = bool(consent)
            if (ip := c["ip"][i]) >= 0:
                event["ip"] = addresses[ip]
            if (device := c["device"][i]) >= 0:
                event["device_id"] = devices[device]
            if (created := c["created"][i]) >= 0:
                event["actor_created_at"] = created
            out.append(event)
        return out


def write_events(
    path: Path,
    renderer: Renderer,
    order: np.ndarray,
    malformed: list[tuple[int, int, str]],
    rng: np.random.Generator,
) -> None:
    """Write the events in `order`, with the malformed lines inserted at their positions
    (each with an event id no real event has)."""
    spare = event_ids(renderer.seed, renderer.size + len(malformed))[renderer.size :].tolist()
    with path.open("wb", buffering=1 << 20) as out:
        pos = 0
        for at, base, how in [*malformed, (order.size, -1, "")]:
            while pos < at:
                stop = min(at, pos + CHUNK)
                out.write(_encoder.encode_lines(renderer.rows(order[pos:stop])))
                pos = stop
            if base < 0:
                break
            event = renderer.rows(order[base : base + 1])[0]
            event["event_id"] = f"{spare.pop():016x}"
            out.write(corrupt(rng, event, how) + b"\n")
