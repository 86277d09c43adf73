"""Hard negatives: organic behaviour that looks like a campaign and must not be flagged.

Each is built from real, established accounts doing ordinary things, only more of them
at once or from one place: a creator going viral, a carrier NAT putting hundreds of
phones behind one IPv4 address, a wave of "+1"/"666" comments, newcomers following the
accounts the platform recommends. Their accounts and content are reserved so no campaign
names them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.lab.simulation import handover, text
from pipeline.lab.simulation.clock import DAY, MINUTE, arrivals, n_minutes
from pipeline.lab.simulation.draws import log_count, log_uniform
from pipeline.lab.simulation.labelling import Plan
from pipeline.lab.simulation.log import CLICK, COMMENT, FOLLOW, NONE, REPOST
from pipeline.lab.simulation.organic import follow_origin
from pipeline.lab.simulation.world import World


def viral_spike(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """A popular to mid-size creator's new post takes off: 10-80x its usual follower rate
    for 15-90 minutes, from established users on their own devices, with clicks and
    comments from many different people; the rate rises within minutes and decays."""
    creator = world.take_creator(rng, 0.05, 0.6)
    t0, t1 = world.window(rng, 15 * MINUTE, 90 * MINUTE)
    factor = log_uniform(rng, 10.0, 80.0)
    base = world.rate_of(creator)
    minutes = n_minutes(t0, t1)
    x = np.arange(minutes) / max(minutes - 1, 1)
    rise = np.minimum(1.0, (x + 0.05) / 0.15)  # takes off within minutes
    shape = rise * np.where(x < 0.75, 1.0, np.exp(-(x - 0.75) * 6))  # then fades
    post = world.contents.add(
        np.array([creator]), np.array([t0 - int(rng.integers(2, 12)) * MINUTE])
    )
    world.reserved_content.add(int(post[0]))
    tag = world.plan(
        Plan(
            plan_id,
            "viral_spike",
            "account",
            [creator],
            params={"factor": round(factor, 2), "base_per_hour": round(base, 2)},
        )
    )
    old = world.start - 90 * DAY
    ts = arrivals(rng, t0, t1, base * (factor - 1), shape=shape)
    fans = world.pick_users(rng, ts.size, older_than=old)
    _, first = np.unique(fans, return_index=True)
    first = np.sort(first[fans[first] != creator])
    origin, consent = follow_origin(rng, first.size, 0.3, 0.0, 0.0)
    world.log.add(
        ts[first], FOLLOW, fans[first], target=creator, origin=origin, consent=consent, tag=tag
    )
    r = world.text_rng(rng)
    for kind, per_follow in ((CLICK, 6.0), (COMMENT, 0.4), (REPOST, 0.3)):
        ts = arrivals(rng, t0, t1, base * factor * per_follow, shape=shape)
        who = world.pick_users(rng, ts.size, older_than=old)
        keep = who != creator
        texts: np.ndarray | int = NONE
        if kind == COMMENT:
            texts = world.add_texts([text.organic_comment(r) for _ in range(int(keep.sum()))])
        world.log.add(ts[keep], kind, who[keep], content=post[0], text=texts, tag=tag)


def carrier_nat(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """100-1,000 ordinary phone users (never more than a tenth of the platform's) share one
    carrier-grade NAT IPv4 address for the whole run (some also use a home line), and
    some newcomers register through it."""
    plain = world.users[~np.isin(world.users, world.creators)]
    n = min(log_count(rng, 100, 1_000), plain.size // 10)
    weight = world.activity[np.isin(world.users, plain)]
    people = rng.choice(plain, n, replace=False, p=weight / weight.sum())
    nat = world.new_addresses(world.nets.mobile_hosts(rng, 1))[0]
    ips = world.accounts.ips
    home = ips[people, 0].copy()
    ips[people, :] = -1
    ips[people, 0] = nat
    keeps_home = rng.random(n) < 0.3
    ips[people[keeps_home], 1] = home[keeps_home]
    joiners = world.newcomers[rng.random(world.newcomers.size) < 0.05]
    ips[joiners, 0] = nat
    ips[joiners, 1:] = -1
    claim = np.concatenate([people, joiners])
    world.reserved.update(claim.tolist())
    world.plan(
        Plan(
            plan_id,
            "carrier_nat",
            "account",
            "actors",
            claim=claim,
            params={"ip": world.addresses.values[nat], "users": int(claim.size)},
        )
    )


def common_phrase(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """For 10-60 minutes one to three short common phrases ("666", "+1", "congrats!")
    sweep across 20-150 recent popular items, typed (with their natural variants) by
    100-800 different real people (never more than a seventh of the users), one or two
    comments each."""
    t0, t1 = world.window(rng, 10 * MINUTE, 60 * MINUTE)
    phrases = [
        str(p)
        for p in rng.choice(list(text.COMMON_PHRASES), int(rng.integers(1, 4)), replace=False)
    ]
    published, owners = world.contents.published, world.contents.owner
    free = np.flatnonzero(
        (published < t0) & (published > t0 - 2 * DAY) & ~np.isin(owners, list(world.reserved))
    )
    free = free[~np.isin(free, list(world.reserved_content))]
    rate = world.creator_rates()
    weight = np.array([rate[int(o)] for o in owners[free]])
    n_items = min(log_count(rng, 20, 150), free.size)
    items = rng.choice(free, n_items, replace=False, p=weight / weight.sum())
    world.reserved_content.update(items.tolist())
    n_people = min(log_count(rng, 100, 800), world.users.size // 7)
    people = rng.permutation(np.unique(world.pick_users(rng, n_people * 2)))[:n_people]
    writers = np.concatenate([people, people[rng.random(people.size) < 0.2]])
    mid, spread = (t0 + t1) / 2, (t1 - t0) / 4
    ts = np.clip(rng.normal(mid, spread, writers.size), t0, t1 - 1).astype(np.int64)
    item_weight = np.array([rate[int(owners[i])] for i in items]) ** 0.5
    on = items[rng.choice(items.size, writers.size, p=item_weight / item_weight.sum())]
    keep = published[on] < ts
    r = world.text_rng(rng)
    texts = world.add_texts(
        [text.common_phrase(r, r.choice(phrases)) for _ in range(int(keep.sum()))]
    )
    tag = world.plan(
        Plan(
            plan_id, "common_phrase", "content", "contents", params={"phrases": ", ".join(phrases)}
        )
    )
    world.log.add(ts[keep], COMMENT, writers[keep], content=on[keep], text=texts, tag=tag)


def new_users_follow_popular(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """Newcomers follow the popular accounts the platform recommends at sign-up (organic
    traffic emits those follows under this label), spread over the whole run."""
    world.reserved.update(world.popular.tolist())
    world.popular_tag = world.plan(
        Plan(
            plan_id,
            "new_users_follow_popular",
            "account",
            "targets",
            params={"newcomers": int(world.newcomers.size), "popular": int(world.popular.size)},
        )
    )


NEGATIVES: dict[str, Callable[[World, np.random.Generator, str], None]] = {
    "viral_spike": viral_spike,
    "carrier_nat": carrier_nat,
    "common_phrase": common_phrase,
    "new_users_follow_popular": new_users_follow_popular,
    "new_phone": handover.new_phone,
    "travel": handover.travel,
}
