"""The network an address belongs to, for counting how concentrated a crowd is.

Hosts in one /24 (IPv4) or one /48 (IPv6) usually sit behind one operator: a proxy
provider's block, a data centre, a carrier. Many accounts from one block is a weak signal
alone (carrier NAT puts thousands of real people behind one address) and a strong one
combined with fresh accounts or shared devices.

    >>> network_of("203.0.113.77"), network_of("2001:db8:1:2::9"), network_of(None)
    ('203.0.113', '2001:db8:1', '')
"""

from __future__ import annotations


def network_of(ip: str | None) -> str:
    """'a.b.c' for IPv4, the first three groups for IPv6, '' when unknown. IPv6 written
    with '::' inside the first three groups is taken as written (rare for client hosts)."""
    if not ip:
        return ""
    if ":" in ip:
        return ":".join(ip.split(":", 3)[:3])
    return ip.rpartition(".")[0]
