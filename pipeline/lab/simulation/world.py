"""The simulated platform before anything happens on it: accounts with their ages,
devices and addresses, creators with heavy-tailed popularity and their content, and the
schedule of new registrations.

Every account (organic user, creator, newcomer or campaign member) lives in the one
`Accounts` table with the same id format, so nothing but behaviour tells them apart. An
event names only its actor; the address and device it carries are drawn at write time
from that actor's few slots, as a real client picks whichever phone or network is at hand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipeline.lab.simulation import network
from pipeline.lab.simulation.clock import DAY, MINUTE, arrivals, n_minutes
from pipeline.lab.simulation.log import EventLog

if TYPE_CHECKING:
    from pipeline.lab.simulation.labelling import Plan

SLOTS = 3  # addresses / devices an account can use
YEAR = 365 * DAY
COLD_START = 5 * MINUTE  # in a cold world everything begins this soon after the start


class Accounts:
    """Every account: id, creation time, and up to SLOTS address and device indices."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._used: set[int] = set()
        self.ids: list[str] = []
        self.created = np.empty(0, dtype=np.int64)
        self.ips = np.empty((0, SLOTS), dtype=np.int64)
        self.devices = np.empty((0, SLOTS), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, created: np.ndarray, ips: np.ndarray, devices: np.ndarray) -> np.ndarray:
        """New accounts; `ips` and `devices` are (n, k<=SLOTS) index arrays, -1 for unused."""
        n = len(created)
        first = len(self.ids)
        self.ids.extend(self._fresh_ids(n))
        self.created = np.concatenate([self.created, np.asarray(created, dtype=np.int64)])
        self.ips = np.concatenate([self.ips, _slots(ips, n)])
        self.devices = np.concatenate([self.devices, _slots(devices, n)])
        return np.arange(first, first + n, dtype=np.int64)

    def _fresh_ids(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            for value in self._rng.integers(1_000_000_000, 10_000_000_000, n - len(out)).tolist():
                if value not in self._used:
                    self._used.add(value)
                    out.append(f"u{value}")
        return out


def _slots(values: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.int64).reshape(n, -1)
    out = np.full((n, SLOTS), -1, dtype=np.int64)
    out[:, : arr.shape[1]] = arr[:, :SLOTS]
    return out


class Contents:
    """Content items: id, owning account and publication time."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._used: set[int] = set()
        self.ids: list[str] = []
        self._owner: list[np.ndarray] = []
        self._published: list[np.ndarray] = []
        self._by_owner: dict[int, tuple[np.ndarray, np.ndarray]] | None = None

    def add(self, owner: np.ndarray, published: np.ndarray) -> np.ndarray:
        owner = np.asarray(owner, dtype=np.int64).ravel()
        first = len(self.ids)
        while len(self.ids) < first + owner.size:
            for value in self._rng.integers(10**10, 10**11, owner.size).tolist():
                if value not in self._used and len(self.ids) < first + owner.size:
                    self._used.add(value)
                    self.ids.append(f"p{value}")
        self._owner.append(owner)
        self._published.append(np.asarray(published, dtype=np.int64).ravel())
        self._by_owner = None
        return np.arange(first, first + owner.size, dtype=np.int64)

    @property
    def owner(self) -> np.ndarray:
        return np.concatenate(self._owner) if self._owner else np.empty(0, dtype=np.int64)

    @property
    def published(self) -> np.ndarray:
        return np.concatenate(self._published) if self._published else np.empty(0, np.int64)

    def of(self, owner: int) -> tuple[np.ndarray, np.ndarray]:
        """(publication times, content indices) of one owner's items, oldest first."""
        if self._by_owner is None:
            owners, published = self.owner, self.published
            order = np.lexsort((published, owners))
            bounds = np.flatnonzero(np.diff(owners[order])) + 1
            self._by_owner = {
                int(owners[chunk[0]]): (published[chunk], chunk)
                for chunk in np.split(order, bounds)
                if chunk.size
            }
        return self._by_owner.get(owner, (np.empty(0, np.int64), np.empty(0, np.int64)))


def _none() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


@dataclass
class World:
    """The platform and everything that happens on it during one simulated run."""

    seed: int
    start: int
    end: int
    warm_end: int  # campaigns and hard negatives begin after this (the start, if cold)
    scale: float
    accounts: Accounts
    contents: Contents
    nets: network.Networks
    addresses: network.Interned = field(default_factory=network.Interned)
    devices: network.Interned = field(default_factory=network.Interned)
    # Filled in by build_world:
    users: np.ndarray = field(default_factory=_none)  # accounts existing at the start
    activity: np.ndarray = field(default_factory=_none)  # how often each user acts
    creators: np.ndarray = field(default_factory=_none)  # most popular first
    follow_rate: np.ndarray = field(default_factory=_none)  # organic follows/hour, per creator
    click_ratio: np.ndarray = field(default_factory=_none)  # clicks per follow, per creator
    newcomers: np.ndarray = field(default_factory=_none)  # accounts registering in the run
    popular: np.ndarray = field(default_factory=_none)  # creators recommended to newcomers
    log: EventLog = field(default_factory=EventLog)
    texts: list[str] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    reserved: set[int] = field(default_factory=set)  # accounts a label already names
    reserved_content: set[int] = field(default_factory=set)
    victims: set[int] = field(default_factory=set)  # newcomers a forced follow hit
    popular_tag: int = -1  # the new_users_follow_popular label, when selected
    cold: bool = False  # campaigns and hard negatives begin within COLD_START of the start
    _user_cdf: np.ndarray | None = None

    # ---- labels ----------------------------------------------------------------------
    def plan(self, plan: Plan) -> int:
        """Register a campaign or hard negative; its index tags its events."""
        self.plans.append(plan)
        return len(self.plans) - 1

    # ---- time ------------------------------------------------------------------------
    def window(self, rng: np.random.Generator, shortest: int, longest: int) -> tuple[int, int]:
        """A span of length in [shortest, longest] (shortened if the run is short) ending at
        least ten minutes before the run ends, placed uniformly after the warm-up; in a
        cold world it begins within COLD_START of the start, before any baseline is
        learnt (the first event follows within minutes: the label starts there)."""
        last = self.end - 10 * MINUTE
        room = last - self.warm_end
        length = min(int(rng.integers(shortest, longest + 1)), room)
        latest = min(room - length, COLD_START) if self.cold else room - length
        t0 = self.warm_end + int(rng.integers(0, latest + 1))
        return t0, t0 + length

    # ---- accounts --------------------------------------------------------------------
    def add_people(self, rng: np.random.Generator, created: np.ndarray) -> np.ndarray:
        """Ordinary accounts (organic users, newcomers): a home broadband address for most,
        a mobile address for many, IPv6 for some; one device for most, two or three for
        some."""
        n = created.size
        home = network.ipv4(self.nets.home_hosts(rng, n))
        mobile = network.ipv4(self.nets.mobile_hosts(rng, n))
        v6 = network.ipv6(rng, n)
        ips = np.full((n, SLOTS), -1, dtype=np.int64)
        for i, (r_home, r_mobile, r_v6) in enumerate(rng.random((n, 3)).tolist()):
            mine = [home[i]] if r_home < 0.8 else []
            if r_mobile < 0.55 or not mine:
                mine.append(mobile[i])
            if r_v6 < 0.15:
                mine.append(v6[i])
            ips[i, : len(mine)] = self.addresses.add_all(mine)
        n_devices = rng.choice([1, 2, 3], n, p=[0.7, 0.25, 0.05])
        devs = np.full((n, SLOTS), -1, dtype=np.int64)
        rows = np.repeat(np.arange(n), n_devices)
        cols = np.arange(rows.size) - np.repeat(np.cumsum(n_devices) - n_devices, n_devices)
        devs[rows, cols] = self.new_devices(rng, rows.size)
        return self.accounts.add(created, ips, devs)

    def pick_users(
        self, rng: np.random.Generator, n: int, *, older_than: int | None = None
    ) -> np.ndarray:
        """`n` existing users drawn by how active they are (with repeats); `older_than`
        keeps only accounts created before that time."""
        if older_than is None:
            if self._user_cdf is None:
                self._user_cdf = np.cumsum(self.activity) / self.activity.sum()
            cdf, pool = self._user_cdf, self.users
        else:
            keep = self.accounts.created[self.users] < older_than
            pool = self.users[keep]
            weights = self.activity[keep]
            cdf = np.cumsum(weights) / weights.sum()
        pick = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), pool.size - 1)
        return pool[pick]

    def take_creator(self, rng: np.random.Generator, lo: float, hi: float) -> int:
        """An unreserved creator ranked between quantiles lo and hi of popularity (0 = the
        most popular), reserved from now on."""
        n = self.creators.size
        ranked = self.creators[int(lo * n) : max(int(hi * n), int(lo * n) + 1)].tolist()
        free = [c for c in ranked if c not in self.reserved]
        if not free:
            free = [c for c in self.creators.tolist() if c not in self.reserved]
        choice = free[int(rng.integers(0, len(free)))]
        self.reserved.add(choice)
        return choice

    def rate_of(self, creator: int) -> float:
        """Organic follows per hour of a creator."""
        return float(self.follow_rate[np.flatnonzero(self.creators == creator)[0]])

    def clicks_of(self, creator: int) -> float:
        """Organic clicks per hour on all of a creator's items."""
        row = np.flatnonzero(self.creators == creator)[0]
        return float(self.follow_rate[row] * self.click_ratio[row])

    def creator_rates(self) -> dict[int, float]:
        """Organic follows per hour, by creator account."""
        return dict(zip(self.creators.tolist(), self.follow_rate.tolist(), strict=True))

    def new_devices(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.devices.add_all(network.device_ids(rng, n))

    def new_addresses(self, values: np.ndarray) -> np.ndarray:
        """Intern IPv4 addresses given as 32-bit integers."""
        return self.addresses.add_all(network.ipv4(values))

    # ---- text ------------------------------------------------------------------------
    def add_texts(self, texts: list[str | None]) -> np.ndarray:
        """Index the texts; None becomes -1 (no text)."""
        out = np.full(len(texts), -1, dtype=np.int64)
        for i, text in enumerate(texts):
            if text is not None:
                out[i] = len(self.texts)
                self.texts.append(text)
        return out

    def text_rng(self, rng: np.random.Generator) -> random.Random:
        """A fast scalar generator for text, seeded from `rng` (so still deterministic)."""
        return random.Random(int(rng.integers(0, 2**63)))


def _ages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Account ages at the start: most months to years, some days, a few hours."""
    roll = rng.random(n)
    years = np.exp(rng.uniform(np.log(60 * DAY), np.log(9 * YEAR), n))
    days = rng.uniform(DAY, 60 * DAY, n)
    hours = rng.uniform(10 * MINUTE, DAY, n)
    return np.where(roll < 0.85, years, np.where(roll < 0.97, days, hours)).astype(np.int64)


def build_world(seed: int, start: int, end: int, scale: float, cold: bool = False) -> World:
    """Population, creators, content and the registration schedule of one run; a cold
    world has no warm-up (the population is the same either way)."""
    rng = np.random.default_rng([seed, 1])
    n_users = max(1_500, round(40_000 * scale))
    n_creators = max(60, round(400 * scale))
    warm_end = start + int((end - start) * rng.uniform(0.25, 0.30))
    world = World(
        seed=seed,
        start=start,
        end=end,
        warm_end=start if cold else warm_end,
        scale=scale,
        cold=cold,
        accounts=Accounts(rng),
        contents=Contents(rng),
        nets=network.Networks.draw(
            rng, max(300, round(6_000 * scale)), max(40, round(600 * scale))
        ),
    )

    created = start - _ages(rng, n_users)
    creator_rows = np.arange(n_creators)  # ids are random, so the first rows are as good
    created[creator_rows] = start - np.exp(
        rng.uniform(np.log(180 * DAY), np.log(9 * YEAR), n_creators)
    ).astype(np.int64)
    world.users = world.add_people(rng, created)
    _households(rng, world.accounts, world.users)
    world.activity = np.exp(rng.normal(0.0, 1.0, n_users))
    world.activity[creator_rows] *= 1.5

    # Popularity: lognormal follows/hour, top creators a few hundred an hour at scale 1.
    world.creators = world.users[creator_rows]
    world.follow_rate = np.sort(np.exp(rng.normal(np.log(6.0), 1.35, n_creators)))[::-1] * scale
    world.click_ratio = np.exp(rng.normal(np.log(14.0), 0.5, n_creators))
    world.popular = world.creators[: max(5, round(0.04 * n_creators))]

    # Content: items from the last two weeks, and new posts during the run.
    owners = np.repeat(world.creators, 3 + rng.poisson(5, n_creators))
    age = np.exp(rng.uniform(np.log(10 * MINUTE), np.log(14 * DAY), owners.size))
    world.contents.add(owners, start - age.astype(np.int64))
    post_rate = np.exp(rng.normal(np.log(0.12), 0.6, n_creators))
    for creator, per_hour in zip(world.creators.tolist(), post_rate.tolist(), strict=True):
        when = arrivals(rng, start, end, per_hour)
        world.contents.add(np.full(when.size, creator), when)

    # Registrations during the run, with a promotion that lifts them for a while.
    minutes = n_minutes(start, end)
    shape = np.ones(minutes)
    promo = int(rng.integers(0, max(minutes - 30, 1)))
    shape[promo : promo + int(rng.integers(30, 91))] *= rng.uniform(1.8, 3.0)
    registered = arrivals(rng, start, end, max(30.0, 250.0 * scale), shape=shape)
    world.newcomers = world.add_people(rng, registered)
    return world


def _households(rng: np.random.Generator, accounts: Accounts, users: np.ndarray) -> None:
    """Some people share a home router or a family tablet with another user."""
    n = users.size
    share_ip = users[rng.random(n) < 0.08]
    accounts.ips[share_ip, 0] = accounts.ips[users[rng.integers(0, n, share_ip.size)], 0]
    share_dev = users[rng.random(n) < 0.015]
    donors = users[rng.integers(0, n, share_dev.size)]
    accounts.devices[share_dev, 1] = accounts.devices[donors, 0]
