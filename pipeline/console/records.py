"""The one record the console adds to the audit trail: an appeal decided.

The review desk (`pipeline.serve.review_api`) files appeals and reverses actions; deciding
an appeal is the console's. Upholding one leaves the measure standing and says so in the
trail; overturning one is recorded the same way and then reverses the action through the
desk, so the `revert` and its reversal record are the desk's own. One decision per appeal:
its id is a hash of the appeal's, so a repeat records nothing new.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from pipeline.contract.findings import stable_id

APPEAL_DECISION = "appeal_decision"  # its kind in the trail


class AppealDecision(msgspec.Struct, kw_only=True):
    """A person's decision on an appeal (Article 20), as the audit trail keeps it."""

    decision_id: str
    appeal_id: str
    action_id: str
    decision: Literal["uphold", "overturn"]
    reviewer: str
    note: str
    ts: int


def appeal_decision_id(appeal_id: str) -> str:
    """The id of the one decision an appeal gets."""
    return stable_id(APPEAL_DECISION, appeal_id)
