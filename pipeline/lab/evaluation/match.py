"""Which findings hit a campaign and which touch a hard negative (the rules are spelled out
in `pipeline.lab.evaluation.score`). Kept apart from the metrics so the rules read on one screen;
the id sets are built once per campaign, as a world may hold thousands of members."""

from __future__ import annotations

from pipeline.lab.evaluation.inputs import ScoredFinding
from pipeline.lab.labels import Campaign, HardNegative, Labels

HOUR_MS = 3_600_000
AFTER_END_MS = HOUR_MS  # a finding may still be about a campaign this long after it ends


class CampaignMatch:
    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.subjects = frozenset(campaign.subjects)
        self.accounts = frozenset(campaign.owners) | frozenset(campaign.members)
        self.members = frozenset(campaign.members)

    def hits(self, f: ScoredFinding) -> bool:
        return self.in_time(f) and self.names(f)

    def names(self, f: ScoredFinding) -> bool:
        """The finding is about this campaign: its beneficiary, the owner, or its workers."""
        c = self.campaign
        if f.subject_type == c.subject_type and f.subject_id in self.subjects:
            return True
        if f.subject_type == "account" and f.subject_id in self.accounts:
            return True
        if not f.members:
            return False
        inside = len(self.members.intersection(f.members))
        return inside > 0 and 2 * inside >= len(set(f.members))

    def in_time(self, f: ScoredFinding) -> bool:
        """Not before the campaign began, and evidence overlapping it (plus an hour after)."""
        c = self.campaign
        return (
            f.ts >= c.start and f.window_start <= c.end + AFTER_END_MS and f.window_end >= c.start
        )

    def members_named(self, f: ScoredFinding) -> set[str]:
        """The campaign's members a finding names, in its members list or as its subject."""
        named = self.members.intersection(f.members)
        if f.subject_type == "account" and f.subject_id in self.members:
            named |= {f.subject_id}
        return set(named)


def guilty_ids(labels: Labels) -> set[str]:
    """Every id the labels put in a campaign: fake accounts and the content they inflate."""
    return labels.fake_accounts() | {s for c in labels.campaigns for s in c.subjects}


class NegativeMatch:
    def __init__(self, negative: HardNegative, guilty: set[str]) -> None:
        """`guilty`: ids the labels put in a campaign, never counted against a detector even
        should a world also list them in a hard negative."""
        self.negative = negative
        self.subjects = frozenset(negative.subjects) - guilty
        self.members = frozenset(negative.members) - guilty
        self.innocent = self.subjects | self.members

    def touches(self, f: ScoredFinding) -> bool:
        """The finding is about this negative, whenever it was emitted (flagging organic
        behaviour is wrong at any time): its subject is one of the negative's innocent
        subjects or accounts, or at least half of its members are. A finding that names one
        innocent among many others is not about the negative; that account still counts
        against account precision."""
        n = self.negative
        if f.subject_type == n.subject_type and f.subject_id in self.subjects:
            return True
        if f.subject_type == "account" and f.subject_id in self.members:
            return True
        if not f.members:
            return False
        inside = len(self.innocent.intersection(f.members))
        return inside > 0 and 2 * inside >= len(set(f.members))

    def accounts(self) -> frozenset[str]:
        """Its innocent accounts: members, and subjects when those are accounts."""
        if self.negative.subject_type == "account":
            return self.innocent
        return self.members
