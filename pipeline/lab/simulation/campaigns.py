"""Labelled campaigns: fake engagement bought for an account or a content item.

Each function plants one campaign: it creates the accounts that do the work (with the
devices and addresses the operation would really have), registers a `Plan`, and logs the
tagged events. Sizes, rates, durations, account ages and pools of devices and addresses
are drawn per seed over wide ranges (log-uniform, so small operations are as common as
large ones; from every member on its own device and address to a few shared by all),
and members also do a little organic-looking activity, so no single constant, device
count or time-of-day gives a campaign away. What stays is what makes each one a
campaign: where a campaign is an excess over its target's normal, the excess is drawn
relative to that normal (a clear multiple of it), not as a fixed number.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.lab.simulation import handover, network, text
from pipeline.lab.simulation.clock import DAY, HOUR, MINUTE, SECOND, arrivals, n_minutes
from pipeline.lab.simulation.draws import log_count, log_uniform
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


def _shared(rng: np.random.Generator, pool: np.ndarray, n: int, most: int) -> np.ndarray:
    """(n, SLOTS) slots over a pool the members take turns on: a pool as large as the group
    gives every member its own entry, a pool of k shares each among about n/k members.
    With `most` > 1 some members also use up to most-1 further entries of the pool."""
    out = np.full((n, SLOTS), -1, dtype=np.int64)
    out[:, 0] = pool[rng.permutation(n) % pool.size]
    count = rng.integers(1, min(most, pool.size, SLOTS) + 1, n)
    for k in range(1, SLOTS):
        has = count > k
        out[has, k] = pool[rng.integers(0, pool.size, int(has.sum()))]
    return out


def _hosts(world: World, rng: np.random.Generator, nets: int, hosts: int) -> np.ndarray:
    """Up to `hosts` distinct addresses spread over `nets` fresh /24 networks."""
    prefixes = network.prefixes(rng, nets)
    return world.new_addresses(np.unique(network.hosts_in(rng, prefixes, hosts)))


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
    """60-1,000 accounts (and at least ten times the follows the target would gain in the
    span anyway), created from ten minutes to a week before, follow one mid-size account
    within 1-15 minutes; they run on 3 devices up to one each (some on two) and 3 to one
    address each in 1-12 /24 networks."""
    target = world.take_creator(rng, 0.2, 0.9)
    span = int(rng.integers(1 * MINUTE, 15 * MINUTE + 1))
    t0, _ = world.window(rng, span, span)
    usual = world.rate_of(target) * span / HOUR
    n = max(log_count(rng, 60, 1_000), int(np.ceil(10 * usual)))
    created = t0 - _ages(rng, n, 10 * MINUTE, 7 * DAY)
    devices = world.new_devices(rng, log_count(rng, 3, n))
    hosts = _hosts(world, rng, log_count(rng, 1, 12), log_count(rng, 3, n))
    bots = world.accounts.add(created, _shared(rng, hosts, n, 2), _shared(rng, devices, n, 2))
    api_share = float(rng.uniform(0.0, 0.4))
    tag = world.plan(
        Plan(
            plan_id,
            "follower_burst",
            "account",
            [target],
            article="12",
            params={
                "size": n,
                "span_s": span // SECOND,
                "usual": round(usual, 2),
                "devices": int(devices.size),
                "ips": int(hosts.size),
                "youngest_s": int(t0 - created.max()) // SECOND,
                "oldest_s": int(t0 - created.min()) // SECOND,
            },
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
    """Bought aged accounts (30 days to 8 years old) follow one account, from the popular
    to the median, at a steady extra 3-10 times its organic follow rate (and at least ten
    an hour) for one to six hours, each once: dozens to thousands of them, on their own
    devices and residential proxies or sharing each among up to four."""
    target = world.take_creator(rng, 0.02, 0.5)
    factor = log_uniform(rng, 3.0, 10.0)
    per_hour = max(factor * world.rate_of(target), 10.0)
    t0, t1 = world.window(rng, 1 * HOUR, 6 * HOUR)
    ts = np.concatenate([[t0], arrivals(rng, t0 + 1, t1, per_hour, diurnal=False)])
    n = ts.size  # the first follow opens the drip's window
    proxies = np.unique(world.nets.home_hosts(rng, 2 * n + 10))
    proxies = world.new_addresses(rng.permutation(proxies)[: log_count(rng, max(1, n // 4), n)])
    devices = world.new_devices(rng, log_count(rng, max(1, n // 4), n))
    members = world.accounts.add(
        t0 - _ages(rng, n, 30 * DAY, 8 * YEAR),
        _shared(rng, proxies, n, 1),
        _shared(rng, devices, n, 1),
    )
    tag = world.plan(
        Plan(
            plan_id,
            "slow_drip",
            "account",
            [target],
            article="12",
            params={
                "per_hour": round(per_hour, 1),
                "factor": round(per_hour / world.rate_of(target), 2),
                "minutes": (t1 - t0) // MINUTE,
                "size": n,
                "devices": int(devices.size),
                "ips": int(proxies.size),
            },
        )
    )
    origin = np.where(rng.random(n) < float(rng.uniform(0.0, 0.2)), RECOMMENDATION, USER)
    world.log.add(ts, FOLLOW, members, target=target, origin=origin, consent=1, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.3, 0.6)))


def click_farm(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """20-300 accounts click one content item 1,000-8,000 times (and at least five times
    the clicks its owner gets on all items) over 20-180 minutes, each account several to
    hundreds of times, on anything from two phones to one each, behind one to ten
    addresses in one to three /24 networks, for the item's owner."""
    owner = world.take_creator(rng, 0.3, 0.97)
    t0, t1 = world.window(rng, 20 * MINUTE, 180 * MINUTE)
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
    n = log_count(rng, 20, 300)
    devices = world.new_devices(rng, log_count(rng, 2, n))
    hosts = _hosts(world, rng, int(rng.integers(1, 4)), log_count(rng, 1, 10))
    members = world.accounts.add(
        t0 - _ages(rng, n, 5 * DAY, 4 * YEAR),
        _from_pool(rng, hosts, n, 2),
        _shared(rng, devices, n, 2),
    )
    per_hour = max(log_count(rng, 1_000, 8_000) * HOUR / (t1 - t0), 5 * world.clicks_of(owner))
    wobble = rng.gamma(4.0, 0.25, n_minutes(t0, t1))
    ts = arrivals(rng, t0, t1, per_hour, diurnal=False, shape=wobble)
    tag = world.plan(
        Plan(
            plan_id,
            "click_farm",
            "content",
            [item],
            article="12",
            owners=[owner],
            params={
                "clicks": int(ts.size),
                "per_hour": round(per_hour, 1),
                "owner_per_hour": round(world.clicks_of(owner), 1),
                "size": n,
                "devices": int(devices.size),
                "ips": int(hosts.size),
            },
        )
    )
    zeal = np.exp(rng.normal(0, 0.8, n))
    who = members[rng.choice(n, ts.size, p=zeal / zeal.sum())]
    world.log.add(ts, CLICK, who, content=item, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.05, 0.2)))


def repost_ring(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """15-400 accounts repost each new post of one creator within minutes (a median delay
    of 30 s to 8 min), for three to ten posts (at most one per ten minutes) at least five
    minutes apart over one to six hours; each member joins most (60-95%), not all, of the
    rounds. Each has its own device and home address, or shares them with up to seven
    others."""
    creator = world.take_creator(rng, 0.1, 0.9)
    t0, t1 = world.window(rng, 60 * MINUTE, 6 * HOUR)
    room = max((t1 - t0) // (10 * MINUTE), 2)
    n_posts = int(min(rng.integers(3, 11), room))
    slots = np.sort(1 + rng.choice(room - 1, n_posts - 1, replace=False))
    posted = t0 + slots * 10 * MINUTE + rng.integers(0, 5 * MINUTE, n_posts - 1)
    posted = np.concatenate([[t0], posted])  # the ring's window opens with its first post
    posts = world.contents.add(np.full(n_posts, creator), posted)
    world.reserved_content.update(posts.tolist())
    n = log_count(rng, 15, 400)
    devices = world.new_devices(rng, log_count(rng, max(2, n // 8), n))
    homes = world.new_addresses(world.nets.home_hosts(rng, log_count(rng, max(2, n // 8), n)))
    members = world.accounts.add(
        t0 - _ages(rng, n, 7 * DAY, 8 * YEAR),
        _shared(rng, homes, n, 1),
        _shared(rng, devices, n, 1),
    )
    join = float(rng.uniform(0.6, 0.95))
    median = float(rng.uniform(30, 480)) * SECOND
    tag = world.plan(
        Plan(
            plan_id,
            "repost_ring",
            "account",
            [creator],
            article="18(4)",
            params={
                "posts": n_posts,
                "size": n,
                "join": round(join, 2),
                "median_delay_s": round(median / SECOND),
                "devices": int(devices.size),
                "ips": int(homes.size),
            },
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
    """20-400 accounts post one message, lightly perturbed each time, one to five times
    each, under 10-120 items of innocent creators within 10-150 minutes. A fifth to four
    fifths of them are fresh (an hour to 30 days old), the rest 30 days to 5 years; they
    run on 3 devices up to one each, and 3 addresses up to one each in 1-20 /24s."""
    t0, t1 = world.window(rng, 10 * MINUTE, 150 * MINUTE)
    published, owners = world.contents.published, world.contents.owner
    free = np.flatnonzero((published < t0) & ~np.isin(owners, list(world.reserved)))
    free = free[~np.isin(free, list(world.reserved_content))]
    rate = world.creator_rates()
    weight = np.array([rate[int(o)] for o in owners[free]]) ** 0.7
    items = rng.choice(
        free, min(log_count(rng, 10, 120), free.size), replace=False, p=weight / weight.sum()
    )
    world.reserved_content.update(items.tolist())
    n = log_count(rng, 20, 400)
    fresh = rng.random(n) < float(rng.uniform(0.2, 0.8))
    ages = np.where(fresh, _ages(rng, n, HOUR, 30 * DAY), _ages(rng, n, 30 * DAY, 5 * YEAR))
    devices = world.new_devices(rng, log_count(rng, 3, n))
    hosts = _hosts(world, rng, log_count(rng, 1, 20), log_count(rng, 3, n))
    members = world.accounts.add(t0 - ages, _shared(rng, hosts, n, 2), _shared(rng, devices, n, 1))
    r = world.text_rng(rng)
    message = text.spam_message(r)
    tag = world.plan(
        Plan(
            plan_id,
            "copy_paste",
            "content",
            "contents",
            article="18(4)",
            params={
                "size": n,
                "items": int(items.size),
                "fresh": int(fresh.sum()),
                "devices": int(devices.size),
                "ips": int(hosts.size),
                "message": message,
            },
        )
    )
    who = np.repeat(members, rng.integers(1, 6, n))
    ts = rng.integers(t0, t1, who.size)
    on = items[rng.integers(0, items.size, who.size)]
    texts = world.add_texts([text.perturb(r, message) for _ in range(who.size)])
    world.log.add(ts, COMMENT, who, content=on, text=texts, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.1, 0.3)))


def churn(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """8-150 accounts follow 8-60 accounts each a round, unfollow them again within 1-15
    minutes, and do it again, three to ten rounds over 40-240 minutes (follow-for-follow
    growth hacking; at least eight minutes a round); each on its own device or sharing
    one with up to four others, on 2 addresses up to one each in 1-10 /24 networks."""
    t0, t1 = world.window(rng, 40 * MINUTE, 240 * MINUTE)
    n = log_count(rng, 8, 150)
    hosts = _hosts(world, rng, log_count(rng, 1, 10), log_count(rng, 2, n))
    devices = world.new_devices(rng, log_count(rng, max(2, n // 5), n))
    members = world.accounts.add(
        t0 - _ages(rng, n, 7 * DAY, 5 * YEAR),
        _shared(rng, hosts, n, 2),
        _shared(rng, devices, n, 1),
    )
    rounds = int(min(rng.integers(3, 11), max(3, (t1 - t0) // (8 * MINUTE))))
    tag = world.plan(
        Plan(
            plan_id,
            "churn",
            "account",
            "actors",
            article="18(4)",
            params={
                "size": n,
                "rounds": rounds,
                "devices": int(devices.size),
                "ips": int(hosts.size),
            },
        )
    )
    gap = (t1 - t0) / rounds
    for member in members.tolist():
        for k in range(rounds):
            start = t0 + int((k + rng.uniform(0, 0.4)) * gap)
            m = int(rng.integers(8, 61))
            creators = _popular_owners(world, rng, m)
            users = world.users[rng.integers(0, world.users.size, m)]
            targets = rng.permutation(np.unique(np.where(rng.random(m) < 0.6, creators, users)))
            follow_at = start + np.cumsum(rng.integers(3 * SECOND, 20 * SECOND, targets.size))
            undo_at = follow_at + rng.integers(1 * MINUTE, 15 * MINUTE, targets.size)
            world.log.add(
                follow_at, FOLLOW, member, target=targets, origin=USER, consent=1, tag=tag
            )
            world.log.add(undo_at, UNFOLLOW, member, target=targets, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.1, 0.4)))


def forced_follow(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """For 30-240 minutes the onboarding flow makes many or most newcomers (40-100%)
    follow one account without asking (origin onboarding_default, consent false); the
    newcomers are victims, so the campaign has no members, only the account that
    benefits."""
    target = world.take_creator(rng, 0.2, 0.95)
    t0, t1 = world.window(rng, 30 * MINUTE, 240 * MINUTE)
    born = world.accounts.created[world.newcomers]
    share = float(rng.uniform(0.4, 1.0))
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
            params={
                "victims": int(hit.size),
                "share": round(share, 2),
                "minutes": (t1 - t0) // MINUTE,
            },
        )
    )
    ts = world.accounts.created[hit] + rng.integers(2 * SECOND, 40 * SECOND, hit.size)
    world.log.add(ts, FOLLOW, hit, target=target, origin=ONBOARDING, consent=0, tag=tag)
    undo = rng.random(hit.size) < 0.1
    later = ts[undo] + rng.integers(5 * MINUTE, HOUR, int(undo.sum()))
    world.log.add(later, UNFOLLOW, hit[undo], target=target)


def batch_registration(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """40-800 accounts register within 1-20 minutes from one network (2-200 addresses of
    one /24, or for some a single address), on one device shared by all up to one each,
    then lie dormant."""
    n = log_count(rng, 40, 800)
    span = int(rng.integers(1 * MINUTE, 20 * MINUTE + 1))
    t0, _ = world.window(rng, span, span)
    one_ip = rng.random() < 0.3
    hosts = _hosts(world, rng, 1, 1 if one_ip else log_count(rng, 2, 200))
    devices = world.new_devices(rng, log_count(rng, 1, n))
    created = np.sort(t0 + rng.integers(0, span, n))
    members = world.accounts.add(created, _shared(rng, hosts, n, 1), _shared(rng, devices, n, 1))
    tag = world.plan(
        Plan(
            plan_id,
            "batch_registration",
            "account",
            "actors",
            article="18(8)",
            params={
                "size": n,
                "span_s": span // SECOND,
                "one_ip": int(one_ip),
                "devices": int(devices.size),
                "ips": int(hosts.size),
            },
        )
    )
    world.log.add(created, REGISTER, members, tag=tag)
    _noise(world, rng, members, float(rng.uniform(0.0, 0.05)))


CAMPAIGNS: dict[str, Callable[[World, np.random.Generator, str], None]] = {
    "follower_burst": follower_burst,
    "slow_drip": slow_drip,
    "click_farm": click_farm,
    "repost_ring": repost_ring,
    "copy_paste": copy_paste,
    "churn": churn,
    "forced_follow": forced_follow,
    "batch_registration": batch_registration,
    "account_handover": handover.account_handover,
}
