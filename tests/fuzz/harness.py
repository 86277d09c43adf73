"""What the fuzz tests share: how long they run, and the corpus each replays first.

In CI a property runs a small fixed budget of examples, derandomized (the same examples on
every run, so a red build is the code's doing, not the draw's) and without a deadline (the
machine is shared: a slow example is not a bug). By hand, LOCKSTEP_FUZZ_EXAMPLES=N runs N
random examples per property and keeps what fails in .hypothesis/ to try first next time
(tests/fuzz/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

CORPUS = Path(__file__).parent / "corpus"
LONG_EXAMPLES = os.environ.get("LOCKSTEP_FUZZ_EXAMPLES")
_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large]


def budget(examples: int) -> settings:
    """A property's settings: `examples` derandomized examples, or LOCKSTEP_FUZZ_EXAMPLES
    random ones in a session by hand."""
    if LONG_EXAMPLES:
        return settings(
            max_examples=int(LONG_EXAMPLES),
            deadline=None,
            suppress_health_check=_SLOW_IS_FINE,
            print_blob=True,
        )
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=_SLOW_IS_FINE,
    )


def corpus(target: str) -> list[Any]:
    """Every input kept for `target` (one file each, its bytes exactly), as pytest params
    named by their files: each input that once broke a reader stays a test."""
    paths = sorted(p for p in (CORPUS / target).iterdir() if p.is_file())
    assert paths, f"no corpus in {CORPUS / target}"
    return [pytest.param(path.read_bytes(), id=path.name) for path in paths]
