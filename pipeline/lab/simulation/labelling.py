"""Ground truth read back from the events the run actually wrote.

A scenario registers a `Plan` and tags its events with the plan's index; the label is
then computed from the surviving tagged events (after clipping to the run and removing
repeated follows), so every member a label names did act inside the label's window and
the window is exactly the span of the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

from pipeline.lab.labels import Campaign, HardNegative
from pipeline.lab.simulation.world import World

Derived = Literal["actors", "targets", "contents"]


@dataclass
class Plan:
    """What a scenario planted, before the events are known."""

    id: str
    kind: str
    subject_type: Literal["account", "content"]
    subjects: list[int] | Derived  # explicit indices, or derived from the tagged events
    members: Literal["actors", "none"] = "actors"
    article: str = ""  # campaigns only
    owners: list[int] = field(default_factory=list)
    claim: np.ndarray | None = None  # untagged events of these actors also belong to it
    params: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def campaign(self) -> bool:
        return bool(self.article)


def build_labels(
    world: World, cols: dict[str, np.ndarray]
) -> tuple[list[Campaign], list[HardNegative]]:
    """One label per plan that left events in the run."""
    campaigns: list[Campaign] = []
    negatives: list[HardNegative] = []
    account_ids, content_ids = world.accounts.ids, world.contents.ids
    for tag, plan in enumerate(world.plans):
        mask = cols["tag"] == tag
        if plan.claim is not None:
            mask |= (cols["tag"] == -1) & np.isin(cols["actor"], plan.claim)
        if not mask.any():
            continue
        ts = cols["ts"][mask]
        start, end = int(ts.min()), int(ts.max()) + 1
        actors = np.unique(cols["actor"][mask])
        members = sorted(account_ids[a] for a in actors) if plan.members == "actors" else []
        if isinstance(plan.subjects, list):
            picked = np.asarray(plan.subjects, dtype=np.int64)
        else:
            column = {"actors": "actor", "targets": "target", "contents": "content"}[plan.subjects]
            picked = np.unique(cols[column][mask])
        names = content_ids if plan.subject_type == "content" else account_ids
        subjects = sorted(names[int(i)] for i in picked)
        if plan.campaign:
            owners = sorted(account_ids[o] for o in plan.owners)
            campaigns.append(
                Campaign(
                    id=plan.id,
                    kind=plan.kind,  # type: ignore[arg-type]
                    article=plan.article,
                    subject_type=plan.subject_type,
                    subjects=subjects,
                    members=members,
                    start=start,
                    end=end,
                    owners=owners,
                )
            )
        else:
            negatives.append(
                HardNegative(
                    id=plan.id,
                    kind=plan.kind,  # type: ignore[arg-type]
                    subject_type=plan.subject_type,
                    subjects=subjects,
                    members=members,
                    start=start,
                    end=end,
                )
            )
    return campaigns, [_innocent_only(n, campaigns) for n in negatives]


def _innocent_only(negative: HardNegative, campaigns: list[Campaign]) -> HardNegative:
    """A hard negative names only innocent accounts: an account a campaign names (say a
    bought-for creator who also clicked a viral post) is dropped from it."""
    guilty: set[str] = set()
    for c in campaigns:
        guilty.update(c.members, c.owners)
        if c.subject_type == "account":
            guilty.update(c.subjects)
    members = [m for m in negative.members if m not in guilty]
    subjects = negative.subjects
    if negative.subject_type == "account":
        subjects = [s for s in subjects if s not in guilty]
    if (members, subjects) == (negative.members, negative.subjects):
        return negative
    return msgspec.structs.replace(negative, members=members, subjects=subjects)
