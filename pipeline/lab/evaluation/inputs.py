"""The findings the evaluator reads: only the fields scoring uses, checked up front so a
broken file fails with its name and line instead of a KeyError deep inside the scoring."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec


class ScoredFinding(msgspec.Struct, frozen=True):
    """The part of a finding (docs/contract.md §2) that scoring and plotting look at."""

    detector: str
    subject_type: str
    subject_id: str
    ts: int
    window_start: int
    window_end: int
    members: list[str] = []


def as_scored(findings: Iterable[dict[str, Any]]) -> list[ScoredFinding]:
    """Findings as typed records; one without the fields scoring needs raises ValueError."""
    scored = []
    for index, finding in enumerate(findings):
        try:
            scored.append(msgspec.convert(finding, type=ScoredFinding))
        except msgspec.ValidationError as exc:
            raise ValueError(f"finding {index}: {exc}") from exc
    return scored


def read_findings(path: str | Path) -> list[dict[str, Any]]:
    """Every finding of a JSONL file (or .jsonl.gz); blank lines are skipped.

    A line that is not a JSON object with the fields scoring needs raises ValueError naming
    the file and the line number; an unreadable file raises OSError.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    findings: list[dict[str, Any]] = []
    with opener(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                finding = msgspec.json.decode(line)
                if not isinstance(finding, dict):
                    raise ValueError(f"expected a JSON object, got {type(finding).__name__}")
                msgspec.convert(finding, type=ScoredFinding)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a finding: {exc}") from exc
            findings.append(finding)
    return findings
