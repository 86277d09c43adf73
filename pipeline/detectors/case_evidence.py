"""Evidence a finding carries for whoever reviews its case: the subject's latest windows
as the detector judged them (`evidence.series`, from the record its key state keeps:
`models.recent_windows`), and what the events say of its members (`evidence.member_facts`):
when each account was created, and the network (/24, /48) and device it acted from, so
that a reviewer sees side by side what the accounts of a ring or a batch have in common.

Both are built only when there is a finding. Member facts come from events the detector
already holds then (a window's follows, its registrations, a sample of its clicks) and are
bounded: the first `MAX_MEMBER_FACTS` of the finding's members, each with only the fields
some event of it carried. A member seen more than once gives each field from its earliest
event (by time, then id) that carries it, so arrival order, and so the runtime, changes
nothing. An address is reduced to its network: the reviewer's question is which members
share one, and the evidence need not repeat an address.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any

from models.network import network_of
from models.recent_windows import as_series

MAX_MEMBER_FACTS = 100  # members described in a finding's evidence, at most
_order = attrgetter("ts", "event_id")


def series(recent: bytes | None) -> dict[str, Any]:
    """`{"series": ...}` from a key's record of its latest windows, or nothing when it
    keeps none (`series_points: 0`): a chart of no point is no evidence."""
    return {"series": as_series(recent)} if recent else {}


def member_facts(
    events: Iterable[Any], members: Sequence[str], limit: int = MAX_MEMBER_FACTS
) -> dict[str, dict[str, Any]]:
    """`{account: {"created_at": ms, "network": str, "device": str}}` for the first
    `limit` of `members` that `events` describe (a registration's time is its account's
    creation when the event does not say otherwise)."""
    wanted = dict.fromkeys(members[:limit])
    if not wanted:
        return {}
    facts: dict[str, dict[str, Any]] = {}
    for e in sorted((e for e in events if e.actor in wanted), key=_order):
        known = facts.setdefault(e.actor, {})
        if "created_at" not in known:
            created = e.actor_created_at
            if created is None and e.type == "register":
                created = e.ts
            if created is not None:
                known["created_at"] = created
        if "network" not in known and e.ip:
            known["network"] = network_of(e.ip)
        if "device" not in known and e.device_id:
            known["device"] = e.device_id
    return {m: facts[m] for m in wanted if facts.get(m)}


def source_facts(
    source: str, registered: dict[str, int], members: Sequence[str], limit: int = MAX_MEMBER_FACTS
) -> dict[str, dict[str, Any]]:
    """Member facts of a registration batch's accounts known without their events: each
    one's registration time, and the source they all came from (`net:<prefix>`, the
    network, or `dev:<device>`, the device; `models.registration_burst.source_of`)."""
    kind, _, what = source.partition(":")
    shared = {"net": "network", "dev": "device"}.get(kind)
    facts: dict[str, dict[str, Any]] = {}
    for m in members[:limit]:
        known: dict[str, Any] = {}
        if m in registered:
            known["created_at"] = registered[m]
        if shared and what:
            known[shared] = what
        if known:
            facts[m] = known
    return facts


MAX_PICTURED_MEMBERS = 50  # members of a group's `member_items` picture, at most
MAX_PICTURED_ITEMS = 50  # items (or rounds) of it, at most


def member_items(
    members: Sequence[str],
    items: Sequence[dict[str, Any]],
    acts: Iterable[tuple[str, int, int]],
    members_total: int,
    items_total: int,
) -> dict[str, Any]:
    """`{"member_items": ...}`, a group's members by item: which of the first
    `MAX_PICTURED_MEMBERS` of `members` acted on which of `items` (already cut to
    `MAX_PICTURED_ITEMS`, in the order they are to be drawn), and when: `acts` are
    `(member, index into items, ts)`, the earliest of a member on an item kept. Nothing
    when no listed member acted on a listed item."""
    pictured = list(members[:MAX_PICTURED_MEMBERS])
    row = {m: i for i, m in enumerate(pictured)}
    first: dict[tuple[int, int], int] = {}
    for member, j, ts in acts:
        i = row.get(member)
        if i is None or not 0 <= j < len(items):
            continue
        if ts < first.get((i, j), ts + 1):
            first[(i, j)] = ts
    if not first:
        return {}
    return {
        "member_items": {
            "members": pictured,
            "items": list(items),
            "acts": [[i, j, first[(i, j)]] for i, j in sorted(first)],
            "members_total": members_total,
            "items_total": items_total,
        }
    }
