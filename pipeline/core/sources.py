"""Reading JSON lines: files, gzip files and standard input, in batches of raw lines."""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO

READ_HINT_BYTES = 1 << 20  # lines per read: as many as fit in about 1 MiB


class InputError(Exception):
    """The input cannot be read at all; the message is one line for the user."""


class LineSource:
    """A JSONL input. Iterate for batches of raw lines; `position()` is the bytes consumed."""

    def __init__(self, path: str) -> None:
        self.name = "stdin" if path == "-" else path
        self.size: int | None = None
        self._raw: BinaryIO
        self._stream: BinaryIO
        if path == "-":
            self._raw = self._stream = sys.stdin.buffer
            return
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
            self.size = os.fstat(self._raw.fileno()).st_size
            magic = self._raw.peek(2)[:2] if hasattr(self._raw, "peek") else b""
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if path.endswith(".gz") or magic == b"\x1f\x8b":
            self._stream = io.BufferedReader(gzip.GzipFile(fileobj=self._raw))  # type: ignore[arg-type]
        else:
            self._stream = self._raw

    def position(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[list[bytes]]:
        readlines = self._stream.readlines
        while True:
            try:
                lines = readlines(READ_HINT_BYTES)
            except (OSError, EOFError) as exc:
                raise InputError(
                    f"{self.name} ends in a corrupt or truncated block: {exc}"
                ) from exc
            if not lines:
                return
            yield lines

    def close(self) -> None:
        if self._raw is not sys.stdin.buffer:
            self._stream.close()
            self._raw.close()
