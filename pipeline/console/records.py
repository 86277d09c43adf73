"""A finding's line as the console's index takes it in: decoded as far as the queue needs
(all but its evidence, of which only the explanation and the account it was about), and
refused exactly where `read_finding` refuses it.

The evidence is most of a finding's bytes (a detector's series, its members' facts, a
group's picture): decoding it whole for every finding at start-up took most of the time,
and made objects only to drop them. Here msgspec skips it in C. Skipping checks that the
evidence is JSON, but not two things decoding it does: that its strings are UTF-8 and that
its numbers fit in a float. A line that might fail either (one that is not ASCII, or holds
a number with 20 digits or more before its point or a positive exponent of three digits or
more) is decoded whole, so the index refuses what `read_finding` does, with its reason.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import UNSET, Struct, field

from pipeline.console.cases import FindingRef, finding_ref, ref_of
from pipeline.contract.events import nests_too_deep
from pipeline.contract.findings import EpochMs, SubjectType, read_finding

# Digits to 0 and what may end a number to a comma: a number too large for a float is then
# a run of 20 zeros, or an exponent of three digits or more before a comma.
_NUMBERS = bytes.maketrans(b"123456789E}] \t\r\n", b"000000000e,,,,,,")
_LONG_MANTISSA = b"0" * 20
_LARGE_EXPONENT = re.compile(rb"e\+?000+,")


class _Evidence(Struct):
    """What the queue takes from a finding's evidence (the rest is skipped)."""

    explanation: Any = UNSET
    target: Any = None
    owner: Any = None


class _Head(Struct, kw_only=True):
    """`Finding`'s fields, with their types and defaults, the evidence skipped."""

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
    evidence: _Evidence = field(default_factory=_Evidence)


_decode_head = msgspec.json.Decoder(_Head).decode


def read_finding_ref(line: bytes, offset: int) -> FindingRef:
    """The finding of `line` (at `offset` of its file) as the index keeps it, or
    `InvalidFinding` where `read_finding` would raise it."""
    if nests_too_deep(line) or not line.isascii() or _may_overflow(line):
        return finding_ref(read_finding(line), offset, len(line))
    try:
        head = _decode_head(line)
    except (msgspec.DecodeError, RecursionError):  # refused whole too: said as it says it
        return finding_ref(read_finding(line), offset, len(line))
    evidence = head.evidence
    target = evidence.target or evidence.owner or ""
    explanation = "" if evidence.explanation is UNSET else str(evidence.explanation)
    return ref_of(head, explanation, target if isinstance(target, str) else "", offset,
                  len(line))  # fmt: skip


def _may_overflow(line: bytes) -> bool:
    """Whether a number of `line` might not fit in a float (in a string, a false alarm
    costs only a whole decode)."""
    numbers = line.translate(_NUMBERS)
    return _LONG_MANTISSA in numbers or _LARGE_EXPONENT.search(numbers) is not None
