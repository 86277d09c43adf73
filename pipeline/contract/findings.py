"""Findings and actions (docs/contract.md §2, §3) and their deterministic ids.

An action is valid only with the parameters its measure needs, in their types: whoever
reads actions (the throttling hook, the review desk, `lockstep sink`) acts on them, so an
action that decodes is one they can act on, and a record that is not is refused with the
reason (`read_action`).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, Protocol

import msgspec
from msgspec import Meta, Struct, field

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


TimeUnit = Literal["second", "minute", "hour", "day"]  # what a throttle counts requests in

# An action's times are epoch milliseconds up to the last one a datetime holds (the end of
# 9999), so that every reader can hold them as it must: a datetime in a webhook's
# CloudEvent, float seconds in the throttle table, a BIGINT in the audit trail. Past it an
# action that decodes would crash the reader acting on it (10**400 in `expires_at` once
# stopped the throttling hook following the actions file).
LAST_MS = 253_402_300_799_999
ActionMs = Annotated[int, Meta(ge=0, le=LAST_MS)]


class Descriptor(Struct):
    """One of a throttle's descriptors: the account it holds, or an action it limits."""

    key: Literal["account_id", "action"]
    value: str


class ThrottleParams(Struct):
    """What a `throttle` needs: whom and which actions (none named: every action), and how
    many requests a unit it lets through."""

    descriptors: list[Descriptor]
    requests_per_unit: Annotated[int, Meta(ge=1)]
    unit: TimeUnit


class RevertParams(Struct):
    """What a `revert` needs: the action it lifts."""

    reverts: str


class DiscountParams(Struct):
    """What a `discount_engagement` needs: what to take off whose counts, in which window."""

    engagement: dict[str, int]
    window_start: int
    window_end: int
    from_accounts: list[str]


class DiscountEngagementParams(Struct):
    """The params of a `discount_engagement`: its discount."""

    discount: DiscountParams


# The measures whose actions carry parameters of their own, and their shapes (the other
# keys of `params`, such as the policy's rule and credit, are what the decision rested on).
MEASURE_PARAMS: dict[str, type[Struct]] = {
    "throttle": ThrottleParams,
    "revert": RevertParams,
    "discount_engagement": DiscountEngagementParams,
}


class Action(Struct, kw_only=True):
    action_id: str
    action: str
    subject_type: SubjectType
    subject_id: str
    basis: list[str]
    finding_ids: list[str]
    mode: Literal["enforce", "shadow", "review"]
    ts: ActionMs
    expires_at: ActionMs | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse params without what the measure needs, in its types: made or decoded."""
        shape = MEASURE_PARAMS.get(self.action)
        if shape is None:
            return
        try:
            msgspec.convert(self.params, shape)
        except msgspec.ValidationError as exc:
            where = str(exc).replace("`$", "`$.params")
            raise ValueError(f"bad params for a {self.action}: {where}") from None


class InvalidAction(ValueError):
    """A record that is not a valid action; the message says why, in one line."""


_decode_action = msgspec.json.Decoder(Action).decode


def read_action(line: bytes) -> Action:
    """One JSON record as an action, or `InvalidAction` with the reason it is not one."""
    try:
        return _decode_action(line)
    except msgspec.DecodeError as exc:  # not JSON, or not an action (ValidationError)
        raise InvalidAction(str(exc)) from None
    except RecursionError:
        raise InvalidAction("nested too deeply to be an action") from None


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
