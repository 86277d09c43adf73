"""Where results go: JSON lines files (one record per line, contract field names)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.count = 0

    def write(self, records: Iterable[Any]) -> None:
        chunk = b"".join(_encode(r) + b"\n" for r in records)
        if chunk:
            self._file.write(chunk)
            self.count += chunk.count(b"\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class OutputDir:
    """findings.jsonl, actions.jsonl and dead_letter.jsonl in one directory."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.findings = JsonlSink(self.dir / "findings.jsonl")
        self.actions = JsonlSink(self.dir / "actions.jsonl")
        self.dead_letters = JsonlSink(self.dir / "dead_letter.jsonl")

    def write(self, result: Any) -> None:
        self.findings.write(result.findings)
        self.actions.write(result.actions)
        self.dead_letters.write(result.dead_letters)

    def flush(self) -> None:
        for sink in (self.findings, self.actions, self.dead_letters):
            sink.flush()

    def close(self) -> None:
        for sink in (self.findings, self.actions, self.dead_letters):
            sink.close()
