"""Ground truth of a simulated world: what `lockstep simulate` planted, and what
`lockstep evaluate` scores findings against.

A campaign is fake engagement with a beneficiary: its `subjects` are the accounts or
content items that gain (the account that bought followers, the content a click farm
inflates), its `members` the accounts that did the work (bots, bought accounts, the
ring). A hard negative is organic behaviour that looks like a campaign (a viral spike,
many people behind one carrier NAT address) and must not be flagged: its `subjects` and
`members` are the accounts and content a detector could wrongly name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

CampaignKind = Literal[
    "follower_burst",  # Art. 12: freshly created accounts follow one account within minutes
    "slow_drip",  # Art. 12: bought aged accounts follow at a steady extra rate for hours
    "click_farm",  # Art. 12: few devices/addresses click one content item thousands of times
    "repost_ring",  # Art. 18(4): the same accounts repost each new post within minutes
    "copy_paste",  # Art. 18(4): near-identical comments by many accounts across many items
    "churn",  # Art. 12 / 18(4): follow many accounts and unfollow them again within minutes
    "forced_follow",  # Art. 12: follows without informed consent (onboarding default)
    "batch_registration",  # Art. 18(8): registrations from one network/devices, then dormant
    "account_handover",  # Art. 11 (18(8) when sold): aged accounts taken over, then promoting
]
CAMPAIGN_KINDS: tuple[str, ...] = CampaignKind.__args__  # type: ignore[attr-defined]

NegativeKind = Literal[
    "viral_spike",  # an account gains 10-80x its usual followers from real, diverse users
    "carrier_nat",  # many real users behind one carrier NAT address
    "common_phrase",  # "+1", "哈哈哈", "congrats!" posted by many different people
    "new_users_follow_popular",  # new real users following popular accounts
    "new_phone",  # users who move to a new phone: new device, same networks and habits
    "travel",  # users on a journey: new networks, same device and habits
]
NEGATIVE_KINDS: tuple[str, ...] = NegativeKind.__args__  # type: ignore[attr-defined]

SubjectType = Literal["account", "content"]


class Campaign(msgspec.Struct, frozen=True):
    id: str
    kind: CampaignKind
    article: str  # "11", "12", "18(4)", "18(8)"
    subject_type: SubjectType
    subjects: list[str]  # beneficiaries: account ids or content ids
    members: list[str]  # the accounts that did the work
    start: int  # event time, epoch ms
    end: int
    owners: list[str] = []  # for content subjects: the accounts owning that content


class HardNegative(msgspec.Struct, frozen=True):
    id: str
    kind: NegativeKind
    subject_type: SubjectType
    subjects: list[str]
    members: list[str]
    start: int
    end: int


class Labels(msgspec.Struct, frozen=True):
    seed: int
    start: int  # the simulated span, epoch ms
    end: int
    scenarios: list[str]
    campaigns: list[Campaign]
    hard_negatives: list[HardNegative]
    params: dict[str, float | int | str] = {}  # the knobs the world was drawn with

    def fake_accounts(self) -> set[str]:
        """Accounts a perfect detector names: every member, and every account subject
        (or owner of a subject content item) that bought the engagement."""
        fake: set[str] = set()
        for c in self.campaigns:
            fake.update(c.members)
            if c.subject_type == "account":
                fake.update(c.subjects)
            fake.update(c.owners)
        return fake


def write_labels(path: Path, labels: Labels) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(labels), indent=2))


def read_labels(path: Path) -> Labels:
    """Labels from a file; a file that is not labels raises ValueError with the reason."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=Labels)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"{path}: not a labels file: {exc}") from exc
