"""The input reader survives any byte stream: every line comes out once, in order; a line
over the limit comes as its head, never held whole; a corrupt or truncated gzip file ends
the read with one InputError naming the file and the byte offset, after the lines before."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from pipeline.contract.deadletter import InputHead
from pipeline.core.sources import READ_BYTES, InputError, LineSource
from tests.helpers import T0, lockstep, read_jsonl, write_lines

LIMIT = 65_536  # input.max_event_bytes
OPENING = b'{"event_id": "huge", "text": "'


def _read(path: Path, limit: int = LIMIT) -> list[bytes]:
    source = LineSource(str(path), limit)
    try:
        return [line for batch in source for line in batch]
    finally:
        source.close()


def _event(i: int) -> bytes:
    event = {"event_id": f"e{i}", "type": "login", "ts": T0 + i, "actor": f"u{i % 50}"}
    return json.dumps(event).encode() + b"\n"


def test_every_line_comes_once_and_long_ones_as_their_head(tmp_path: Path) -> None:
    rng = random.Random(7)
    limit = 1_000
    lengths = [rng.choice((0, 5, 999, 1_000, 1_001, 5_000, READ_BYTES, 3 * READ_BYTES + 17))]
    lengths += [rng.choice((0, 3, 80, 999, 1_001, 70_000, 200_000)) for _ in range(300)]
    lines = [
        bytes([65 + i % 26]) * n + (b"\r\n" if i % 5 == 0 else b"\n") for i, n in enumerate(lengths)
    ]
    lines[-1] = lines[-1].rstrip(b"\r\n")  # the last line unended
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"".join(lines))
    read = _read(path, limit)
    assert len(read) == len(lines)
    for original, got in zip(lines, read, strict=True):
        if isinstance(got, InputHead):
            assert got == original[: limit + 1]
            assert got.size == len(original.rstrip(b"\n"))
        else:
            assert got == original and len(got) <= limit + 2 * READ_BYTES


def test_a_huge_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    size = 80 << 20
    with open(path, "wb") as handle:
        handle.write(_event(0))
        handle.write(OPENING)
        block = b"x" * (1 << 20)
        for _ in range(size >> 20):
            handle.write(block)
        handle.write(b'"}\n')
        handle.write(_event(1) + _event(2))
    tracemalloc.start()
    try:
        read = _read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * LIMIT + 4 * READ_BYTES, peak  # not the 80 MiB line
    assert [read[0], read[2], read[3]] == [_event(0), _event(1), _event(2)]
    head = read[1]
    assert isinstance(head, InputHead) and head.size == len(OPENING) + size + 2
    assert head.startswith(OPENING + b"xxx") and len(head) == LIMIT + 1


def test_replay_dead_letters_a_huge_line_and_reads_on(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    size = 60 << 20
    with open(path, "wb") as handle:
        handle.write(_event(0) + b"[" + b"1," * (size // 2) + b"1]\n" + _event(1))
    out = tmp_path / "out"
    measure = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    replay = [sys.executable, "-m", "pipeline.cli", "replay"]

    def peak_kib(events: Path, into: Path) -> int:
        args = [sys.executable, "-c", measure, *replay, str(events), "--out", str(into)]
        return int(subprocess.run(args, check=True, capture_output=True).stdout)

    small = write_lines(tmp_path / "small.jsonl", [_event(0).strip(), _event(1).strip()])
    baseline = peak_kib(small, tmp_path / "small")
    assert peak_kib(path, out) < baseline + 24 * 1024  # KiB; the line is 60 MiB
    (dead,) = read_jsonl(out / "dead_letter.jsonl")
    assert (dead["reason"], dead["position"], dead["raw_bytes"]) == ("too_large", 2, size + 3)
    assert dead["raw_truncated"] and dead["raw"].startswith("[1,1,") and dead["detail"]
    assert json.loads((out / "summary.json").read_text())["events"] == 2


def _packed(tmp_path: Path) -> tuple[bytes, list[bytes]]:
    lines = [_event(i) for i in range(20_000)]
    data = b"".join(lines)
    packed = gzip.compress(data[: len(data) // 2]) + gzip.compress(data[len(data) // 2 :])
    return packed, lines


@pytest.mark.parametrize("seed", range(3))
def test_a_corrupt_gzip_file_ends_the_read_with_one_clear_error(tmp_path: Path, seed: int) -> None:
    """Bytes flipped, overwritten or cut anywhere: a clean read or an InputError naming
    the file and the offset, and never another exception."""
    packed, lines = _packed(tmp_path)
    rng = random.Random(seed)
    outcomes = {"clean": 0, "error": 0}
    for case in range(40):
        broken = bytearray(packed)
        at = rng.randrange(len(packed))
        kind = case % 4
        if kind == 0:
            broken[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            broken[at : at + 16] = rng.randbytes(16)
        elif kind == 2:
            del broken[at:]
        else:
            broken[at : at + 1] = b""
        path = tmp_path / f"broken-{case}.jsonl.gz"
        path.write_bytes(bytes(broken))
        source = LineSource(str(path), LIMIT)
        read: list[bytes] = []
        try:
            for batch in source:
                read += batch
        except InputError as exc:
            message = str(exc)
            assert str(path) in message and "byte" in message and "\n" not in message
            outcomes["error"] += 1
        else:
            outcomes["clean"] += 1
        finally:
            source.close()
        if kind == 2 and at > len(packed) // 2 + 100:  # cut in the second member
            assert read[: len(lines) // 2] == lines[: len(lines) // 2]
    assert outcomes["error"] > 20


def test_replay_of_a_corrupt_gzip_keeps_what_it_read_and_fails(tmp_path: Path) -> None:
    packed, lines = _packed(tmp_path)
    broken = bytearray(packed)
    broken[len(packed) * 3 // 4 : len(packed) * 3 // 4 + 64] = bytes(64)
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(bytes(broken))
    out = tmp_path / "out"
    proc = lockstep("replay", str(path), "--out", str(out))
    assert proc.returncode == 1
    (message,) = proc.stderr.decode().strip().splitlines()
    assert str(path) in message and "byte" in message
    summary = json.loads((out / "summary.json").read_text())
    assert len(lines) // 2 <= summary["events"] < len(lines)
