"""Whether a content item's extra engagement came from new people or from a few sources.

Organic attention brings new people: each click above an item's normal comes from one
more account, on its own device and (mostly) its own network, however large the surge. A
click farm reuses a few accounts, devices and addresses, so its extra clicks bring almost
no new sources. `sources_per_extra_event` measures that: the distinct sources a window's
extra volume brought, per extra event, relative to how many sources an event of this item
usually brings (people who click an item several times lower that for every source alike).
About 1 is a crowd; near 0 is the same few sources again and again.

    >>> round(sources_per_extra_event(distinct=10, sampled=160, events=160, expected=6), 3)
    0.026
    >>> sources_per_extra_event(distinct=870, sampled=900, events=900, expected=10) > 0.9
    True
"""

from __future__ import annotations

import math

from models.prior_baseline import PriorCountBaseline


def sources_per_extra_event(
    distinct: int,
    sampled: int,
    events: int,
    expected: float,
    usual: float = 1.0,
    margin_sd: float = 0.0,
) -> float:
    """New distinct sources per extra event, in [0, 1], scaled by the `usual` sources per
    event. `distinct` is counted over the first `sampled` of the window's `events` and
    scaled up; the `expected` (organic) events are taken to bring their usual sources,
    less `margin_sd` Poisson deviations of that number: when the extra is small next to
    the expected, the organic share's own noise must not pass for concentration.
    1.0 when there is no extra volume to explain."""
    extra = events - expected
    if extra <= 0 or sampled <= 0 or usual <= 0:
        return 1.0
    estimated = distinct * events / sampled
    organic = usual * expected
    organic = max(organic - margin_sd * math.sqrt(organic), 0.0)
    return min(max(estimated - organic, 0.0) / (usual * extra), 1.0)


class EngagementBaseline(PriorCountBaseline, gc=False):
    """One item's normal: events per window (a `PriorCountBaseline`) and distinct accounts
    per event, learned from windows not judged fabricated."""

    accounts_per_event: float = 1.0  # each event its own account, until seen otherwise
    # its latest windows as judged, if its caller keeps them (`models.recent_windows`);
    # last, so a state pickled before it existed still loads
    recent: bytes | None = None

    def learn_accounts_per_event(self, accounts: int, events: int) -> None:
        if events > 0:
            self.accounts_per_event += self.alpha * (accounts / events - self.accounts_per_event)
