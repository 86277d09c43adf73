"""Results as JSON lines files: findings.jsonl, actions.jsonl and dead_letter.jsonl in one
directory, one record per line with the contract's field names (docs/contract.md §4).

A file appended to is resumed: a process killed while writing may have left a torn last
line, and `lockstep sink` writes a batch before it commits the batch's offsets, so after a
restart it writes the batch again. The torn line is cut off and a finding or action whose
id is among the file's last lines (or the last ones written since) is not written again:
the files, like the audit trail, hold each id once."""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from pipeline.outputs.sink import Results, Sink

_encode = msgspec.json.Encoder().encode

BATCH_RECORDS = 5_000
"""The most records `lockstep sink` takes in a batch (its `getmany` bound): what a crash
between writing a batch and committing its offsets leaves to be written again."""
RESUME_LINES = 4 * BATCH_RECORDS
"""How many last lines a resumed file reads for the ids it holds. One crash before a commit
needs one batch; crashes in a row before any commit, each restart re-reading from the same
offsets but perhaps further in one partition and less far in another, can need more. Four
batches cover that, for a few MB of ids and a read of at most that many lines."""
CHUNK_BYTES = 1 << 20
"""How much of the file's tail is read at a time, backwards."""


class JsonlFile:
    """One file of records, one per line. With `key` and `append`, records whose `key`
    the file's last RESUME_LINES lines already hold are skipped."""

    def __init__(self, path: Path, append: bool, key: str | None = None) -> None:
        self._key = key
        # The last RESUME_LINES ids written, oldest first, kept for the process's life:
        # a batch read again may come back over several batches, and a worker that
        # crashed may send a finding again (the contract's at-least-once) minutes later.
        self._recent: deque[str] | None = None
        self._recent_ids: set[str] = set()
        if append and key is not None:
            self._recent = deque(reversed(_resume(path, key)), maxlen=RESUME_LINES)
            self._recent_ids = set(self._recent)
        elif append:
            _resume(path, None)
        self._file = open(path, "ab" if append else "wb")  # noqa: SIM115 - closed in close()

    def write(self, records: Iterable[msgspec.Struct]) -> None:
        if self._recent is not None:
            records = self._unwritten(records)
        chunk = b"".join(_encode(r) + b"\n" for r in records)
        if chunk:
            self._file.write(chunk)

    def flush(self) -> None:
        self._file.flush()

    def _unwritten(self, records: Iterable[msgspec.Struct]) -> list[msgspec.Struct]:
        """The records whose ids are not among the last RESUME_LINES written."""
        assert self._recent is not None and self._key is not None
        key, recent, ids = self._key, self._recent, self._recent_ids
        fresh = []
        for record in records:
            id_ = getattr(record, key)
            if id_ in ids:
                continue
            if len(recent) == recent.maxlen:
                ids.discard(recent[0])  # the deque drops it on append
            recent.append(id_)
            ids.add(id_)
            fresh.append(record)
        return fresh

    def close(self) -> None:
        self._file.close()


class JsonlSink(Sink):
    """The three files of a run's output directory. `append` keeps what the files hold (a
    process that restarts keeps adding, each finding and action once); otherwise they
    start empty."""

    def __init__(self, directory: Path, append: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.findings = JsonlFile(directory / "findings.jsonl", append, "finding_id")
        self.actions = JsonlFile(directory / "actions.jsonl", append, "action_id")
        self.dead_letters = JsonlFile(directory / "dead_letter.jsonl", append)

    def write(self, results: Results) -> None:
        self.findings.write(results.findings)
        self.actions.write(results.actions)
        self.dead_letters.write(results.dead_letters)

    def flush(self) -> None:
        for file in (self.findings, self.actions, self.dead_letters):
            file.flush()

    def close(self) -> None:
        for file in (self.findings, self.actions, self.dead_letters):
            file.close()


def _resume(path: Path, key: str | None) -> list[str]:
    """Repair `path`'s last line, then the `key` ids of its last RESUME_LINES lines, the
    last first (none without `key`)."""
    try:
        file = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    with file:
        end = _repair(file)
        if key is None or end == 0:
            return []
        decode = msgspec.json.Decoder(msgspec.defstruct("Id", [(key, str)])).decode
        ids: list[str] = []
        for line in itertools.islice(_lines_backwards(file, end - 1), RESUME_LINES):
            try:
                ids.append(getattr(decode(line), key))
            except (msgspec.DecodeError, RecursionError):  # a blank line, not a record
                continue
    return ids


def _repair(file: IO[bytes]) -> int:
    """Make the file end with a whole line; returns its size. A last line without its
    newline is cut off (a torn write: its batch was not committed, so it is read and
    written again), unless it is a whole record that only lacked the newline."""
    size = file.seek(0, os.SEEK_END)
    whole = next((i + 1 for i in _newlines_backwards(file, size)), 0)
    if whole == size:
        return size
    file.seek(whole)
    if _is_record(file.read()):
        file.write(b"\n")
        return size + 1
    file.truncate(whole)
    return whole


def _newlines_backwards(file: IO[bytes], end: int) -> Iterator[int]:
    """The positions of the newlines before `end`, the last first."""
    pos = end
    while pos > 0:
        size = min(CHUNK_BYTES, pos)
        pos -= size
        file.seek(pos)
        chunk = file.read(size)
        at = chunk.rfind(b"\n")
        while at >= 0:
            yield pos + at
            at = chunk.rfind(b"\n", 0, at)


def _lines_backwards(file: IO[bytes], end: int) -> Iterator[bytes]:
    """The lines before `end` (a newline's position), the last first, read a chunk at a
    time: only a chunk and the line it cuts are held."""
    pos, carry = end, b""
    while pos > 0:
        size = min(CHUNK_BYTES, pos)
        pos -= size
        file.seek(pos)
        first, *rest = (file.read(size) + carry).split(b"\n")
        yield from reversed(rest)
        carry = first
    yield carry


def _is_record(text: bytes) -> bool:
    """Whether `text` is a whole JSON object; a torn one never is (an object's closing
    brace is its last byte)."""
    try:
        return isinstance(msgspec.json.decode(text), dict)
    except (msgspec.DecodeError, RecursionError):
        return False
