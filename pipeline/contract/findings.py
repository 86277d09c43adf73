"""Findings and actions (docs/contract.md §2, §3) and their deterministic ids."""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Protocol

from msgspec import Struct, field

SubjectType = Literal["account", "content", "group"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


def stable_id(*parts: object) -> str:
    """A short, deterministic id: the same parts always give the same id, across runs."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


class Finding(Struct, kw_only=True):
    finding_id: str
    detector: str
    article: str
    subject_type: SubjectType
    subject_id: str
    members: list[str] = field(default_factory=list)
    score: float
    severity: str
    window_start: int
    window_end: int
    ts: int
    evidence: dict[str, Any] = field(default_factory=dict)


class Action(Struct, kw_only=True):
    action_id: str
    action: str
    subject_type: SubjectType
    subject_id: str
    basis: list[str]
    finding_ids: list[str]
    mode: Literal["enforce", "shadow", "review"]
    ts: int
    expires_at: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


class SeverityBands(Protocol):
    """The least score of each severity (the settings' `severity:` block)."""

    low: float
    medium: float
    high: float
    critical: float


def severity_of(score: float, cuts: SeverityBands) -> str | None:
    """The severity band a score falls in, or None below the lowest band."""
    if score >= cuts.critical:
        return "critical"
    if score >= cuts.high:
        return "high"
    if score >= cuts.medium:
        return "medium"
    if score >= cuts.low:
        return "low"
    return None


def fabricated(**counts: float) -> dict[str, int]:
    """Evidence for Article 12 findings: how many of each kind of engagement (follow,
    click, repost, comment) in the window look fabricated, the count above what the
    subject's own normal explains. `discount_engagement` actions carry it, so a platform
    knows what to take off the public counts. Kinds in name order: a window's kinds come
    in the order its events did, which is not the same from one process to the next."""
    return {kind: round(n) for kind, n in sorted(counts.items()) if n >= 0.5}


def make_finding(
    *,
    detector: str,
    article: str,
    subject_type: SubjectType,
    subject_id: str,
    window_start: int,
    window_end: int,
    score: float,
    severity: str,
    members: list[str],
    evidence: dict[str, Any],
) -> Finding:
    """A finding whose id depends only on what was found, where and when (not on run order).

    Its `ts` is the watermark that closed the window, which is the window's end.
    """
    return Finding(
        finding_id=stable_id(detector, subject_type, subject_id, window_start, window_end),
        detector=detector,
        article=article,
        subject_type=subject_type,
        subject_id=subject_id,
        members=members,
        score=round(score, 4),
        severity=severity,
        window_start=window_start,
        window_end=window_end,
        ts=window_end,
        evidence=evidence,
    )
