"""Where a registration came from, and how concentrated a crowd of them is.

Accounts registered in bulk come from one operation: one network block (a /24, a /48,
often a single address) and a handful of devices, within minutes. Many sign-ups behind
one address alone are no evidence: a carrier NAT puts thousands of real people behind
one, but each of them registers on their own phone. So a registration's *source* is its
network (`models.network.network_of`), or its device when it carries no address, and a
burst of registrations from one source is judged on how few devices made them.

    >>> source_of("203.0.113.7", "d1"), source_of(None, "d1"), source_of(None, None)
    ('net:203.0.113', 'dev:d1', '')
    >>> devices_per_registration([("a", "d1"), ("b", "d1"), ("c", None), ("d", "d1")])
    0.5
"""

from __future__ import annotations

from collections.abc import Iterable

from models.network import network_of


def source_of(ip: str | None, device: str | None) -> str:
    """The network a registration came from, else its device, else '' (unknown)."""
    if ip:
        return "net:" + network_of(ip)
    if device:
        return "dev:" + device
    return ""


def devices_per_registration(registrations: Iterable[tuple[str, str | None]]) -> float:
    """Distinct devices per registration for (account, device) pairs: about 1 for people
    signing up on their own phones, near 0 for a batch from a few. A missing device
    counts as the account's own (clients that send none do not look like one phone)."""
    devices = set()
    n = 0
    for account, device in registrations:
        devices.add(device if device else "\x00" + account)
        n += 1
    return len(devices) / n if n else 1.0
