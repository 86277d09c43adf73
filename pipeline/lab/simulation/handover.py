"""Logins, and accounts changing hands (Article 11): the `account_handover` campaign and
the hard negatives a handover must not be confused with, `new_phone` and `travel`.

Organic logins: a share of users (and every carrier-NAT user) log in a few times a day,
from their own address and device slots like any of their events, so a NAT user logs in
through the NAT address. A taken-over account was used by its owner early in the run
(logins, a few comments in Chinese on a few favourite creators), falls silent, and is
then used from the buyer's devices and networks, in English, for a burst of promotion of
one beneficiary. A new phone changes only the device (from then on), a journey only the
networks. Switches of address or device go through `EventLog.switch`, so every later
event of the account, organic or not, carries them.
"""

from __future__ import annotations

import numpy as np

from pipeline.lab.simulation import network
from pipeline.lab.simulation.clock import DAY, MINUTE, arrivals_by_row
from pipeline.lab.simulation.labelling import Plan
from pipeline.lab.simulation.log import COMMENT, FOLLOW, LOGIN, NONE, REPOST, USER
from pipeline.lab.simulation.world import World

LOGIN_STREAM = 5  # the organic logins' random stream, after the world's own (2-4)
LOGIN_SHARE = 0.5  # users who log in (the others stay logged in)
LOGINS_PER_DAY = 3.0  # on average, lognormal across users
OLD = 180 * DAY  # handed over, new phone, travel: accounts at least this old

_OWNER_COMMENTS = (
    "今天也来支持一下",
    "这个我收藏了",
    "说得太对了",
    "每期都在看",
    "又学到了新东西",
    "好久没更新了，想你",
    "这集太好笑了",
    "已经转发给朋友了",
)
_PROMOTIONS = (
    "Follow {who} for daily deals and giveaways",
    "Best prices on {thing} today, check {who} now",
    "I earned so much with {who}, highly recommended",
    "Limited offer on {thing}, DM {who} for the link",
    "Everyone should follow {who}, trust me",
)
_THINGS = ("sneakers", "crypto signals", "phone cases", "skin care", "game coins")


def organic_logins(world: World) -> None:
    """Logins of a share of users and of every carrier-NAT user, a few a day each on the
    daily rhythm, from their own slots; taken-over accounts' logins are their campaign's."""
    rng = np.random.default_rng([world.seed, LOGIN_STREAM])
    users = world.users
    who = users[rng.random(users.size) < LOGIN_SHARE]
    nat = [p.claim for p in world.plans if p.kind == "carrier_nat" and p.claim is not None]
    handed = [np.asarray(p.subjects) for p in world.plans if p.kind == "account_handover"]
    who = np.union1d(who, np.concatenate([np.empty(0, np.int64), *nat]))
    who = np.setdiff1d(who, np.concatenate([np.empty(0, np.int64), *handed]))
    rate = LOGINS_PER_DAY / 24 * np.exp(rng.normal(0.0, 0.6, who.size))
    rows, ts = arrivals_by_row(rng, world.start, world.end, rate)
    world.log.add(ts, LOGIN, who[rows])


def _aged(world: World, rng: np.random.Generator, n: int, *, quiet: bool) -> np.ndarray:
    """`n` distinct unreserved established users (not creators), reserved from now on;
    `quiet`: among the least active (whose own events leave a dormant spell alone)."""
    old = world.accounts.created[world.users] < world.start - OLD
    free = ~np.isin(world.users, world.creators) & old
    free &= ~np.isin(world.users, np.fromiter(world.reserved, np.int64, len(world.reserved)))
    activity = world.activity
    if quiet:
        free &= activity < np.quantile(activity, 0.2)
    else:
        free &= activity > np.quantile(activity, 0.5)
    pool = world.users[free]
    picked = rng.choice(pool, min(n, pool.size), replace=False)
    world.reserved.update(picked.tolist())
    return np.sort(picked)


def _one_block(world: World, rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` addresses in one fresh /24 (a buyer's office line, a hotel), interned."""
    block = network.prefixes(rng, 1)
    return world.new_addresses(network.hosts_in(rng, block, n))


def account_handover(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """10-30 aged, quiet accounts bought by one operator. Each owner logs in and comments
    (in Chinese, on two or three favourite creators) early in the run, then nothing for
    1-3 h; then the account logs in from one of the buyer's few devices and networks,
    writes in English and promotes one beneficiary: follows it, reposts and comments on
    its items, follows a few of its partner accounts, within the hour."""
    n = int(rng.integers(10, 31))
    accounts = _aged(world, rng, n, quiet=True)
    n = accounts.size
    beneficiary = world.take_creator(rng, 0.2, 0.8)
    partners = [world.take_creator(rng, 0.3, 0.9) for _ in range(3)]
    t0, t1 = world.window(rng, 40 * MINUTE, 70 * MINUTE)
    taken = t0 + rng.integers(0, max((t1 - t0) // 3, 1), n)
    devices = world.new_devices(rng, max(2, n // 4))
    addresses = _one_block(world, rng, max(2, n // 3))
    device = devices[rng.integers(0, devices.size, n)]
    address = addresses[rng.integers(0, addresses.size, n)]
    tag = world.plan(
        Plan(
            plan_id,
            "account_handover",
            "account",
            accounts.tolist(),
            article="11",
            params={"accounts": n, "devices": int(devices.size), "from": int(t0)},
        )
    )
    world.log.switch(accounts, taken, ip=address, device=device)
    r = world.text_rng(rng)
    favourites = world.creators[rng.choice(world.creators.size, 3, replace=False)]
    published, items = world.contents.of(beneficiary)
    for k, account in enumerate(accounts.tolist()):
        quiet = int(rng.uniform(70 * MINUTE, 180 * MINUTE))
        owned_until = max(world.start + 5 * MINUTE, int(taken[k]) - quiet)
        span = max(owned_until - world.start, MINUTE)
        # the owner: logins and comments on favourite creators (untagged: the real owner)
        logins = world.start + np.sort(rng.integers(0, span, int(rng.integers(2, 5))))
        world.log.add(logins, LOGIN, account)
        said = world.start + np.sort(rng.integers(0, span, int(rng.integers(3, 7))))
        mine = favourites[rng.integers(0, favourites.size, said.size)]
        texts = world.add_texts([r.choice(_OWNER_COMMENTS) for _ in range(said.size)])
        world.log.add(said, COMMENT, account, content=_latest(world, mine, said), text=texts)
        # the buyer: logins, then a burst of promotion within the hour
        at = int(taken[k])
        world.log.add(at + np.sort(rng.integers(0, 50 * MINUTE, 3)), LOGIN, account, tag=tag)
        world.log.add(
            at + int(rng.integers(MINUTE, 5 * MINUTE)),
            FOLLOW,
            account,
            target=beneficiary,
            origin=USER,
            consent=1,
            tag=tag,
        )
        for partner in partners:
            world.log.add(
                at + int(rng.integers(5 * MINUTE, 40 * MINUTE)),
                FOLLOW,
                account,
                target=partner,
                origin=USER,
                consent=1,
                tag=tag,
            )
        posts = rng.integers(4, 9)
        when = at + np.sort(rng.integers(5 * MINUTE, 55 * MINUTE, posts))
        on = items[np.maximum(np.searchsorted(published, when, side="right") - 1, 0)]
        world.log.add(when, REPOST, account, content=on, tag=tag)
        notes = rng.integers(3, 7)
        when = at + np.sort(rng.integers(5 * MINUTE, 55 * MINUTE, notes))
        on = items[np.maximum(np.searchsorted(published, when, side="right") - 1, 0)]
        name = world.accounts.ids[beneficiary]
        texts = world.add_texts(
            [
                r.choice(_PROMOTIONS).format(who=f"@{name}", thing=r.choice(_THINGS))
                for _ in range(int(notes))
            ]
        )
        world.log.add(when, COMMENT, account, content=on, text=texts, tag=tag)


def _latest(world: World, owners: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Each owner's latest item published before each ts (every creator has older ones)."""
    out = np.empty(ts.size, dtype=np.int64)
    for i, (owner, t) in enumerate(zip(owners.tolist(), ts.tolist(), strict=True)):
        published, items = world.contents.of(owner)
        out[i] = items[max(int(np.searchsorted(published, t, side="right")) - 1, 0)]
    return out


def new_phone(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """20-60 active users move to a new phone at some point of the run: they log in on it
    (twice within minutes, as a new install does) and from then on every event comes
    from it, from their usual networks, with their usual habits."""
    people = _aged(world, rng, int(rng.integers(20, 61)), quiet=False)
    t0, t1 = world.window(rng, 30 * MINUTE, 120 * MINUTE)
    when = rng.integers(t0, t1, people.size)
    phones = world.new_devices(rng, people.size)
    world.log.switch(people, when, device=phones)
    tag = world.plan(
        Plan(
            plan_id,
            "new_phone",
            "account",
            "actors",
            claim=people,
            params={"users": int(people.size)},
        )
    )
    for k in range(2):
        world.log.add(when + k * int(rng.integers(MINUTE, 10 * MINUTE)), LOGIN, people, tag=tag)


def travel(world: World, rng: np.random.Generator, plan_id: str) -> None:
    """20-60 active users travel: from some point of the run on they use a hotel's or a
    foreign carrier's network (a few travel together), on their own phone, with their
    usual habits; they log in on arrival."""
    people = _aged(world, rng, int(rng.integers(20, 61)), quiet=False)
    t0, t1 = world.window(rng, 30 * MINUTE, 120 * MINUTE)
    when = rng.integers(t0, t1, people.size)
    groups = rng.integers(0, max(people.size // 3, 1), people.size)
    address = np.concatenate([_one_block(world, rng, 1) for _ in range(int(groups.max()) + 1)])
    world.log.switch(people, when, ip=address[groups], device=NONE)
    tag = world.plan(
        Plan(
            plan_id, "travel", "account", "actors", claim=people, params={"users": int(people.size)}
        )
    )
    world.log.add(when + int(rng.integers(0, 10 * MINUTE)), LOGIN, people, tag=tag)
