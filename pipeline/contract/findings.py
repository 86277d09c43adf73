"""Findings and actions (docs/contract.md §2, §3) and their deterministic ids.

An action is valid only with the parameters its measure needs, in their types: whoever
reads actions (the throttling hook, the review desk, `lockstep sink`) acts on them, so an
action that decodes is one they can act on, and a record that is not is refused with the
reason (`read_action`). A finding read from outside (`lockstep sink`, off Kafka) is refused
the same way (`read_finding`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol, TypeVar

import msgspec
from msgspec import Meta, Struct, field

from pipeline.contract.events import MAX_DEPTH, classify, nests_too_deep

SubjectType = Literal["account", "content", "group"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


def stable_id(*parts: object) -> str:
    """A short, deterministic id: the same parts always give the same id, across runs."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


# Findings' and actions' times are epoch milliseconds up to the last one a datetime holds
# (the end of 9999), so that every reader can hold them as it must: a datetime in a
# webhook's CloudEvent, float seconds in the throttle table, a BIGINT in the audit trail. Past it a
# record that decodes would crash the reader acting on it (10**400 in `expires_at` once
# stopped the throttling hook following the actions file).
LAST_MS = 253_402_300_799_999
EpochMs = Annotated[int, Meta(ge=0, le=LAST_MS)]


class Finding(Struct, kw_only=True):
    finding_id: str
    detector: str
    article: str
    subject_type: SubjectType
    subject_id: str
    members: list[str] = field(default_factory=list)
    score: float
    severity: str
    window_start: EpochMs
    window_end: EpochMs
    ts: EpochMs
    evidence: dict[str, Any] = field(default_factory=dict)


TimeUnit = Literal["second", "minute", "hour", "day"]  # what a throttle counts requests in


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
    ts: EpochMs
    expires_at: EpochMs | None = None
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


_Record = TypeVar("_Record", Action, Finding)
QUOTE_CHARS = 200  # the most of a value a refusal quotes
# A value a message quotes, as Python's repr (and msgspec's messages) quote it.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" r'|"(?:[^"\\]|\\.)*"', re.DOTALL)


def _cut(quoted: re.Match[str]) -> str:
    """A quoted value, cut to QUOTE_CHARS: never in the middle of an escape."""
    text = quoted[0]
    if len(text) <= QUOTE_CHARS + 2:
        return text
    head = text[: QUOTE_CHARS + 1]
    if (len(head) - len(head.rstrip("\\"))) % 2:  # an escape's backslash, without its char
        head = head[:-1]
    return head + "…" + text[-1]


class InvalidRecord(ValueError):
    """A record that is not what its reader wants: the message says why, in one line, with
    any value it quotes cut to QUOTE_CHARS (a 1 MB `mode` must not make a 1 MB log line);
    `reason` is the dead-letter reason for it (docs/contract.md, Dead letters)."""

    def __init__(self, message: str, reason: str = "invalid_value") -> None:
        super().__init__(_QUOTED.sub(_cut, message))
        self.reason = reason


class InvalidAction(InvalidRecord):
    """A record that is not a valid action."""


class InvalidFinding(InvalidRecord):
    """A record that is not a valid finding."""


_decode_action = msgspec.json.Decoder(Action).decode
_decode_finding = msgspec.json.Decoder(Finding).decode


def read_action(raw: bytes) -> Action:
    """One JSON record as an action, or `InvalidAction` with the reason it is not one."""
    return _read(_decode_action, raw, InvalidAction, "an action")


def read_finding(raw: bytes) -> Finding:
    """One JSON record as a finding, or `InvalidFinding` with the reason it is not one."""
    return _read(_decode_finding, raw, InvalidFinding, "a finding")


def _read(
    decode: Callable[[bytes], _Record], raw: bytes, refusal: type[InvalidRecord], what: str
) -> _Record:
    """`raw` decoded, or `refusal` saying why not. Depth is checked before decoding, as the
    gate checks events: the decoder follows nesting on the stack, so how deep it gets
    before a RecursionError depends on how deep the stack already is."""
    if nests_too_deep(raw):
        raise refusal(f"nested too deeply to be {what} (over {MAX_DEPTH} levels)", "too_deep")
    try:
        return decode(raw)
    except msgspec.DecodeError as exc:  # not JSON, or not one (ValidationError)
        raise refusal(str(exc), classify(exc)) from None
    except RecursionError:  # the check's bound, on a stack already deep
        raise refusal(f"nested too deeply to be {what}", "too_deep") from None


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
