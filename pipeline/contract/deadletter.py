"""Dead-letter records: every rejected input, with its reason, where it came from, and itself."""

from __future__ import annotations

import base64

from msgspec import Struct

REASONS: tuple[str, ...] = (
    "too_large",
    "too_deep",
    "invalid_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "unknown_type",
    "invalid_value",
    "late",
)


class DeadLetter(Struct, kw_only=True):
    reason: str
    detail: str
    source: str
    position: int | str
    raw: str
    raw_encoding: str  # "utf-8", or "base64" when the input was not valid UTF-8
    raw_bytes: int  # size of the original input; `raw` holds at most the configured cut
    raw_truncated: bool


class InputHead(bytes):
    """The first bytes of an input too long to hold, standing in for it; `size` is the whole
    input's length. A reader keeps more bytes than the size limit, so the gate refuses it
    as `too_large` like any other input over the limit."""

    size: int

    def __new__(cls, head: bytes, size: int) -> InputHead:
        self = super().__new__(cls, head)
        self.size = size
        return self


def input_size(raw: bytes) -> int:
    """The length of the input `raw` is, or stands for, without its line terminator."""
    return raw.size if isinstance(raw, InputHead) else len(raw.rstrip(b"\r\n"))


def _render(kept: bytes, truncated: bool) -> tuple[str, str]:
    """Text when the bytes are UTF-8 (a cut may split the last character), else base64."""
    for drop in range(4 if truncated else 1):
        try:
            return kept[: len(kept) - drop].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(kept).decode("ascii"), "base64"


def dead_letter(
    reason: str, detail: str, source: str, position: int | str, raw: bytes, keep_bytes: int
) -> DeadLetter:
    size = input_size(raw)
    kept = raw.rstrip(b"\r\n")[:keep_bytes]  # the line terminator is framing, not input
    truncated = size > len(kept)
    text, encoding = _render(kept, truncated)
    return DeadLetter(
        reason=reason,
        detail=detail,
        source=source,
        position=position,
        raw=text,
        raw_encoding=encoding,
        raw_bytes=size,
        raw_truncated=truncated,
    )
