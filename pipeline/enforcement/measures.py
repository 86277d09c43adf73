"""The Article 19 measures, each defined once, and the time units a measure is counted in.

A measure is what an action does to its subject: the policy's ladders may name only the
measures here that a policy issues (in this order: the ladder's rungs from the mildest,
then the measures beside it), the throttling hook blocks an account under the measures
that block, and the review desk lists the measures that await a person and lifts a
measure with `revert` (Article 20). A `Step` is a measure as a policy's ladder orders
it: its parameters are `Step`'s fields, and each measure names those it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from models.credit import DAY
from pipeline.contract.findings import TimeUnit
from pipeline.core.numbers import PositiveInt

# The seconds of each of the contract's time units (tests/test_policy.py: the same names).
UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": DAY // 1000}


@dataclass(frozen=True)
class Measure:
    """One measure: what the regulation calls it and how the pipeline applies it."""

    name: str
    wording: str  # what Article 19 (Article 20, for revert) calls it, in short
    blocks: bool = False  # the throttling hook refuses the account every action under it
    time_bound: bool = False  # a policy may give it `for_s`: it expires that long after
    params: tuple[str, ...] = ()  # the `Step` fields a policy must give it
    by_policy: bool = True  # a policy's ladder may name it (revert: the review desk issues it)
    awaits_review: bool = False  # a person decides on it: the review desk lists it pending


MEASURES = {
    m.name: m
    for m in (
        Measure("warn", "warning and reminding"),
        Measure(
            "throttle",
            "restricting account functions: so many requests a unit",
            time_bound=True,
            params=("requests_per_unit", "unit", "limits"),
        ),
        Measure(
            "restrict_functions", "restricting account functions", blocks=True, time_bound=True
        ),
        Measure("suspend_updates", "suspending information updates", blocks=True, time_bound=True),
        Measure("stop_ads", "stopping advertising", time_bound=True),
        Measure("close_account", "closing and cancelling the account", blocks=True),
        Measure("blacklist", "listing on a blacklist", blocks=True, time_bound=True),
        Measure("ban_reregistration", "prohibiting re-registration", blocks=True, time_bound=True),
        Measure("discount_engagement", "handling the violation: fabricated traffic uncounted"),
        Measure("report_regulator", "reporting to the cyberspace administration"),
        Measure("human_review", "supervision: a person reviews the finding", awaits_review=True),
        Measure("revert", "Article 20: a measure lifted on appeal", by_policy=False),
    )
}
POLICY_MEASURES = tuple(name for name, m in MEASURES.items() if m.by_policy)  # in order
BLOCKING = frozenset(name for name, m in MEASURES.items() if m.blocks)
AWAITING_REVIEW = frozenset(name for name, m in MEASURES.items() if m.awaits_review)
PARAMETERS = tuple(dict.fromkeys(p for m in MEASURES.values() for p in m.params))


class Step(msgspec.Struct, forbid_unknown_fields=True):
    """A measure as a policy's ladder names it: which, for how long, with its parameters."""

    action: str
    for_s: PositiveInt | None = None  # time-bound: expires this long after it is issued
    requests_per_unit: PositiveInt | None = None  # throttle: allowed requests
    unit: TimeUnit | None = None
    limits: list[str] = []  # throttle: the account's actions limited (follow, comment, ...)
