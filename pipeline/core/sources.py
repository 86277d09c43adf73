"""Reading JSON lines: files, gzip files and standard input, in batches of raw lines.

Whatever the bytes, a read ends in one of two ways: at the end of the input, or, after
every line read before the fault, with an InputError naming the input and the byte offset
(an unreadable file, a corrupt or truncated gzip stream). A line longer than the limit is
never held whole: the reader skips its rest and yields its head (`InputHead`) in its place,
which the gate dead-letters as too large.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from pipeline.contract.deadletter import InputHead

BATCH_BYTES = 1 << 20  # a batch: the lines of about 1 MiB of input
# One read: a small one, since zlib gives nothing of a read that meets corrupt data.
READ_BYTES = 1 << 16


class InputError(Exception):
    """The input cannot be read (any further); the message is one line for the user."""


class LineSource:
    """A JSONL input. Iterate for batches of raw lines; `position()` is the bytes consumed.

    A line over `max_line_bytes` comes as an InputHead of its first `max_line_bytes + 1`
    bytes: memory stays bounded by that and one read, whatever the input."""

    def __init__(self, path: str, max_line_bytes: int, stream: BinaryIO | None = None) -> None:
        """With `stream`, the lines are read from it as it is (`path` names it): a stream
        whose `read1` waits at its end for more makes a live input's reader."""
        self.name = "stdin" if path == "-" else path
        self.size: int | None = None
        self.max_line_bytes = max_line_bytes
        self._raw: BinaryIO
        self._stream: BinaryIO
        self._compressed = False
        self._failure: InputError | None = None
        if stream is not None or path == "-":
            self._raw = self._stream = sys.stdin.buffer if stream is None else stream
            return
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
            self.size = os.fstat(self._raw.fileno()).st_size
            magic = self._raw.peek(2)[:2] if hasattr(self._raw, "peek") else b""
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if path.endswith(".gz") or magic == b"\x1f\x8b":
            self._stream = gzip.GzipFile(fileobj=self._raw)  # type: ignore[assignment]
            self._compressed = True
        else:
            self._stream = self._raw

    def position(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[list[bytes]]:
        """Batches of lines, each with its terminator (the input's last maybe without);
        raises InputError, once what was read before is yielded, if the input fails."""
        batch: list[bytes] = []
        held = 0
        for lines in self._lines():
            batch += lines
            held += sum(map(len, lines))
            if held >= BATCH_BYTES:
                yield batch
                batch, held = [], 0
        if batch:
            yield batch
        if self._failure is not None:
            raise self._failure

    def lines(self) -> Iterator[bytes]:
        """The lines one by one, each as soon as it is read (a live input's: a batch would
        wait for a MiB of it); raises InputError, after them, if the input fails."""
        for lines in self._lines():
            yield from lines
        if self._failure is not None:
            raise self._failure

    def _lines(self) -> Iterator[list[bytes]]:
        """The whole lines of each read, in order; an over-long line as its head."""
        limit = self.max_line_bytes
        partial = b""  # a line begun in an earlier read
        while chunk := self._read():
            data = partial + chunk
            while True:
                end = data.rfind(b"\n") + 1
                if end:
                    yield io.BytesIO(data[:end]).readlines()  # split at b"\n" only, in C
                partial = data[end:]
                if len(partial) <= limit:
                    break
                # the lines read after an over-long one go out at once, not with the next
                # read: on a live input that may be a long while
                head, data = self._skip_line(partial)
                yield [head]
        if partial:  # the last line, unended, or what followed a skipped line
            yield io.BytesIO(partial).readlines()

    def _skip_line(self, start: bytes) -> tuple[InputHead, bytes]:
        """Read past the rest of the over-long line that begins with `start`, keeping only
        its head; returns the head and what follows the line's end in the last read."""
        head = start[: self.max_line_bytes + 1]
        size = len(start)
        while chunk := self._read():
            end = chunk.find(b"\n")
            if end >= 0:
                return InputHead(head, size + end), chunk[end + 1 :]
            size += len(chunk)
        return InputHead(head, size), b""

    def _read(self) -> bytes:
        """The next bytes of the input; b"" at its end or at a fault, which is kept in
        `_failure` to be raised once what was read before is processed."""
        if self._failure is not None:
            return b""
        try:
            return self._stream.read1(READ_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            self._failure = InputError(self._describe(exc))
            return b""

    def _describe(self, exc: BaseException) -> str:
        offset = self.position()
        if not self._compressed:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            return f"cannot read {self.name} at byte {offset}: {reason}"
        return f"{self.name} is corrupt or truncated before byte {offset} of its gzip data: {exc}"

    def close(self) -> None:
        if self._raw is not sys.stdin.buffer:
            self._stream.close()
            self._raw.close()
