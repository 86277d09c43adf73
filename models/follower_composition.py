"""Who a crowd of new followers is: how fresh, how crowded onto shared networks or devices.

A burst of follows alone does not say "bought": a viral post brings thousands of
established accounts, each on its own phone and home line. Bought followers are mostly
freshly created accounts, or many of them share a few networks (/24, /48) or devices. This
is the judgement `follower_jump` and `edge_burst` make on a burst's followers, as a pure
helper on plain values so any stage can make the same one.

    >>> bots = [(f"b{i}", True, "198.51.100", f"farm{i % 3}") for i in range(30)]
    >>> fans = [(f"f{i}", False, f"10.0.{i}", f"d{i}") for i in range(30)]
    >>> FollowerComposition(bots, shared_min=3).suspicious(young_share=0.8, crowding_share=0.5)
    True
    >>> FollowerComposition(fans, shared_min=3).suspicious(young_share=0.8, crowding_share=0.5)
    False
    >>> unknown = [(f"u{i}", None, "", "") for i in range(30)]
    >>> FollowerComposition(unknown, shared_min=3).looks_bought(young_share=0.8, crowding_share=0.5)
    True
    >>> mixed = FollowerComposition(bots[:10] + fans, shared_min=3)
    >>> round(mixed.young_share, 2), mixed.suspects() == sorted(a for a, *_ in bots[:10])
    (0.25, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

# Follows the platform itself makes (sign-up recommendations, onboarding defaults, contact
# imports): the flow explains them, so they are no evidence that the followers were bought.
PLATFORM_FLOWS = frozenset({"recommendation", "onboarding_default", "import"})

# (actor, freshly created? (None: age unknown), network ('' unknown), device ('' unknown))
Follower = tuple[str, bool | None, str, str]


class FollowerComposition:
    """Shares of fresh accounts and of followers crowded onto shared networks or devices.

    A network or device is crowded when at least `shared_min` of the followers use it;
    crowding is the share of the followers with a known network (device) that sit on a
    crowded one. The young share is over the followers whose age is known.
    """

    __slots__ = (
        "crowded_devices",
        "crowded_nets",
        "described",
        "device_crowding",
        "followers",
        "net_crowding",
        "young_share",
    )

    def __init__(
        self,
        followers: Iterable[Follower],
        shared_min: int,
        ages: tuple[int, int] | None = None,
    ) -> None:
        """`ages`, (fresh, dated), counts the ages over all the followers when
        `followers` is only a sample of them (a capped list)."""
        self.followers = list(followers)
        dated = young = 0
        nets: Counter[str] = Counter()
        devices: Counter[str] = Counter()
        for _, fresh, net, device in self.followers:
            if fresh is not None:
                dated += 1
                young += fresh
            if net:
                nets[net] += 1
            if device:
                devices[device] += 1
        if ages is not None:
            young, dated = ages
        self.young_share = young / dated if dated else 0.0
        self.crowded_nets = {n for n, c in nets.items() if c >= shared_min}
        self.crowded_devices = {d for d, c in devices.items() if c >= shared_min}
        self.net_crowding = _share(nets, self.crowded_nets)
        self.device_crowding = _share(devices, self.crowded_devices)
        self.described = bool(dated or nets or devices)

    @property
    def crowding(self) -> float:
        """The larger of network and device crowding."""
        return max(self.net_crowding, self.device_crowding)

    def suspicious(self, young_share: float, crowding_share: float) -> bool:
        """Mostly fresh accounts, or mostly crowded onto a few networks or devices."""
        return self.young_share >= young_share or self.crowding >= crowding_share

    def looks_bought(self, young_share: float, crowding_share: float) -> bool:
        """Suspicious, or not described at all: followers nothing tells apart are no
        sign of an organic crowd, so nothing clears the burst."""
        return self.suspicious(young_share, crowding_share) or not self.described

    def suspects(self) -> list[str]:
        """Followers that are individually suspicious (fresh, or in a crowd), sorted. When
        nothing describes the followers (no ages, addresses or devices), every one."""
        if not self.described:
            return sorted({f[0] for f in self.followers})
        nets, devices = self.crowded_nets, self.crowded_devices
        return sorted(
            {
                actor
                for actor, fresh, net, device in self.followers
                if fresh or net in nets or device in devices
            }
        )


def _share(counts: Counter[str], crowded: set[str]) -> float:
    total = sum(counts.values())
    return sum(counts[k] for k in crowded) / total if total else 0.0
