"""Records one stage hands to another: the repartition between a stage and a second stage.

A stage answers questions about its own key. A question across keys ("are the accounts of
this batch still dormant?") is asked of a second stage keyed otherwise (by account, then by
batch): the first stage's `evaluate` returns `Derived` records among its findings, each
with the key it belongs under downstream and an event time. The embedded runtime hands
them to the stages that consume their stream before those stages close windows at the
same watermark; the distributed runtime sends them through the consuming stage's topic,
partitioned by that key, with the producing stage partition's watermark (see
`pipeline.distributed.runtime`).

A record's time is the end of the window that produced it, less one millisecond: a
window closes once the watermark has passed its end, and the window that produced the
record closed at this watermark and not before, so the record is never behind a
downstream stage's windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from pipeline.contract.findings import Action, Finding

if TYPE_CHECKING:
    from pipeline.core.stage import Stage


class Derived(msgspec.Struct, tag="derived", tag_field="type", kw_only=True, gc=False):
    """One record of a derived `stream`, under `key` in the consuming stage."""

    type: ClassVar[str] = "derived"
    stream: str
    key: str
    ts: int
    event_id: str  # the same every time the producing window is closed (a crash replays it)
    data: dict[str, Any] = {}


def split_outputs(
    outputs: Iterable[Finding | Derived | Action],
) -> tuple[list[Finding], list[Derived], list[Action]]:
    """A runner's outputs as (findings, derived records, actions): detector stages find,
    hand records on, and the enforcement stage decides actions."""
    findings: list[Finding] = []
    derived: list[Derived] = []
    actions: list[Action] = []
    for out in outputs:
        kind = out.__class__
        if kind is Derived:
            derived.append(out)  # type: ignore[arg-type]
        elif kind is Action:
            actions.append(out)  # type: ignore[arg-type]
        else:
            findings.append(out)  # type: ignore[arg-type]
    return findings, derived, actions


def check_stream_order(stages: list[Stage]) -> None:
    """Every derived stream a stage consumes is produced by a stage before it (the
    embedded runtime closes windows in this order)."""
    emitted: set[str] = set()
    for stage in stages:
        missing = stage.streams - emitted
        if missing:
            raise ValueError(
                f"{stage.detector} consumes {sorted(missing)}, which no stage before it emits"
            )
        emitted |= stage.emits
