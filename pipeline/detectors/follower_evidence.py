"""Whether a burst's new followers look bought, told from their follows, for the detectors
of follower bursts (`follower_jump`, `edge_burst`).

A burst alone is not enough: a viral post brings a crowd of established accounts on their
own devices and networks (`models.follower_composition` judges a crowd on plain values).
Here that judgement is made from follow events, and put into a finding's evidence and
explanation in the same words by every detector that makes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from models.follower_composition import Follower, FollowerComposition
from models.network import network_of
from pipeline.contract.events import Event, Follow


def follower_of(event: Event, young_ms: int) -> Follower:
    """The actor of an event (a follow's follower, a text's poster): fresh when created
    within `young_ms` before it (None: its age is unknown), its network and its device
    ('' when unknown)."""
    created = event.actor_created_at
    return (
        event.actor,
        None if created is None else event.ts - created < young_ms,
        network_of(event.ip),
        event.device_id or "",
    )


def composition_of(
    follows: Iterable[Follow],
    shared_min: int,
    young_ms: int,
    ages: tuple[int, int] | None = None,
) -> FollowerComposition:
    """Who the followers of `follows` are (`ages`: when `follows` are only a sample, the
    (fresh, dated) counts over all of them)."""
    return FollowerComposition((follower_of(f, young_ms) for f in follows), shared_min, ages)


def composition_evidence(composition: FollowerComposition) -> dict[str, float]:
    """Who the followers are, for a finding's evidence."""
    return {
        "young_share": round(composition.young_share, 3),
        "network_crowding": round(composition.net_crowding, 3),
        "device_crowding": round(composition.device_crowding, 3),
    }


def why_bought(composition: FollowerComposition, young_share: float, crowding_share: float) -> str:
    """What makes the followers look bought, as the end of a finding's explanation: mostly
    fresh accounts, else crowded onto a few networks or devices ('' when neither)."""
    if composition.young_share >= young_share:
        return f"; {composition.young_share:.0%} of them are freshly created accounts"
    if composition.crowding >= crowding_share:
        return "; many of them share a few networks or devices"
    return ""
