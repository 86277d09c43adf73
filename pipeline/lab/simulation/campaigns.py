"""Labelled campaigns: fake engagement bought for an account or a content item.

Each function plants one campaign: it creates the accounts that do the work (with the
devices and addresses the operation would really have), registers a `Plan`, and logs the
tagged events. Sizes, rates, durations and start times are drawn from ranges per seed,
and members also do a little organic-looking activity, so no single constant, device
count or time-of-day gives a campaign away.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.lab.simulation import network, text
from pipeline.lab.simulation.clock import DAY, HOUR, MINUTE, SECOND, arrivals, n_minutes
from pipeline.lab.simulation.labelling import Plan
from pipeline.lab.simulation.log import (
    API,
    CLICK,
    COMMENT,
    FOLLOW,
    ONBOARDING,
    RECOMMENDATION,
    REGISTER,
    REPOST,
    UNFOLLOW,
    USER,
)
from pipeline.lab.simulation.organic import pick_content
from pipeline.lab.simulation.world import SLOTS, YEAR, World


def _ages(rng: np.random.Generator, n: int, youngest: float, oldest: float) -> np.ndarray:
    """Log-uniform account ages in [youngest, oldest] ms."""
    return np.exp(rng.uniform(np.log(youngest), np.log(oldest), n)).astype(np.int64)


def _from_pool(rng: np.random.Generator, pool: np.ndarray, n: int, most: int) -> np.ndarray:
    """(n, SLOTS) slots holding 1..most entries drawn from a shared pool."""
    out = np.full((n, SLOTS), -1, dtype=np.int64)
    count = rng.integers(1, min(most, pool.size, SLOTS) + 1, n)
    for k in range(SLOTS):
        has = count > k
        out[has, k] = pool[rng.integers(0, pool.size, int(has.sum()))]
    return out


def _own_devices(world: World, rng: np.random.Generator, n: int) -> np.ndarray:
    return world.new_devices(rng, n)[:, None]


def _home_addresses(world: World, rng: np.random.Generator, n: int) -> np.ndarray:
    """Ordinary-looking broadband addresses, one per account."""
    return world.new_addresses(world.nets.home_hosts(rng, n))[:, None]


def _popular_owners(world: World, rng: np.random.Generator, n: int) -> np.ndarray:
    weight = world.follow_rate * world.click_ratio
    return world.creators[rng.choice(world.creators.size, n, p=weight / weight.sum())]


def _noise(world: World, rng: np.random.Generator, members: np.ndarray, share: float) -> None:
    """A share of the members also click, comment or follow like anyone else, at random
    times in the run (untagged: it is cover, not the campaign)."""
    active = members[rng.random(members.size) < share]
    who = np.repeat(active, rng.integers(1, 4, active.size))
    born = np.maximum(world.accounts.created[who], world.start)
    ts = (born + rng.random(who.size) * (world.end - born)).astype(np.int64)
    roll = rng.random(who.size)
    owners = _popular_owners(world, rng, who.size)
    clicks = roll < 0.75
    world.log.add(
        ts[clicks], CLICK, who[clicks], content=pick_content(world, rng, owners[clicks], ts[clicks])
    )
    comments = (roll >= 0.75) & (roll < 0.85)
    r = world.text_rng(rng)
    texts = world.add_texts([text.organic_comment(r) for _ in range(int(comments.sum()))])
    world.log.add(
        ts[comments],
        COMMENT,
        who[comments],
        content=pick_content(world, rng, owners[comments], ts[comments]),
        text=texts,
    )
    follows = roll >= 0.85
    world.log.add(ts[follows], FOLLOW, who[follows], target=owners[follows], origin=USER, consent=1)


def follower_burst(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """150-600 accounts created in the last day follow one mid-size account within a few
    minutes, from a handful of devices and /24 networks."""
    target = world.take_creator(rng, 0.3, 0.8)
    n = int(rng.integers(150, 601))
    span = int(rng.integers(2 * MINUTE, 8 * MINUTE))
    t0, _ = world.window(rng, span, span)
    created = t0 - _ages(rng, n, 10 * MINUTE, DAY)
    devices = world.new_devices(rng, int(rng.integers(5, 41)))
    nets = network.prefixes(rng, int(rng.integers(2, 7)))
    hosts = world.new_addresses(network.hosts_in(rng, nets, int(rng.integers(8, 60))))
    bots = world.accounts.add(created, _from_pool(rng, hosts, n, 2), _from_pool(rng, devices, n, 2))
    api_share = float(rng.uniform(0.0, 0.25))
    tag = world.plan(
        Plan(
            plan_id,
            "follower_burst",
            "account",
            [target],
            article="12",
            params={"size": n, "span_s": span // SECOND, "devices": int(devices.size)},
        )
    )
    fresh = created >= world.start
    world.log.add(created[fresh], REGISTER, bots[fresh])
    ts = t0 + np.sort(rng.beta(2, 2, n) * span).astype(np.int64)
    origin = np.where(rng.random(n) < api_share, API, USER)
    world.log.add(
        ts, FOLLOW, rng.permutation(bots), target=target, origin=origin, consent=1, tag=tag
    )
    clickers = bots[rng.random(n) < 0.25]
    when = t0 + span + rng.integers(0, 10 * MINUTE, clickers.size)
    owners = np.full(clickers.size, target)
    world.log.add(when, CLICK, clickers, content=pick_content(world, rng, owners, when), tag=tag)
    _noise(world, rng, bots, float(rng.uniform(0.1, 0.3)))


def slow_drip(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """Several hundred bought aged accounts follow one account at a steady extra 100-300
    an hour for hours, each from its own device and a different residential proxy."""
    target = world.take_creator(rng, 0.04, 0.25)
    per_hour = float(rng.uniform(100, 300))
    t0, t1 = world.window(rng, 2 * HOUR, 5 * HOUR)
    ts = arrivals(rng, t0, t1, per_hour, diurnal=False)
    n = ts.size
    proxies = np.unique(world.nets.home_hosts(rng, 2 * n + 10))
    proxies = world.new_addresses(rng.permutation(proxies)[:n])
    members = world.accounts.add(
        t0 - _ages(rng, n, 200 * DAY, 6 * YEAR), proxies[:, None], _own_devices(world, rng, n)
    )
    tag = world.plan(
        Plan(
            plan_id,
            "slow_drip",
            "account",
            [target],
            article="12",
            params={"per_hour": round(per_hour, 1), "minutes": (t1 - t0) // MINUTE, "size": n},
        )
    )
    origin = np.where(rng.random(n) < 0.1, RECOMMENDATION, USER)
    world.log.add(ts, FOLLOW, members, target=target, origin=origin, consent=1, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.3, 0.6)))


def click_farm(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """50-150 accounts on at most ten devices and five addresses click one content item
    thousands of times (each account many times) for the item's owner."""
    owner = world.take_creator(rng, 0.4, 0.95)
    t0, t1 = world.window(rng, 30 * MINUTE, 150 * MINUTE)
    published, items = world.contents.of(owner)
    older = [int(i) for i, p in zip(items, published, strict=True) if p < t0]
    older = [i for i in older if i not in world.reserved_content]
    if rng.random() < 0.5 or not older:
        item = int(
            world.contents.add(
                np.array([owner]), np.array([t0 - int(rng.integers(5, 60)) * MINUTE])
            )[0]
        )
    else:
        item = older[-1 - int(rng.integers(0, min(3, len(older))))]
    world.reserved_content.add(item)
    n = int(rng.integers(50, 151))
    devices = world.new_devices(rng, int(rng.integers(3, 11)))
    nets = network.prefixes(rng, int(rng.integers(1, 3)))
    hosts = world.new_addresses(np.unique(network.hosts_in(rng, nets, int(rng.integers(1, 6)))))
    members = world.accounts.add(
        t0 - _ages(rng, n, 20 * DAY, 2 * YEAR),
        _from_pool(rng, hosts, n, 2),
        _from_pool(rng, devices, n, 2),
    )
    total = int(rng.integers(2000, 6001))
    tag = world.plan(
        Plan(
            plan_id,
            "click_farm",
            "content",
            [item],
            article="12",
            owners=[owner],
            params={
                "clicks": total,
                "size": n,
                "devices": int(devices.size),
                "ips": int(hosts.size),
            },
        )
    )
    wobble = rng.gamma(4.0, 0.25, n_minutes(t0, t1))
    ts = arrivals(rng, t0, t1, total * HOUR / (t1 - t0), diurnal=False, shape=wobble)
    zeal = np.exp(rng.normal(0, 0.8, n))
    who = members[rng.choice(n, ts.size, p=zeal / zeal.sum())]
    world.log.add(ts, CLICK, who, content=item, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.05, 0.2)))


def repost_ring(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """50-200 accounts repost each new post of one creator within minutes, for three to
    eight posts over the run; each member joins most, not all, of the rounds."""
    creator = world.take_creator(rng, 0.2, 0.8)
    t0, t1 = world.window(rng, 90 * MINUTE, 5 * HOUR)
    n_posts = int(min(rng.integers(3, 9), max(2, (t1 - t0) // (20 * MINUTE))))
    slots = np.sort(rng.choice(max((t1 - t0) // (20 * MINUTE), n_posts), n_posts, replace=False))
    posted = t0 + slots * 20 * MINUTE + rng.integers(0, 5 * MINUTE, n_posts)
    posts = world.contents.add(np.full(n_posts, creator), posted)
    world.reserved_content.update(posts.tolist())
    n = int(rng.integers(50, 201))
    members = world.accounts.add(
        t0 - _ages(rng, n, 60 * DAY, 5 * YEAR),
        _home_addresses(world, rng, n),
        _own_devices(world, rng, n),
    )
    join = float(rng.uniform(0.7, 0.95))
    median = float(rng.uniform(60, 240)) * SECOND
    tag = world.plan(
        Plan(
            plan_id,
            "repost_ring",
            "account",
            [creator],
            article="18(4)",
            params={"posts": n_posts, "size": n, "median_delay_s": round(median / SECOND)},
        )
    )
    r = world.text_rng(rng)
    for post, at in zip(posts.tolist(), posted.tolist(), strict=True):
        who = members[rng.random(n) < join]
        delay = np.minimum(rng.lognormal(np.log(median), 0.7, who.size), 15 * MINUTE)
        notes = world.add_texts([r.choice((None, None, None, "转发", "支持！")) for _ in who])
        world.log.add(at + delay.astype(np.int64), REPOST, who, content=post, text=notes, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.2, 0.5)))


def copy_paste(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """50-200 accounts post one message, lightly perturbed each time, under many items of
    innocent creators within a short period."""
    t0, t1 = world.window(rng, 20 * MINUTE, 90 * MINUTE)
    published, owners = world.contents.published, world.contents.owner
    free = np.flatnonzero((published < t0) & ~np.isin(owners, list(world.reserved)))
    free = free[~np.isin(free, list(world.reserved_content))]
    rate = world.creator_rates()
    weight = np.array([rate[int(o)] for o in owners[free]]) ** 0.7
    items = rng.choice(
        free, min(int(rng.integers(20, 61)), free.size), replace=False, p=weight / weight.sum()
    )
    world.reserved_content.update(items.tolist())
    n = int(rng.integers(50, 201))
    fresh = rng.random(n) < 0.5
    ages = np.where(fresh, _ages(rng, n, DAY, 30 * DAY), _ages(rng, n, 60 * DAY, 3 * YEAR))
    devices = world.new_devices(rng, max(3, n // int(rng.integers(2, 7))))
    hosts = world.new_addresses(
        network.hosts_in(rng, network.prefixes(rng, int(rng.integers(3, 13))), max(3, n // 4))
    )
    members = world.accounts.add(
        t0 - ages, _from_pool(rng, hosts, n, 2), _from_pool(rng, devices, n, 1)
    )
    r = world.text_rng(rng)
    message = text.spam_message(r)
    tag = world.plan(
        Plan(
            plan_id,
            "copy_paste",
            "content",
            "contents",
            article="18(4)",
            params={"size": n, "items": int(items.size), "message": message},
        )
    )
    who = np.repeat(members, rng.integers(1, 5, n))
    ts = rng.integers(t0, t1, who.size)
    on = items[rng.integers(0, items.size, who.size)]
    texts = world.add_texts([text.perturb(r, message) for _ in range(who.size)])
    world.log.add(ts, COMMENT, who, content=on, text=texts, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.1, 0.3)))


def churn(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """20-80 accounts follow dozens of accounts, unfollow them again within minutes, and
    do it again, round after round (follow-for-follow growth hacking)."""
    t0, t1 = world.window(rng, 60 * MINUTE, 180 * MINUTE)
    n = int(rng.integers(20, 81))
    nets = network.prefixes(rng, int(rng.integers(2, 7)))
    hosts = world.new_addresses(network.hosts_in(rng, nets, n))
    members = world.accounts.add(
        t0 - _ages(rng, n, 30 * DAY, 3 * YEAR),
        _from_pool(rng, hosts, n, 2),
        _own_devices(world, rng, n),
    )
    rounds = int(rng.integers(3, 9))
    tag = world.plan(
        Plan(
            plan_id,
            "churn",
            "account",
            "actors",
            article="18(4)",
            params={"size": n, "rounds": rounds},
        )
    )
    gap = (t1 - t0) / rounds
    for member in members.tolist():
        for k in range(rounds):
            start = t0 + int((k + rng.uniform(0, 0.4)) * gap)
            m = int(rng.integers(10, 41))
            creators = _popular_owners(world, rng, m)
            users = world.users[rng.integers(0, world.users.size, m)]
            targets = rng.permutation(np.unique(np.where(rng.random(m) < 0.6, creators, users)))
            follow_at = start + np.cumsum(rng.integers(3 * SECOND, 20 * SECOND, targets.size))
            undo_at = follow_at + rng.integers(1 * MINUTE, 10 * MINUTE, targets.size)
            world.log.add(
                follow_at, FOLLOW, member, target=targets, origin=USER, consent=1, tag=tag
            )
            world.log.add(undo_at, UNFOLLOW, member, target=targets, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.1, 0.4)))


def forced_follow(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """For 45-150 minutes the onboarding flow makes most newcomers follow one account
    without asking (origin onboarding_default, consent false); the newcomers are victims,
    so the campaign has no members, only the account that benefits."""
    target = world.take_creator(rng, 0.3, 0.9)
    t0, t1 = world.window(rng, 45 * MINUTE, 150 * MINUTE)
    born = world.accounts.created[world.newcomers]
    share = float(rng.uniform(0.6, 1.0))
    hit = world.newcomers[(born >= t0) & (born < t1) & (rng.random(born.size) < share)]
    world.victims.update(hit.tolist())
    tag = world.plan(
        Plan(
            plan_id,
            "forced_follow",
            "account",
            [target],
            members="none",
            article="12",
            params={"victims": int(hit.size), "share": round(share, 2)},
        )
    )
    ts = world.accounts.created[hit] + rng.integers(2 * SECOND, 40 * SECOND, hit.size)
    world.log.add(ts, FOLLOW, hit, target=target, origin=ONBOARDING, consent=0, tag=tag)
    undo = rng.random(hit.size) < 0.1
    later = ts[undo] + rng.integers(5 * MINUTE, HOUR, int(undo.sum()))
    world.log.add(later, UNFOLLOW, hit[undo], target=target)


def batch_registration(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """100-400 accounts register within minutes from one network (a /24 or a single
    address) and at most five devices, then lie dormant."""
    n = int(rng.integers(100, 401))
    span = int(rng.integers(2 * MINUTE, 10 * MINUTE))
    t0, _ = world.window(rng, span, span)
    net = network.prefixes(rng, 1)
    one_ip = rng.random() < 0.3
    hosts = world.new_addresses(
        network.hosts_in(rng, net, 1 if one_ip else int(rng.integers(10, 120)))
    )
    devices = world.new_devices(rng, int(rng.integers(1, 6)))
    created = np.sort(t0 + rng.integers(0, span, n))
    members = world.accounts.add(
        created, _from_pool(rng, hosts, n, 1), _from_pool(rng, devices, n, 1)
    )
    tag = world.plan(
        Plan(
            plan_id,
            "batch_registration",
            "account",
            "actors",
            article="18(8)",
            params={"size": n, "span_s": span // SECOND, "one_ip": int(one_ip)},
        )
    )
    world.log.add(created, REGISTER, members, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.0, 0.03)))


CAMPAIGNS: dict[str, Callable[[World, np.random.Generator, str], None]] = {
    "follower_burst": follower_burst,
    "slow_drip": slow_drip,
    "click_farm": click_farm,
    "repost_ring": repost_ring,
    "copy_paste": copy_paste,
    "churn": churn,
    "forced_follow": forced_follow,
    "batch_registration": batch_registration,
}
