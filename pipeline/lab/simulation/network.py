"""Client addresses and device ids: how the simulated world names networks and phones.

Addresses and devices are interned, so an event stores an index and two accounts behind
one household router or one carrier NAT share the very same entry. Every actor, organic or
not, draws from the same address space and id formats, so neither can be told apart by
how its address or device id is spelt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# First octets of large Chinese ISPs and mobile carriers (public unicast space).
_ISP_OCTETS = np.array(
    [1, 14, 27, 36, 39, 42, 49, 58, 59, 60, 61, 101, 103, 106, 110, 111, 112, 113, 114, 115,
     116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 171, 175, 180, 182, 183, 202, 210, 211,
     218, 219, 220, 221, 222, 223]
)  # fmt: skip
_V6_PREFIXES = ("240e", "2408", "2409", "240a", "2400")


class Interned:
    """A table of strings addressed by index; the same string always has one index."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, value: str) -> int:
        idx = self._index.get(value)
        if idx is None:
            idx = len(self.values)
            self._index[value] = idx
            self.values.append(value)
        return idx

    def add_all(self, values: list[str]) -> np.ndarray:
        return np.fromiter((self.add(v) for v in values), dtype=np.int64, count=len(values))

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Networks:
    """The /24 networks ordinary people connect from: fixed broadband (some networks far
    busier than others) and mobile carriers."""

    home: np.ndarray
    home_weight: np.ndarray  # probabilities, sum 1
    mobile: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n_home: int, n_mobile: int) -> Networks:
        home, mobile = np.split(prefixes(rng, n_home + n_mobile), [n_home])
        weight = np.exp(rng.normal(0.0, 1.0, n_home))
        return cls(home, weight / weight.sum(), mobile)

    def home_hosts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        nets = self.home[rng.choice(self.home.size, n, p=self.home_weight)]
        return nets + rng.integers(2, 255, n)

    def mobile_hosts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return hosts_in(rng, self.mobile, n)


def prefixes(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` distinct /24 networks as integers (the address with its last octet zeroed)."""
    out: set[int] = set()
    chosen: list[int] = []
    while len(chosen) < n:
        first = rng.choice(_ISP_OCTETS, n)
        rest = rng.integers(0, 1 << 16, n)
        for value in ((first << 24) | (rest << 8)).tolist():
            if value not in out and len(chosen) < n:
                out.add(value)
                chosen.append(value)
    return np.array(chosen, dtype=np.int64)


def ipv4(values: np.ndarray) -> list[str]:
    """Dotted-quad strings for 32-bit integers."""
    v = np.asarray(values, dtype=np.int64)
    parts = zip(
        (v >> 24).tolist(),
        ((v >> 16) & 255).tolist(),
        ((v >> 8) & 255).tolist(),
        (v & 255).tolist(),
        strict=True,
    )
    return [f"{a}.{b}.{c}.{d}" for a, b, c, d in parts]


def hosts_in(rng: np.random.Generator, nets: np.ndarray, n: int) -> np.ndarray:
    """`n` host addresses, each in a random network of `nets` (hosts 2..254)."""
    return nets[rng.integers(0, nets.size, n)] + rng.integers(2, 255, n)


def ipv6(rng: np.random.Generator, n: int) -> list[str]:
    """Carrier-style IPv6 addresses, each a different /64."""
    pre = rng.integers(0, len(_V6_PREFIXES), n).tolist()
    words = rng.integers(0, 1 << 16, (n, 5)).tolist()
    return [
        f"{_V6_PREFIXES[p]}:{w[0]:x}:{w[1]:x}:{w[2]:x}::{w[3]:x}:{w[4]:x}"
        for p, w in zip(pre, words, strict=True)
    ]


def device_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Device fingerprints: Android ids (16 hex) and iOS vendor ids (UUID form), mixed."""
    raw = rng.integers(0, 1 << 64, (n, 2), dtype=np.uint64).tolist()
    ios = (rng.random(n) < 0.4).tolist()
    out = []
    for (a, b), is_ios in zip(raw, ios, strict=True):
        if is_ios:
            h = f"{a:016X}{b:016X}"
            out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}")
        else:
            out.append(f"{a:016x}")
    return out
