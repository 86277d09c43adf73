"""Results as JSON lines files: findings.jsonl, actions.jsonl and dead_letter.jsonl in one
directory, one record per line with the contract's field names (docs/contract.md §4)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from pipeline.outputs.sink import Results, Sink

_encode = msgspec.json.Encoder().encode


class JsonlFile:
    """One file of records, one per line."""

    def __init__(self, path: Path, append: bool) -> None:
        self._file = open(path, "ab" if append else "wb")  # noqa: SIM115 - closed in close()

    def write(self, records: Iterable[msgspec.Struct]) -> None:
        chunk = b"".join(_encode(r) + b"\n" for r in records)
        if chunk:
            self._file.write(chunk)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class JsonlSink(Sink):
    """The three files of a run's output directory. `append` keeps what the files hold (a
    process that restarts keeps adding); otherwise they start empty."""

    def __init__(self, directory: Path, append: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.findings = JsonlFile(directory / "findings.jsonl", append)
        self.actions = JsonlFile(directory / "actions.jsonl", append)
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
