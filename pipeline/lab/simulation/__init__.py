"""The world simulator behind `lockstep simulate`: organic traffic on a platform of tens
of thousands of users, hard negatives that look like fake engagement but are not, and
labelled campaigns, written as contract events (JSONL) plus ground-truth labels.

    labels = simulate(360, seed=7, out=Path("events.jsonl"), labels_out=Path("labels.json"))

The same arguments always write the same bytes: every random draw comes from generators
seeded with (seed, component), and the event-time epoch is fixed (2026-03-02T00:00Z).
The population, creators and their content come from their own stream before any
scenario is planted, so they are the same whichever scenarios are chosen, cold or not.
A world is warm by default (campaigns begin after the first quarter of the run, once
baselines are learnt); `cold=True` begins every campaign and hard negative in the first
five minutes, so a detector meets them with no history at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.lab.labels import CAMPAIGN_KINDS, NEGATIVE_KINDS, Labels, write_labels
from pipeline.lab.simulation.assemble import assemble
from pipeline.lab.simulation.campaigns import CAMPAIGNS
from pipeline.lab.simulation.clock import EPOCH_MS, MINUTE
from pipeline.lab.simulation.disorder import arrival_order, malformed_slots
from pipeline.lab.simulation.labelling import build_labels
from pipeline.lab.simulation.negatives import NEGATIVES
from pipeline.lab.simulation.organic import organic
from pipeline.lab.simulation.world import World, build_world
from pipeline.lab.simulation.writer import Renderer, write_events

SCENARIOS: tuple[str, ...] = (*CAMPAIGN_KINDS, *NEGATIVE_KINDS)
MIN_MINUTES = 60

# Component numbers of the random streams; fixed so a stream never depends on others.
_WORLD_STREAMS = {"organic": 2, "assemble": 3, "disorder": 4}
# A scenario's number is 100 + its place in SCENARIOS as they were first listed, so a
# kind added later (to the end of its list, which moves the kinds after it in SCENARIOS)
# changes no existing stream: it takes 200 + its own place in SCENARIOS.
_FIRST_SCENARIOS = (
    "follower_burst", "slow_drip", "click_farm", "repost_ring", "copy_paste", "churn",
    "forced_follow", "batch_registration",
    "viral_spike", "carrier_nat", "common_phrase", "new_users_follow_popular",
)  # fmt: skip
_SCENARIO_STREAM = {name: 100 + i for i, name in enumerate(_FIRST_SCENARIOS)} | {
    name: 200 + i for i, name in enumerate(SCENARIOS) if name not in _FIRST_SCENARIOS
}

__all__ = ["SCENARIOS", "simulate"]


def simulate(
    minutes: int,
    seed: int,
    scenarios: Sequence[str] | None = None,
    *,
    out: Path,
    labels_out: Path,
    scale: float = 1.0,
    cold: bool = False,
) -> Labels:
    """Simulate `minutes` of the platform and write its events to `out` (JSONL) and its
    ground truth to `labels_out`. `scenarios` picks campaign and hard-negative kinds
    (default: all of SCENARIOS). `scale` multiplies the population and the organic rates;
    campaigns keep their realistic sizes (those drawn relative to a target's own rate
    grow with it), so a small world is fast and still holds every kind. `cold` begins
    every campaign and hard negative within five minutes of the start, with no warm-up.
    Raises ValueError (one line) for an unknown scenario or an unusable argument."""
    chosen = _chosen([scenarios] if isinstance(scenarios, str) else scenarios)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if minutes < MIN_MINUTES:
        raise ValueError(f"minutes must be at least {MIN_MINUTES} (a warm-up, then campaigns)")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    start = EPOCH_MS
    world = build_world(seed, start, start + minutes * MINUTE, scale, cold=cold)
    _plant(world, chosen)
    organic(world, _stream(seed, "organic"))
    cols = assemble(world, _stream(seed, "assemble"))
    campaigns, negatives = build_labels(world, cols)

    rng = _stream(seed, "disorder")
    order = arrival_order(rng, cols["ts"])
    malformed = malformed_slots(rng, order.size)
    write_events(Path(out), Renderer(world, cols), order, malformed, rng)

    labels = Labels(
        seed=seed,
        start=world.start,
        end=world.end,
        scenarios=list(chosen),
        campaigns=campaigns,
        hard_negatives=negatives,
        params=_params(world, minutes, cols["ts"].size, order.size, len(malformed)),
    )
    write_labels(Path(labels_out), labels)
    return labels


def _chosen(scenarios: Sequence[str] | None) -> tuple[str, ...]:
    """The selected scenario names in canonical order; unknown names are an error."""
    if scenarios is None or len(scenarios) == 0:
        return SCENARIOS
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenario {', '.join(unknown)}; valid: {', '.join(SCENARIOS)}")
    return tuple(name for name in SCENARIOS if name in set(scenarios))


def _stream(seed: int, name: str) -> np.random.Generator:
    number = _WORLD_STREAMS.get(name) or _SCENARIO_STREAM[name]
    return np.random.default_rng([seed, number])


def _plant(world: World, chosen: tuple[str, ...]) -> None:
    """Hard negatives first (they reserve their accounts and content), then campaigns.
    Longer runs hold more campaigns of each kind."""
    for name in NEGATIVE_KINDS:
        if name in chosen:
            NEGATIVES[name](world, _stream(world.seed, name), f"{name}-1")
    minutes = (world.end - world.start) / MINUTE
    for name in CAMPAIGN_KINDS:
        if name not in chosen:
            continue
        rng = _stream(world.seed, name)
        count = 1 + int(rng.random() < min(0.6, minutes / 600))
        for k in range(1, count + 1):
            CAMPAIGNS[name](world, rng, f"{name}-{k}")


def _params(
    world: World, minutes: int, events: int, lines: int, malformed: int
) -> dict[str, float | int | str]:
    """The knobs the world was drawn with, for the record (and for debugging a miss)."""
    params: dict[str, float | int | str] = {
        "minutes": minutes,
        "scale": world.scale,
        "cold": int(world.cold),
        "users": int(world.users.size),
        "creators": int(world.creators.size),
        "newcomers": int(world.newcomers.size),
        "warmup_end": world.warm_end,
        "events": events,
        "duplicates": lines - events,
        "malformed": malformed,
    }
    for plan in world.plans:
        for key, value in plan.params.items():
            params[f"{plan.id}.{key}"] = value
    return params
