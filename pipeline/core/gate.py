"""The gate every input passes: decode, validate, drop redeliveries, hold back late events.

One gate serves one ordered input: the whole stream in the embedded runtime, one input
partition in the distributed one. It owns that input's de-duplication memory and its
watermark (the latest event time minus the allowed lateness), and turns every rejected
input into a dead letter.

The latest event time follows the stream, not its outliers. An event up to
`event_time.max_jump_ms` ahead of it moves it at once, as in any bounded-disorder
watermark; an event further ahead (a producer's wrong clock, a bit-flipped `ts`) is
admitted into its own window but moves nothing until `jump_confirmations` events in a
row have landed that far ahead: a real jump (logs of two days with a gap) is followed by
more of the same, an outlier by the stream it came from. A quantile of recent event
times would resist outliers too, but it lags every normal stream and so changes which
windows hold which events; dead-lettering far events would lose the first events of
every real jump. Only a jump waits, and only for a few events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter

import msgspec
import numpy as np

from pipeline.contract.deadletter import DeadLetter, dead_letter, input_size
from pipeline.contract.events import (
    EVENT_TYPES,
    MAX_DEPTH,
    MIN_TOO_DEEP_BYTES,
    NO_TIME,
    Event,
    classify,
    decoder,
    nests_too_deep,
    to_epoch_ms,
)
from pipeline.core.dedup import Deduplicator
from pipeline.core.settings import Settings

_ts = attrgetter("ts")
_id = attrgetter("event_id")


@dataclass
class Admitted:
    """What one batch yielded: on-time first deliveries by type, and what was turned away."""

    by_type: dict[str, list[Event]]
    dead_letters: list[DeadLetter]
    duplicates: int
    blank: int
    span: tuple[int, int] | None = None  # (earliest, latest) event time, when known
    # With input positions (Kafka offsets): each admitted event's offset, aligned with
    # `by_type`, so a stage can tell a redelivery after a crash from a new event.
    offsets: dict[str, list[int]] | None = None
    source: str = ""  # the input partition, in the distributed runtime

    @property
    def events(self) -> int:
        return sum(len(v) for v in self.by_type.values())


class GateMark(msgspec.Struct, array_like=True):
    """Where a gate stands: the first input position whose ids it may remember, its
    latest event time, and the events waiting to confirm a jump."""

    remembered_from: int | None
    max_ts: int
    ahead: list[int]


class Gate:
    def __init__(self, settings: Settings, wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.dedup = Deduplicator(settings.dedup.horizon_ms, settings.dedup.max_ids)
        self.max_ts = NO_TIME  # the latest event time, the one the watermark follows
        # event times of the events in a row that landed a jump ahead of `max_ts`
        self._ahead: list[int] = []
        self._wall_clock = wall_clock

    @property
    def watermark(self) -> int:
        if self.max_ts == NO_TIME:
            return NO_TIME
        return self.max_ts - self.settings.event_time.allowed_lateness_ms

    @property
    def settled_ts(self) -> int:
        """The latest event time the stream has reached, for when the input ends: windows
        past it hold only events still waiting for confirmation, outliers the stream
        never caught up with, and are left unjudged. A stream shorter than the
        confirmations has no other time: its run counts."""
        if self.max_ts == NO_TIME and self._ahead:
            return max(self._ahead)
        return self.max_ts

    def mark(self) -> GateMark:
        """What a new owner of this input needs to go on where this gate stands."""
        return GateMark(self.dedup.remembered_from, self.max_ts, list(self._ahead))

    def resume(self, mark: GateMark) -> None:
        """Go on from `mark`, once the input from its `remembered_from` position up to
        where it was taken has been admitted again (its ids are remembered again; the
        latest event time and a jump waiting for confirmation are the mark's)."""
        self.max_ts = mark.max_ts
        self._ahead[:] = mark.ahead

    def _land_ahead(self, ts: int) -> None:
        """Count an event a jump ahead of the latest event time (any event, before there is
        one). Once `jump_confirmations` have landed in a row, the latest event time moves
        to the k-th largest of them, so fewer outliers than that among them cannot drag
        it, and on through those of them within a jump of each other."""
        cfg = self.settings.event_time
        run = self._ahead
        run.append(ts)
        if len(run) < cfg.jump_confirmations:
            return
        run.sort()  # a run holds k times when it is confirmed: its first is the k-th largest
        latest = run[0]
        for later in run[1:]:
            if later > latest + cfg.max_jump_ms:
                break
            latest = later
        self.max_ts = latest
        run[:] = [t for t in run if t > latest + cfg.max_jump_ms]

    def admit(
        self,
        raws: Sequence[bytes],
        source: str,
        first_position: int = 1,
        positions: Sequence[int | str] | None = None,
    ) -> Admitted:
        """Admit one batch of raw inputs (JSON lines or record values), in arrival order.

        Positions name each input in its source for dead letters: `positions[i]` when
        given (Kafka offsets), else `first_position + i` (line numbers).
        """
        if positions and positions[0].__class__ is int:
            self.dedup.note(positions[0])  # type: ignore[arg-type]
        clean = self._admit_clean(raws, positions)
        if clean is not None:
            return clean
        return self._admit_each(raws, source, first_position, positions)

    def _admit_clean(
        self, raws: Sequence[bytes], positions: Sequence[int | str] | None
    ) -> Admitted | None:
        """The usual batch, admitted whole: every input decodes, none is blank, too large,
        too deep, implausibly stamped, a redelivery or late. Decoding with `map` and checking
        stamps and ids with C loops (numpy, set operations) costs a fraction of a Python
        loop per event (and, unlike decoding the batch as one JSON array, copies no
        bytes). None, with nothing changed, when any input needs the careful path
        (`_admit_each`), which then decides for every input on its own."""
        cfg = self.settings
        if not raws:
            return None
        longest = max(map(len, raws))
        if longest > cfg.input.max_event_bytes:
            return None
        if longest >= MIN_TOO_DEEP_BYTES and any(map(nests_too_deep, raws)):
            return None
        try:
            events = list(map(decoder.decode, raws))
            stamps = np.fromiter(map(_ts, events), np.int64, len(events))
        except (msgspec.DecodeError, TypeError, OverflowError):
            return None  # a bad input, or an RFC 3339 stamp: `_admit_each` handles both
        if len(events) != len(raws):
            return None
        max_allowed = int(self._wall_clock() * 1000) + cfg.input.max_future_ms
        if stamps.min() < cfg.input.min_ts_ms or stamps.max() > max_allowed:
            return None
        ids = set(map(_id, events))
        dedup = self.dedup
        if len(ids) != len(events):  # an id twice in the batch
            return None
        if not (ids.isdisjoint(dedup.current) and ids.isdisjoint(dedup.previous)):
            return None
        # Late: behind the watermark as it stood when the event arrived. A jump ahead of the
        # latest event time, or no latest event time yet: confirmation, event by event.
        if self.max_ts == NO_TIME:
            return None
        highest = np.maximum.accumulate(stamps)
        before = np.maximum(np.concatenate(([self.max_ts], highest[:-1])), self.max_ts)
        if (stamps < before - cfg.event_time.allowed_lateness_ms).any():
            return None
        if (stamps > before + cfg.event_time.max_jump_ms).any():
            return None
        dedup.current |= ids
        self._ahead.clear()  # the stream is where it was: no jump in progress
        self.max_ts = max(self.max_ts, int(highest[-1]))
        self.dedup.expire(self.watermark)
        by_type: dict[str, list[Event]] = {t: [] for t in EVENT_TYPES}
        span = (int(stamps.min()), int(highest[-1]))
        if positions is None:
            for event in events:
                by_type[event.type].append(event)
            return Admitted(by_type, [], 0, 0, span)
        offsets: dict[str, list[int]] = {t: [] for t in EVENT_TYPES}
        for event, position in zip(events, positions, strict=True):
            by_type[event.type].append(event)
            offsets[event.type].append(position)  # type: ignore[arg-type]
        return Admitted(by_type, [], 0, 0, span, offsets)

    def _admit_each(
        self,
        raws: Sequence[bytes],
        source: str,
        first_position: int,
        positions: Sequence[int | str] | None,
    ) -> Admitted:
        """Admit input by input, dead-lettering each one that fails. This loop is the
        careful path: it is written flat, with the de-duplicator's sets checked inline."""
        cfg = self.settings
        keep = cfg.input.dead_letter_raw_bytes
        max_bytes = cfg.input.max_event_bytes
        min_ts = cfg.input.min_ts_ms
        max_ts_allowed = int(self._wall_clock() * 1000) + cfg.input.max_future_ms
        lateness = cfg.event_time.allowed_lateness_ms
        max_jump = cfg.event_time.max_jump_ms
        ahead = self._ahead
        seen_now, seen_before = self.dedup.current, self.dedup.previous
        decode = decoder.decode
        by_type: dict[str, list[Event]] = {t: [] for t in EVENT_TYPES}
        offsets: dict[str, list[int]] | None = None
        if positions is not None:
            offsets = {t: [] for t in EVENT_TYPES}
        dead: list[DeadLetter] = []
        max_ts = self.max_ts
        watermark = max_ts - lateness
        duplicates = blank = 0

        def reject(i: int, reason: str, detail: str) -> None:
            where = positions[i] if positions is not None else first_position + i
            dead.append(dead_letter(reason, detail, source, where, raws[i], keep))

        for i, raw in enumerate(raws):
            if len(raw) > max_bytes:
                size = input_size(raw)
                reject(i, "too_large", f"input is {size} bytes; the limit is {max_bytes}")
                continue
            if len(raw) >= MIN_TOO_DEEP_BYTES and nests_too_deep(raw):
                reject(i, "too_deep", f"input nests more than {MAX_DEPTH} levels deep")
                continue
            try:
                event = decode(raw)
            except msgspec.DecodeError as exc:
                if raw.isspace() or not raw:
                    blank += 1
                else:
                    reject(i, classify(exc), str(exc))
                continue
            ts = event.ts
            if ts.__class__ is not int:
                ts = event.ts = to_epoch_ms(ts)
            if ts < min_ts or ts > max_ts_allowed:
                reject(
                    i,
                    "invalid_value",
                    f"ts {ts} is not plausible epoch milliseconds"
                    " (before 2000 or too far in the future)",
                )
                continue
            event_id = event.event_id
            if event_id in seen_now or event_id in seen_before:
                duplicates += 1
                continue
            seen_now.add(event_id)
            if ts > max_ts + max_jump:
                self.max_ts = max_ts
                self._land_ahead(ts)
                max_ts = self.max_ts
                watermark = max_ts - lateness
            elif ts < watermark:
                reject(i, "late", f"event time {ts} is {watermark - ts} ms behind the watermark")
                continue
            else:
                if ts > max_ts:
                    max_ts = ts
                    watermark = ts - lateness
                if ahead:
                    ahead.clear()  # the stream is where it was: no jump in progress
            by_type[event.type].append(event)
            if offsets is not None:
                offsets[event.type].append(positions[i])  # type: ignore[index,arg-type]

        self.max_ts = max_ts
        self.dedup.expire(watermark)
        return Admitted(by_type, dead, duplicates, blank, offsets=offsets)
