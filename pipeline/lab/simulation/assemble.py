"""From the raw log to the events as written: clip to the run, keep causality, drop
repeated follows, sort by event time, and fill each event's address, device and account
age from its actor.

Optional fields are sometimes absent on every kind of event alike (old clients, privacy
settings), so a missing address is no sign of anything.
"""

from __future__ import annotations

import numpy as np

from pipeline.lab.simulation.log import FOLLOW, NONE, REGISTER
from pipeline.lab.simulation.world import World

MISSING_IP = 0.008
MISSING_DEVICE = 0.015
MISSING_CREATED = 0.01


def assemble(world: World, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The events of the run, sorted by event time, with derived columns `ip`, `device`
    and `created` (-1 where the field is left out)."""
    cols = world.log.columns()
    created = world.accounts.created
    keep = (cols["ts"] >= world.start) & (cols["ts"] < world.end)
    keep &= cols["ts"] >= created[cols["actor"]]
    cols = {k: v[keep] for k, v in cols.items()}
    order = np.argsort(cols["ts"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    cols = _without_refollows(world, cols)

    content = cols["content"]
    has_content = content >= 0
    cols["target"][has_content] = world.contents.owner[content[has_content]]

    n = cols["ts"].size
    actor = cols["actor"]
    cols["ip"] = _pick_slot(rng, world.accounts.ips[actor])
    cols["device"] = _pick_slot(rng, world.accounts.devices[actor])
    _switch(world, cols)
    cols["created"] = created[actor].copy()
    cols["ip"][rng.random(n) < MISSING_IP] = NONE
    cols["device"][rng.random(n) < MISSING_DEVICE] = NONE
    drop_created = (rng.random(n) < MISSING_CREATED) & (cols["kind"] != REGISTER)
    cols["created"][drop_created] = NONE
    return cols


def _switch(world: World, cols: dict[str, np.ndarray]) -> None:
    """Events of switched accounts (`EventLog.switch`) from their switch on carry the
    address and device they switched to."""
    actor, since, ip, device = world.log.switches()
    if actor.size == 0:
        return
    pos = np.minimum(np.searchsorted(actor, cols["actor"]), actor.size - 1)
    hit = (actor[pos] == cols["actor"]) & (cols["ts"] >= since[pos])
    for name, values in (("ip", ip), ("device", device)):
        given = values[pos]
        take = hit & (given >= 0)
        cols[name][take] = given[take]


def _pick_slot(rng: np.random.Generator, slots: np.ndarray) -> np.ndarray:
    """One of each row's filled slots, the first (home, main phone) likeliest."""
    count = (slots >= 0).sum(axis=1)
    pick = (rng.random(count.size) ** 1.8 * count).astype(np.int64)
    pick = np.minimum(pick, np.maximum(count - 1, 0))
    return slots[np.arange(count.size), pick]


def _without_refollows(world: World, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep only the first follow of each (actor, target) pair, except churn's, whose
    repeated follow-unfollow cycles are the point."""
    churn = [i for i, p in enumerate(world.plans) if p.kind == "churn"]
    follows = np.flatnonzero((cols["kind"] == FOLLOW) & ~np.isin(cols["tag"], churn))
    key = cols["actor"][follows] * len(world.accounts) + cols["target"][follows]
    _, first = np.unique(key, return_index=True)
    drop = np.ones(follows.size, dtype=bool)
    drop[first] = False
    keep = np.ones(cols["ts"].size, dtype=bool)
    keep[follows[drop]] = False
    return {k: v[keep] for k, v in cols.items()}
