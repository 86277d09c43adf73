"""Organic traffic: what tens of thousands of real people do while nothing is wrong.

Follows go to creators in proportion to their popularity, as a Poisson process on the
daily rhythm, so each creator has a follower rate a baseline can learn. Clicks, reposts
and comments land on a creator's items, recent ones likelier. Friends follow friends,
people unfollow, and newcomers register and find their way around. Everything here is
untagged except newcomers' follows of popular accounts while that hard negative is on.
"""

from __future__ import annotations

import numpy as np

from pipeline.lab.simulation import text
from pipeline.lab.simulation.clock import DAY, HOUR, MINUTE, SECOND, arrivals, arrivals_by_row
from pipeline.lab.simulation.handover import organic_logins
from pipeline.lab.simulation.log import (
    CLICK,
    COMMENT,
    FOLLOW,
    IMPORT,
    NONE,
    ONBOARDING,
    RECOMMENDATION,
    REGISTER,
    REPOST,
    UNFOLLOW,
    USER,
)
from pipeline.lab.simulation.world import World


def organic(world: World, rng: np.random.Generator) -> None:
    """Append the whole run's organic events to the world's log."""
    _creator_follows(world, rng)
    _friend_follows(world, rng)
    _engagement(world, rng)
    _newcomers(world, rng)
    organic_logins(world)  # its own random stream


def follow_origin(
    rng: np.random.Generator, n: int, recommended: float, imported: float, unconsented: float
) -> tuple[np.ndarray, np.ndarray]:
    """Origins and consent of `n` organic follows: mostly `user`, some recommended or
    imported, 3% from old clients that send neither field; a share of contact imports
    is made without a confirmation (consent false), spread over many targets."""
    roll = rng.random(n)
    origin = np.full(n, USER, dtype=np.int8)
    origin[roll < recommended + imported] = RECOMMENDATION
    origin[roll < imported] = IMPORT
    origin[roll > 0.97] = NONE
    consent = np.where(origin == NONE, NONE, 1).astype(np.int8)
    consent[(origin == IMPORT) & (rng.random(n) < unconsented)] = 0
    return origin, consent


def pick_content(
    world: World, rng: np.random.Generator, owners: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """For each (owner, ts): one of the owner's items published before ts, recent items
    likelier (attention decays over hours, with a long tail of old favourites)."""
    n = ts.size
    age = np.where(rng.random(n) < 0.8, rng.exponential(4 * HOUR, n), rng.exponential(3 * DAY, n))
    wanted = ts - age.astype(np.int64)
    out = np.empty(n, dtype=np.int64)
    order = np.argsort(owners, kind="stable")
    bounds = np.flatnonzero(np.diff(owners[order])) + 1
    for chunk in np.split(order, bounds):
        if chunk.size == 0:
            continue
        published, items = world.contents.of(int(owners[chunk[0]]))
        k = np.searchsorted(published, wanted[chunk], side="right") - 1
        out[chunk] = items[np.maximum(k, 0)]  # every owner has items from before the run
    return out


def _unfollow_later(
    world: World, rng: np.random.Generator, actors: np.ndarray, targets: np.ndarray, ts: np.ndarray
) -> None:
    """Some follows are undone: most hours later, a few within minutes (regret)."""
    n = ts.size
    later = rng.random(n) < 0.02
    soon = rng.random(n) < 0.004
    delay = np.where(
        soon, rng.uniform(1 * MINUTE, 8 * MINUTE, n), rng.lognormal(np.log(45 * MINUTE), 1.0, n)
    )
    pick = later | soon
    world.log.add(
        ts[pick] + delay[pick].astype(np.int64), UNFOLLOW, actors[pick], target=targets[pick]
    )


def _creator_follows(world: World, rng: np.random.Generator) -> None:
    rows, ts = arrivals_by_row(rng, world.start, world.end, world.follow_rate)
    targets = world.creators[rows]
    actors = world.pick_users(rng, ts.size)
    keep = actors != targets
    ts, actors, targets = ts[keep], actors[keep], targets[keep]
    origin, consent = follow_origin(rng, ts.size, 0.2, 0.02, 0.0)
    world.log.add(ts, FOLLOW, actors, target=targets, origin=origin, consent=consent)
    _unfollow_later(world, rng, actors, targets, ts)
    # Unfollows of follows made before the run.
    rows, ts = arrivals_by_row(rng, world.start, world.end, world.follow_rate * 0.08)
    world.log.add(ts, UNFOLLOW, world.pick_users(rng, ts.size), target=world.creators[rows])


def _friend_follows(world: World, rng: np.random.Generator) -> None:
    ts = arrivals(rng, world.start, world.end, 0.04 * world.users.size)
    actors = world.pick_users(rng, ts.size)
    targets = world.users[rng.integers(0, world.users.size, ts.size)]
    keep = actors != targets
    ts, actors, targets = ts[keep], actors[keep], targets[keep]
    origin, consent = follow_origin(rng, ts.size, 0.1, 0.05, 0.3)
    world.log.add(ts, FOLLOW, actors, target=targets, origin=origin, consent=consent)
    _unfollow_later(world, rng, actors, targets, ts)
    ts = arrivals(rng, world.start, world.end, 0.004 * world.users.size)
    targets = world.users[rng.integers(0, world.users.size, ts.size)]
    world.log.add(ts, UNFOLLOW, world.pick_users(rng, ts.size), target=targets)


def _engage(
    world: World,
    rng: np.random.Generator,
    kind: int,
    ts: np.ndarray,
    owners: np.ndarray,
    actors: np.ndarray,
) -> None:
    """Clicks, reposts or comments by `actors` on items of `owners` at `ts`."""
    keep = actors != owners
    ts, owners, actors = ts[keep], owners[keep], actors[keep]
    content = pick_content(world, rng, owners, ts)
    r = world.text_rng(rng)
    texts = NONE
    if kind == COMMENT:
        texts = world.add_texts([text.organic_comment(r) for _ in range(ts.size)])
    elif kind == REPOST:
        texts = world.add_texts([text.repost_note(r) for _ in range(ts.size)])
    world.log.add(ts, kind, actors, content=content, text=texts)


def _engagement(world: World, rng: np.random.Generator) -> None:
    clicks = world.follow_rate * world.click_ratio
    n = clicks.size
    per_kind = {
        CLICK: clicks,
        COMMENT: clicks * np.exp(rng.normal(np.log(0.05), 0.4, n)),
        REPOST: clicks * np.exp(rng.normal(np.log(0.025), 0.5, n)),
    }
    for kind, rate in per_kind.items():
        rows, ts = arrivals_by_row(rng, world.start, world.end, rate)
        _engage(world, rng, kind, ts, world.creators[rows], world.pick_users(rng, ts.size))


def _newcomers(world: World, rng: np.random.Generator) -> None:
    """Each new account registers, then follows, clicks and comments over its first hours."""
    people = world.newcomers
    born = world.accounts.created[people]
    world.log.add(born, REGISTER, people)
    n = people.size
    if n == 0:
        return

    def after(counts: np.ndarray, mean: float) -> tuple[np.ndarray, np.ndarray]:
        who = np.repeat(np.arange(n), counts)
        return people[who], born[who] + (20 * SECOND + rng.exponential(mean, who.size)).astype(
            np.int64
        )

    weight = world.follow_rate * world.click_ratio
    weight = weight / weight.sum()
    if world.popular_tag >= 0:  # recommendations of popular accounts at sign-up
        popular = world.popular
        p = world.follow_rate[: popular.size] / world.follow_rate[: popular.size].sum()
        counts = np.minimum(2 + rng.poisson(2.5, n), popular.size)
        actors, ts = after(counts, 6 * MINUTE)
        targets = np.concatenate(
            [popular[rng.choice(popular.size, k, replace=False, p=p)] for k in counts.tolist()]
        )
        onboarding = rng.random(ts.size) < 0.2
        origin = np.where(onboarding, ONBOARDING, RECOMMENDATION)
        victim = np.isin(actors, np.fromiter(world.victims, dtype=np.int64))
        tagged = ~victim
        for mask, tag in ((tagged, world.popular_tag), (~tagged, NONE)):
            world.log.add(
                ts[mask],
                FOLLOW,
                actors[mask],
                target=targets[mask],
                origin=origin[mask],
                consent=1,
                tag=tag,
            )
    else:
        actors, ts = after(rng.poisson(1.0, n), 20 * MINUTE)
        targets = world.creators[rng.choice(world.creators.size, ts.size, p=weight)]
        world.log.add(ts, FOLLOW, actors, target=targets, origin=USER, consent=1)

    actors, ts = after(rng.poisson(1.0, n), 40 * MINUTE)
    targets = world.users[rng.integers(0, world.users.size, ts.size)]
    origin, consent = follow_origin(rng, ts.size, 0.3, 0.2, 0.3)
    world.log.add(ts, FOLLOW, actors, target=targets, origin=origin, consent=consent)

    for kind, mean_count in ((CLICK, 6.0), (COMMENT, 0.4), (REPOST, 0.2)):
        actors, ts = after(rng.poisson(mean_count, n), 40 * MINUTE)
        owners = world.creators[rng.choice(world.creators.size, ts.size, p=weight)]
        _engage(world, rng, kind, ts, owners, actors)
