"""The event contract (docs/contract.md §1) as typed msgspec structs.

One struct per event type, decoded as a tagged union on `type`: msgspec then checks, in C,
the required fields of each type, their types and lengths, so the hot path pays for a
decode and a couple of comparisons, not for a Python validator. Unknown fields are ignored.
"""

from __future__ import annotations

import re
from datetime import datetime
from itertools import accumulate
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct

Id = Annotated[str, Meta(min_length=1, max_length=128)]
Ref = Annotated[str, Meta(min_length=1, max_length=1024)]
Text = Annotated[str, Meta(max_length=10_000)]
EpochMs = Annotated[int, Meta(ge=0)]
Timestamp = EpochMs | Annotated[datetime, Meta(tz=True)]
Origin = Literal["user", "recommendation", "onboarding_default", "api", "import"]


class Event(Struct, tag_field="type", kw_only=True, gc=False):
    """Fields every event carries. `type` is a class constant, the union's tag."""

    type: ClassVar[str]
    event_id: Id
    ts: Timestamp
    actor: Id
    ip: str | None = None
    device_id: str | None = None
    actor_created_at: EpochMs | None = None


class Follow(Event, tag="follow", kw_only=True, gc=False):
    type: ClassVar[str] = "follow"
    target: Ref
    origin: Origin | None = None
    consent: bool | None = None


class Unfollow(Event, tag="unfollow", kw_only=True, gc=False):
    type: ClassVar[str] = "unfollow"
    target: Ref


class Click(Event, tag="click", kw_only=True, gc=False):
    type: ClassVar[str] = "click"
    target: Ref
    content_id: Ref


class Repost(Event, tag="repost", kw_only=True, gc=False):
    type: ClassVar[str] = "repost"
    target: Ref
    content_id: Ref
    text: Text | None = None


class Comment(Event, tag="comment", kw_only=True, gc=False):
    type: ClassVar[str] = "comment"
    target: Ref
    content_id: Ref
    text: Text


class Register(Event, tag="register", kw_only=True, gc=False):
    type: ClassVar[str] = "register"


class Login(Event, tag="login", kw_only=True, gc=False):
    type: ClassVar[str] = "login"


class Impression(Event, tag="impression", kw_only=True, gc=False):
    type: ClassVar[str] = "impression"
    target: Ref | None = None
    content_id: Ref | None = None


NO_TIME = -(2**62)  # "no event time yet": below any real timestamp

AnyEvent = Follow | Unfollow | Click | Repost | Comment | Register | Login | Impression
EVENT_TYPES: tuple[str, ...] = (
    "follow",
    "unfollow",
    "click",
    "repost",
    "comment",
    "register",
    "login",
    "impression",
)

decoder = msgspec.json.Decoder(AnyEvent)
encoder = msgspec.json.Encoder()

# The decoder follows nesting on the interpreter's stack, and past about 950 levels (fewer
# from deeper in a program) it fails with a RecursionError. Inputs nested deeper than this
# bound are refused before decoding (`too_deep`), the same wherever the gate runs.
MAX_DEPTH = 512
# A text nested deeper than MAX_DEPTH opens more brackets (closed or not): shorter ones
# need no look.
MIN_TOO_DEEP_BYTES = MAX_DEPTH + 1
# A string from its opening quote to its closing one (or the end): never fails once opened,
# so it never backtracks (each round of the loop starts at a backslash).
_STRING = re.compile(rb'"[^"\\]*(?:\\.?[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
_SQUARE = bytes.maketrans(b"{}", b"[]")  # an object nests as an array does
_NESTING = {ord("["): 1, ord("]"): -1}


def nests_too_deep(raw: bytes) -> bool:
    """Whether the arrays and objects of `raw` nest more than MAX_DEPTH levels (brackets
    inside strings do not count). Costs a length check for all but long inputs, and a few
    scans in C for all but those that come near the bound."""
    if len(raw) < MIN_TOO_DEEP_BYTES or raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    return _deeper_than(_outside_strings(raw), MAX_DEPTH)


def _outside_strings(raw: bytes) -> bytes:
    """The brackets of `raw` outside its strings, as `[` and `]`. Without a backslash no
    quote is escaped, and with only quotes and brackets kept, two quotes side by side are
    an empty string or the end of one and the start of the next: taking them out leaves
    every bracket in or out of a string as it was, and most texts with no quote at all;
    then every other piece between quotes is a string's (an unclosed last one runs to
    the end)."""
    if b"\\" in raw:
        return _STRING.sub(b"", raw).translate(_SQUARE, _NOT_BRACKETS)
    kept = raw.translate(_SQUARE, _NOT_QUOTES_OR_BRACKETS).replace(b'""', b"")
    return b"".join(kept.split(b'"')[::2]) if b'"' in kept else kept


def _deeper_than(brackets: bytes, bound: int) -> bool:
    """Whether a run of `[` and `]` goes deeper than `bound` (opened less closed, at its
    highest). Its innermost `[]` pairs taken out a round at a time leave `]...][...[`: the
    rounds (the pairs' height) and the `[` left bound its depth from above, so only a text
    they do not keep within `bound` is counted bracket by bracket."""
    rest, rounds = brackets, 0
    while b"[]" in rest and rounds <= bound:
        rest, rounds = rest.replace(b"[]", b""), rounds + 1
    if b"[]" not in rest and rounds + rest.count(b"[") <= bound:
        return False
    return max(accumulate(map(_NESTING.__getitem__, brackets)), default=0) > bound


def to_epoch_ms(ts: int | datetime) -> int:
    """Event time as integer epoch milliseconds (RFC 3339 strings arrive as datetimes)."""
    if ts.__class__ is int:
        return ts  # type: ignore[return-value]
    return int(ts.timestamp() * 1000)  # type: ignore[union-attr]


def classify(error: msgspec.DecodeError) -> str:
    """Map a msgspec error to a dead-letter reason, a stable label for metrics and triage."""
    if not isinstance(error, msgspec.ValidationError):
        return "invalid_json"
    message = str(error)
    if message.startswith("Object missing required field"):
        return "missing_field"
    if " - at `$.type`" in message and message.startswith("Invalid value"):
        return "unknown_type"
    if message.startswith("Expected `object`, got") and " - at " not in message:
        return "not_object"
    if message.startswith("Expected `") and "`, got `" in message:
        return "wrong_type"
    return "invalid_value"
