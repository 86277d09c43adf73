"""The event log the simulation fills: columns of small integers, not dicts.

A six-hour world holds about a million events; as numpy columns (indices into the world's
account, content, text, address and device tables) it takes tens of megabytes and sorts
in milliseconds. Events become JSON only when written.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pipeline.contract.events import EVENT_TYPES

FOLLOW, UNFOLLOW, CLICK, REPOST, COMMENT, REGISTER, LOGIN = (
    EVENT_TYPES.index(k)
    for k in ("follow", "unfollow", "click", "repost", "comment", "register", "login")
)
ORIGINS: tuple[str, ...] = ("user", "recommendation", "onboarding_default", "api", "import")
USER, RECOMMENDATION, ONBOARDING, API, IMPORT = range(len(ORIGINS))
NONE = -1  # an absent field (no target, no text, no origin, untagged)

_DTYPES: dict[str, type] = {
    "ts": np.int64,
    "kind": np.int8,
    "actor": np.int64,
    "target": np.int64,  # account; for click/repost/comment it is filled from the content
    "content": np.int64,
    "text": np.int64,
    "origin": np.int8,
    "consent": np.int8,  # -1 absent, 0 false, 1 true
    "tag": np.int16,  # index of the campaign or hard negative the event belongs to
}
COLUMNS: tuple[str, ...] = tuple(_DTYPES)

Column = npt.NDArray[np.int64] | int


class EventLog:
    """Columns appended in batches; `columns()` concatenates them once at the end. Also
    the accounts whose events come, from some time on, from another address or device
    than their own slots (`switch`: a new phone, a journey, a new owner)."""

    def __init__(self) -> None:
        self._parts: list[dict[str, np.ndarray]] = []
        self._switches: list[tuple[np.ndarray, ...]] = []

    def switch(
        self,
        actors: npt.ArrayLike,
        since: npt.ArrayLike,
        *,
        ip: Column = NONE,
        device: Column = NONE,
    ) -> None:
        """From `since` on, each actor's events come from `ip` and `device` (address and
        device table indices; NONE: still drawn from its own slots). One switch per
        account: a later one for the same account replaces it."""
        who = np.asarray(actors, dtype=np.int64).ravel()
        columns = [
            np.broadcast_to(np.asarray(v, dtype=np.int64), who.shape).copy()
            for v in (since, ip, device)
        ]
        self._switches.append((who, *columns))

    def switches(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(actor, since, ip, device), one row per switched account, sorted by actor."""
        if not self._switches:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty, empty
        actor, since, ip, device = (np.concatenate(c) for c in zip(*self._switches, strict=True))
        last = actor.size - 1 - np.unique(actor[::-1], return_index=True)[1]  # latest wins
        return actor[last], since[last], ip[last], device[last]

    def add(
        self,
        ts: npt.ArrayLike,
        kind: int,
        actor: Column,
        *,
        target: Column = NONE,
        content: Column = NONE,
        text: Column = NONE,
        origin: Column = NONE,
        consent: Column = NONE,
        tag: int = NONE,
    ) -> None:
        times = np.asarray(ts, dtype=np.int64).ravel()
        n = times.size
        if n == 0:
            return
        given = {
            "kind": kind,
            "actor": actor,
            "target": target,
            "content": content,
            "text": text,
            "origin": origin,
            "consent": consent,
            "tag": tag,
        }
        part = {"ts": times}
        for name, value in given.items():
            column = np.asarray(value, dtype=_DTYPES[name])
            if column.ndim == 0:
                column = np.full(n, column, dtype=_DTYPES[name])
            elif column.size != n:
                raise ValueError(f"column {name} has {column.size} values for {n} events")
            part[name] = column
        self._parts.append(part)

    def columns(self) -> dict[str, np.ndarray]:
        if not self._parts:
            return {name: np.empty(0, dtype=dt) for name, dt in _DTYPES.items()}
        return {name: np.concatenate([p[name] for p in self._parts]) for name in COLUMNS}
