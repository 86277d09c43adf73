"""Scoring findings against the ground truth of a simulated world (`lockstep evaluate`).

Matching (pipeline/lab/evaluation/match.py):

* A finding HITS a campaign when it names the campaign and is in time.
  - It names it when (a) its subject is one of the campaign's subjects (same subject type),
    or an account that owns a subject content item, or an account among the campaign's
    members; or (b) its `members` overlap the campaign's members with at least half of the
    finding's (distinct) members inside the campaign.
  - It is in time when `ts >= campaign.start` (it cannot precede what it detects) and its
    window `[window_start, window_end]` overlaps `[start, end + 1 hour]`.
* A finding TOUCHES a hard negative when its subject is one of the negative's subjects (same
  subject type), or an account among its members, or at least half of its `members` are the
  negative's members or subjects, at any time (the same rule as a campaign hit). Ids the
  labels also list in a campaign are not counted, should a world put one account in both.

Metrics:

* Per campaign: detected (any hit); member recall = |members named by hitting findings, in
  their `members` or as their account subject| / |members|, null for a campaign without
  members (and left out of the mean); detection latency = min over hits of
  `finding.ts - campaign.start`, in seconds of event time; the detectors that hit it.
* Accounts: flagged = the subject of every account finding plus every member of every
  finding; fake = `Labels.fake_accounts()`. Precision = |flagged ∩ fake| / |flagged|, null
  when nothing is flagged; recall = |flagged ∩ fake| / |fake|, null when nothing is fake.
  Empty findings thus score 0 detected, member recall 0 and account recall 0.
* Per hard negative and per kind: the findings that touch it (false positives) and its
  innocent accounts that were flagged; a finding touching several negatives counts once in
  its kind's row and once in the summary.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import msgspec

from pipeline.lab.evaluation.inputs import ScoredFinding, as_scored
from pipeline.lab.evaluation.match import CampaignMatch, NegativeMatch, guilty_ids
from pipeline.lab.labels import CAMPAIGN_KINDS, NEGATIVE_KINDS, Campaign, HardNegative, Labels


class CampaignScore(msgspec.Struct, frozen=True):
    id: str
    kind: str
    article: str
    subject_type: str
    subjects: list[str]
    members: int
    detected: bool
    findings: int  # hitting findings
    member_recall: float | None
    latency_s: float | None
    detectors: list[str]


class NegativeScore(msgspec.Struct, frozen=True):
    id: str
    kind: str
    subject_type: str
    subjects: list[str]
    findings: int  # touching findings: false positives
    accounts_flagged: int
    detectors: list[str]


class CampaignKindScore(msgspec.Struct, frozen=True):
    kind: str
    campaigns: int
    detected: int
    mean_member_recall: float | None
    median_latency_s: float | None


class NegativeKindScore(msgspec.Struct, frozen=True):
    kind: str
    negatives: int
    findings: int
    accounts_flagged: int


class Summary(msgspec.Struct, frozen=True):
    findings: int
    campaigns: int
    detected: int
    detection_rate: float | None
    mean_member_recall: float | None
    median_latency_s: float | None
    max_latency_s: float | None
    accounts_flagged: int
    fake_accounts: int
    fake_accounts_flagged: int
    account_precision: float | None
    account_recall: float | None
    hard_negative_findings: int
    hard_negative_accounts_flagged: int


class Report(msgspec.Struct, frozen=True):
    seed: int
    summary: Summary
    campaign_kinds: list[CampaignKindScore]
    negative_kinds: list[NegativeKindScore]
    campaigns: list[CampaignScore]
    hard_negatives: list[NegativeScore]
    # per detector, the accounts it flagged that no campaign made (where precision goes)
    innocents_by_detector: dict[str, int] = {}

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"


def evaluate(labels: Labels, findings: list[dict[str, Any]]) -> Report:
    """Score `findings` (dicts as in findings.jsonl) against `labels`."""
    scored = as_scored(findings)
    campaigns = [_score_campaign(c, scored) for c in labels.campaigns]
    fake = labels.fake_accounts()
    flagged = flagged_accounts(scored)
    touched = _touched(labels, scored, flagged, guilty_ids(labels))
    latencies = [c.latency_s for c in campaigns if c.latency_s is not None]
    detected = sum(c.detected for c in campaigns)
    summary = Summary(
        findings=len(scored),
        campaigns=len(campaigns),
        detected=detected,
        detection_rate=_ratio(detected, len(campaigns)),
        mean_member_recall=_mean([c.member_recall for c in campaigns]),
        median_latency_s=statistics.median(latencies) if latencies else None,
        max_latency_s=max(latencies, default=None),
        accounts_flagged=len(flagged),
        fake_accounts=len(fake),
        fake_accounts_flagged=len(flagged & fake),
        account_precision=_ratio(len(flagged & fake), len(flagged)),
        account_recall=_ratio(len(flagged & fake), len(fake)),
        hard_negative_findings=len(set().union(*(t.findings for t in touched))),
        hard_negative_accounts_flagged=len(set().union(*(t.accounts for t in touched))),
    )
    return Report(
        seed=labels.seed,
        summary=summary,
        campaign_kinds=_campaign_kinds(campaigns),
        negative_kinds=_negative_kinds(touched),
        campaigns=campaigns,
        hard_negatives=[_score_negative(t, scored) for t in touched],
        innocents_by_detector=_innocents_by_detector(scored, fake),
    )


def _innocents_by_detector(findings: list[ScoredFinding], fake: set[str]) -> dict[str, int]:
    """How many accounts outside every campaign each detector flagged."""
    by: dict[str, set[str]] = {}
    for f in findings:
        flagged = set(f.members)
        if f.subject_type == "account":
            flagged.add(f.subject_id)
        innocent = flagged - fake
        if innocent:
            by.setdefault(f.detector, set()).update(innocent)
    return {d: len(accounts) for d, accounts in sorted(by.items())}


def flagged_accounts(findings: list[ScoredFinding]) -> set[str]:
    flagged: set[str] = set()
    for f in findings:
        if f.subject_type == "account":
            flagged.add(f.subject_id)
        flagged.update(f.members)
    return flagged


def _score_campaign(c: Campaign, findings: list[ScoredFinding]) -> CampaignScore:
    match = CampaignMatch(c)
    hitting = [f for f in findings if match.hits(f)]
    named: set[str] = set()
    for f in hitting:
        named |= match.members_named(f)
    return CampaignScore(
        id=c.id,
        kind=c.kind,
        article=c.article,
        subject_type=c.subject_type,
        subjects=list(c.subjects),
        members=len(match.members),
        detected=bool(hitting),
        findings=len(hitting),
        member_recall=_ratio(len(named), len(match.members)),
        latency_s=min(((f.ts - c.start) / 1000 for f in hitting), default=None),
        detectors=sorted({f.detector for f in hitting}),
    )


@dataclass
class _Touched:
    """What one hard negative drew: the indexes of touching findings, innocents flagged."""

    negative: HardNegative
    findings: set[int]
    accounts: set[str]


def _touched(
    labels: Labels, findings: list[ScoredFinding], flagged: set[str], guilty: set[str]
) -> list[_Touched]:
    touched = []
    for n in labels.hard_negatives:
        match = NegativeMatch(n, guilty)
        hit = {i for i, f in enumerate(findings) if match.touches(f)}
        touched.append(_Touched(n, hit, set(match.accounts() & flagged)))
    return touched


def _score_negative(t: _Touched, findings: list[ScoredFinding]) -> NegativeScore:
    n = t.negative
    return NegativeScore(
        id=n.id,
        kind=n.kind,
        subject_type=n.subject_type,
        subjects=list(n.subjects),
        findings=len(t.findings),
        accounts_flagged=len(t.accounts),
        detectors=sorted({findings[i].detector for i in t.findings}),
    )


def _campaign_kinds(campaigns: list[CampaignScore]) -> list[CampaignKindScore]:
    rows = []
    for kind in CAMPAIGN_KINDS:
        group = [c for c in campaigns if c.kind == kind]
        if not group:
            continue
        latencies = [c.latency_s for c in group if c.latency_s is not None]
        rows.append(
            CampaignKindScore(
                kind=kind,
                campaigns=len(group),
                detected=sum(c.detected for c in group),
                mean_member_recall=_mean([c.member_recall for c in group]),
                median_latency_s=statistics.median(latencies) if latencies else None,
            )
        )
    return rows


def _negative_kinds(touched: list[_Touched]) -> list[NegativeKindScore]:
    """Per kind, a finding touching two negatives of that kind counts once."""
    rows = []
    for kind in NEGATIVE_KINDS:
        group = [t for t in touched if t.negative.kind == kind]
        if not group:
            continue
        rows.append(
            NegativeKindScore(
                kind=kind,
                negatives=len(group),
                findings=len(set().union(*(t.findings for t in group))),
                accounts_flagged=len(set().union(*(t.accounts for t in group))),
            )
        )
    return rows


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
