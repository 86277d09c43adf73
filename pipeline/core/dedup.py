"""Drop redelivered events: an `event_id` seen within the horizon is not counted again.

Ids live in two generations of sets. When the watermark has moved a horizon past the
current generation's start (or it holds half of `max_ids`), the older generation is
dropped and the current one becomes the older. So an id is remembered for at least one
horizon of event time, memory is bounded by two horizons of ids and never exceeds
`max_ids`, and the per-event cost is two set lookups and one insert.

Each generation also notes the first input position that went into it, so a new owner
of an input partition (the distributed runtime) knows from where to read the input again
to remember what the old owner remembered.
"""

from __future__ import annotations

from pipeline.contract.events import NO_TIME


class Deduplicator:
    __slots__ = (
        "current",
        "current_from",
        "generation_start",
        "horizon_ms",
        "max_ids",
        "previous",
        "previous_from",
    )

    def __init__(self, horizon_ms: int, max_ids: int) -> None:
        self.horizon_ms = horizon_ms
        self.max_ids = max_ids
        self.current: set[str] = set()
        self.previous: set[str] = set()
        self.generation_start = NO_TIME
        self.current_from: int | None = None  # the first input position in `current`
        self.previous_from: int | None = None

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.current or event_id in self.previous

    def first_time(self, event_id: str) -> bool:
        """True the first time an id is offered (and remembers it), False for a redelivery."""
        if event_id in self.current or event_id in self.previous:
            return False
        self.current.add(event_id)
        return True

    def note(self, position: int) -> None:
        """Ids from input `position` on are about to go in."""
        if self.current_from is None:
            self.current_from = position

    @property
    def remembered_from(self) -> int | None:
        """The first input position whose ids may still be remembered."""
        if self.previous and self.previous_from is not None:
            return self.previous_from
        return self.current_from

    def expire(self, watermark: int) -> None:
        """Rotate generations once the current one spans a horizon or fills its share."""
        if watermark <= NO_TIME // 2:
            return
        if self.generation_start == NO_TIME:
            self.generation_start = watermark
        elif (
            watermark - self.generation_start >= self.horizon_ms
            or len(self.current) >= self.max_ids // 2
        ):
            self.previous = self.current
            self.current = set()
            self.previous_from, self.current_from = self.current_from, None
            self.generation_start = watermark
