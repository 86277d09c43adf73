"""A JSON lines file followed as it grows, as a run or a sink writes it.

Each read hands on the whole lines appended since the last one, with where each starts
(so a line can be read again later, whole, by its offset); a last line without its
newline is a writer mid-line and waits for the next read. A file replaced (another inode)
or rewritten in place (`lockstep replay` starts its files anew; the last line taken in is
no longer where it was) is read again from its start, and the read says so, so the
reader can forget what it took from the old one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHUNK = 8 << 20  # bytes read at a time: a large file is never held whole


@dataclass
class Lines:
    """What one read found: whether the file read before was started anew (its lines
    are then all of the new file's), and the new lines, read as they are taken (from the
    file as it was opened: `close` if they are not taken)."""

    restarted: bool
    lines: Iterator[tuple[int, bytes]]  # (offset, line)
    handle: IO[bytes] | None = None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class Tail:
    """The file at `path`, followed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file_id: tuple[int, int] | None = None  # (device, inode) of the file read
        self.offset = 0  # bytes taken in so far: the end of the last whole line
        self.last_line = b""  # the last line taken in (with its newline)

    def read(self) -> Lines:
        """The whole lines appended since the last read (all of them, `restarted`, when
        the file is not the one read so far), to be taken before the next read. A file
        not there yet has none."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed by the lines, or `close`
        except FileNotFoundError:
            return Lines(False, iter(()))
        restarted = False
        if not self._same_file(handle):
            restarted = self.file_id is not None
            stat = os.fstat(handle.fileno())
            self.file_id = (stat.st_dev, stat.st_ino)
            self.offset, self.last_line = 0, b""
        return Lines(restarted, self._whole_lines(handle), handle)

    def _same_file(self, handle: IO[bytes]) -> bool:
        """Whether `handle` is the file read so far, at most grown."""
        stat = os.fstat(handle.fileno())
        if (stat.st_dev, stat.st_ino) != self.file_id:
            return False
        handle.seek(self.offset - len(self.last_line))
        return handle.read(len(self.last_line)) == self.last_line

    def _whole_lines(self, handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
        """The whole lines from `offset` on, a chunk at a time; `offset` moves past each
        chunk's once they are taken."""
        with handle:
            handle.seek(self.offset)
            yield from self._chunks(handle)

    def _chunks(self, handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
        carry = b""
        while chunk := handle.read(CHUNK):
            data = carry + chunk
            end = data.rfind(b"\n") + 1
            if not end:
                carry = data
                continue
            start = self.offset
            for line in data[: end - 1].split(b"\n"):
                yield start, line
                start += len(line) + 1
            self.last_line = data[data.rfind(b"\n", 0, end - 1) + 1 : end]
            self.offset += end
            carry = data[end:]

    def line_at(self, offset: int, length: int) -> bytes:
        """The line of `length` bytes at `offset` of the file (b"" if it is gone)."""
        return self.lines_at([(offset, length)])[0]

    def lines_at(self, spans: list[tuple[int, int]]) -> list[bytes]:
        """The lines at the (offset, length) `spans` of the file, read through one handle
        (b"" for each if it is gone)."""
        try:
            with open(self.path, "rb") as handle:
                lines = []
                for offset, length in spans:
                    handle.seek(offset)
                    lines.append(handle.read(length))
                return lines
        except OSError:
            return [b""] * len(spans)
