"""`lockstep run`: the live embedded mode, its /metrics endpoint (scraped over real HTTP),
the built-in demo, and following a growing file."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

from pipeline.contract.deadletter import InputHead
from pipeline.core.sources import READ_BYTES
from pipeline.embedded.live import file_lines
from pipeline.outputs.metrics import EXPORTED_METRICS
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, read_jsonl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(*args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _scrape(port: int, until: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
            if until in text:
                return text
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{until!r} never appeared in /metrics:\n{text[-2000:]}")


def _wait_for(path: Path, predicate, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            rows = read_jsonl(path)
            if predicate(rows):
                return rows
        time.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the condition")


def _stream_with_jump() -> list[str]:
    b = StreamBuilder(seed=21)
    b.poisson_follows("quiet", T0, T0 + 5 * HOUR, rate_per_hour=5)
    b.burst("quiet", T0 + 4 * HOUR, 300, 3 * MINUTE)
    b.poisson_follows("later", T0 + 4 * HOUR, T0 + 5 * HOUR, rate_per_hour=600)
    lines = b.sorted_lines()
    lines.insert(10, "{not json")
    return lines


def test_stdin_stream_serves_metrics_and_writes_findings_while_running(tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "out"
    proc = _start("-", "--out", str(out), "--metrics-port", str(port), stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        proc.stdin.write(("\n".join(_stream_with_jump()) + "\n").encode())
        proc.stdin.flush()
        # stdin is still open: the run is live, yet the burst's window has closed
        rows = _wait_for(
            out / "findings.jsonl",
            lambda r: any(
                f["subject_id"] == "quiet" and f["detector"] == "follower_jump" for f in r
            ),
        )
        assert {f["subject_id"] for f in rows} == {"quiet"}  # edge_burst may flag it first
        assert {f["detector"] for f in rows} <= {"follower_jump", "edge_burst", "silent_followers"}
        text = _scrape(port, 'lockstep_findings_total{article="12",detector="follower_jump"', proc)
        for needle in (
            'lockstep_events_total{type="follow"}',
            "lockstep_inputs_total",
            'lockstep_dead_letters_total{reason="invalid_json"} 1.0',
            'lockstep_actions_total{action="human_review",mode="enforce"}',
            "lockstep_watermark_lag_seconds",
            "lockstep_duplicate_events_total",
            "lockstep_late_events_total",
            "lockstep_processing_latency_seconds_bucket",
            'lockstep_state_keys{stage="follower_jump"}',
        ):
            assert needle in text, needle
        assert "quiet" not in text  # no account ids in labels
        served = {
            line.split("{")[0].split(" ")[0]
            for line in text.splitlines()
            if line.startswith("lockstep_")
        }
        for name in EXPORTED_METRICS:
            if name != "lockstep_consumer_lag_records":  # a distributed worker's metric
                assert any(s == name or s.startswith(name + "_") for s in served), name
    finally:
        proc.stdin.close()
    assert proc.wait(timeout=30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert (out / "dead_letter.jsonl").read_text().count("\n") == 1


def test_demo_shows_a_follower_jump(tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "demo"
    proc = _start("--demo", "--out", str(out), "--metrics-port", str(port))
    text = _scrape(port, "lockstep_events_total", proc)
    assert "lockstep_inputs_total" in text
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    findings = read_jsonl(out / "findings.jsonl")
    by_detector = {(f["detector"], f["subject_id"]) for f in findings}
    # the bought burst, and the bots' own sign-ups: from one /24 on five devices, in minutes
    assert {s for d, s in by_detector if d != "batch_registration"} == {"creator_07"}
    assert {s for d, s in by_detector if d == "batch_registration"} == {"net:203.0.113"}
    assert "creator_07" in stderr.decode() and "follower_jump" in stderr.decode()
    assert read_jsonl(out / "actions.jsonl")
    reasons = {d["reason"] for d in read_jsonl(out / "dead_letter.jsonl")}
    assert reasons == {"invalid_json", "unknown_type"}


def test_follow_mode_reads_a_growing_file_until_stopped(tmp_path: Path) -> None:
    events = tmp_path / "growing.jsonl"
    lines = _stream_with_jump()
    half = len(lines) // 2
    events.write_text("\n".join(lines[:half]) + "\n")
    out = tmp_path / "out"
    proc = _start(str(events), "--follow", "--out", str(out), "--metrics-port", "0")
    try:
        time.sleep(1.0)
        with open(events, "a") as handle:
            for line in lines[half:]:
                handle.write(line + "\n")
        _wait_for(out / "findings.jsonl", lambda r: any(f["subject_id"] == "quiet" for f in r))
        assert proc.poll() is None  # still following
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_busy_metrics_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _start(
            "-", "--out", str(tmp_path), "--metrics-port", str(port), stdin=subprocess.PIPE
        )
        _, stderr = proc.communicate(b"", timeout=30)
    assert proc.returncode == 2
    assert len(stderr.decode().strip().splitlines()) == 1 and str(port) in stderr.decode()


def test_a_live_run_adds_to_the_actions_in_force_and_a_replay_starts_anew(tmp_path: Path) -> None:
    """The throttling hook follows a live run's actions.jsonl, whose actions are in force:
    a restarted run appends to it; a replay is a fresh computation of its input."""
    out = tmp_path / "out"
    out.mkdir()
    in_force = '{"action_id": "issued-before-the-restart"}\n'
    (out / "actions.jsonl").write_text(in_force)
    stream = ("\n".join(_stream_with_jump()) + "\n").encode()
    proc = _start("-", "--out", str(out), "--metrics-port", "0", stdin=subprocess.PIPE)
    _, stderr = proc.communicate(stream, timeout=60)
    assert proc.returncode == 0, stderr.decode()
    kept = (out / "actions.jsonl").read_text()
    assert kept.startswith(in_force) and len(kept.splitlines()) > 1  # kept, then the new
    events = tmp_path / "events.jsonl"
    events.write_bytes(stream)
    replay = [sys.executable, "-m", "pipeline.cli", "replay", str(events), "--out", str(out)]
    subprocess.run(replay, check=True, capture_output=True, timeout=60)
    assert "issued-before-the-restart" not in (out / "actions.jsonl").read_text()


HUGE_BYTES = 50 << 20  # a line without a newline for 50 MiB: far over input.max_event_bytes
HUGE_OPENING = b'{"event_id": "huge", "type": "follow", "text": "'


def _write_huge_line(handle: IO[bytes]) -> int:
    """Write the huge line a MiB at a time, as a runaway writer would; returns its size
    (without its newline)."""
    handle.write(HUGE_OPENING)
    block = b"x" * (1 << 20)
    for _ in range(HUGE_BYTES >> 20):
        handle.write(block)
    handle.write(b'"}\n')
    handle.flush()
    return len(HUGE_OPENING) + HUGE_BYTES + 2


def _peak_rss_mib(proc: subprocess.Popen[bytes]) -> float:
    """The most memory the process has held so far (Linux's VmHWM: the peak, which polling
    its resident size could miss)."""
    status = Path(f"/proc/{proc.pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


def _huge_line_is_dead_lettered_in_bounded_memory(
    proc: subprocess.Popen[bytes], handle: IO[bytes], out: Path
) -> None:
    """With the first half of the stream taken in (its invalid line dead-lettered), write
    the huge line and the second half: the huge line becomes a `too_large` dead letter
    with its size, the events after it make their findings, and the run's peak memory
    grows by far less than the line."""
    lines = _stream_with_jump()
    half = len(lines) // 2
    handle.write(("\n".join(lines[:half]) + "\n").encode())
    handle.flush()
    _wait_for(out / "dead_letter.jsonl", lambda rows: len(rows) == 1)
    before = _peak_rss_mib(proc)
    size = _write_huge_line(handle)
    handle.write(("\n".join(lines[half:]) + "\n").encode())
    handle.flush()
    _wait_for(out / "findings.jsonl", lambda rows: any(f["subject_id"] == "quiet" for f in rows))
    dead = _wait_for(out / "dead_letter.jsonl", lambda rows: len(rows) == 2)
    assert [d["reason"] for d in dead] == ["invalid_json", "too_large"]
    assert dead[1]["raw_bytes"] == size and str(size) in dead[1]["detail"]
    assert dead[1]["raw_truncated"] and dead[1]["raw"].startswith(HUGE_OPENING.decode())
    assert proc.poll() is None  # the run goes on
    grown = _peak_rss_mib(proc) - before
    assert grown < 16, f"peak memory grew by {grown:.0f} MiB for a {HUGE_BYTES >> 20} MiB line"


def test_a_huge_line_in_a_followed_file_is_dead_lettered_and_the_run_reads_on(
    tmp_path: Path,
) -> None:
    events = tmp_path / "growing.jsonl"
    events.write_bytes(b"")
    out = tmp_path / "out"
    proc = _start(str(events), "--follow", "--out", str(out), "--metrics-port", "0")
    try:
        with open(events, "ab") as handle:
            _huge_line_is_dead_lettered_in_bounded_memory(proc, handle, out)
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_a_huge_line_on_stdin_is_dead_lettered_and_the_run_reads_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start("-", "--out", str(out), "--metrics-port", "0", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        _huge_line_is_dead_lettered_in_bounded_memory(proc, proc.stdin, out)
    finally:
        proc.stdin.close()
    assert proc.wait(timeout=30) == 0, proc.stderr.read().decode() if proc.stderr else ""


def test_a_followed_file_bounds_its_lines_and_is_read_again_when_replaced(
    tmp_path: Path,
) -> None:
    """The reader `lockstep run` follows a file with: a line longer than the bound and than
    one read comes as its head and size, lines appended are taken as they end, a replaced
    file is read from its start, and the reading ends once told to stop."""
    long = 3 * READ_BYTES  # a line this long is never read in one piece
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"a\n" + b"x" * long + b"\nb\n")
    read = list(file_lines(str(path), follow=False, max_line_bytes=100))
    assert read == [b"a\n", b"x" * 101, b"b\n"]
    assert isinstance(read[1], InputHead) and read[1].size == long
    stop = threading.Event()
    taken: queue.Queue[bytes] = queue.Queue()
    lines = file_lines(str(path), follow=True, poll_s=0.01, stop=stop, max_line_bytes=100)
    reader = threading.Thread(target=lambda: [taken.put(line) for line in lines], daemon=True)
    reader.start()
    try:
        got = [taken.get(timeout=10) for _ in range(3)]
        assert got == read and isinstance(got[1], InputHead) and got[1].size == long
        with open(path, "ab") as handle:
            handle.write(b"c")
            handle.flush()
            time.sleep(0.1)  # a writer mid-line: nothing is taken until the line ends
            assert taken.empty()
            handle.write(b"\n")
        assert taken.get(timeout=10) == b"c\n"
        replacement = tmp_path / "rotated.jsonl"
        replacement.write_bytes(b"d\n" + b"y" * long + b"\n")
        os.replace(replacement, path)
        assert [taken.get(timeout=10) for _ in range(2)] == [b"d\n", b"y" * 101]
    finally:
        stop.set()
    reader.join(timeout=10)
    assert not reader.is_alive() and taken.empty()


def _logins(count: int, big: int = 0) -> list[str]:
    """`count` logins, one of them padded (an ignored field) to `big` bytes if given."""
    import json

    lines = [
        json.dumps({"event_id": f"e{i}", "type": "login", "ts": T0 + i, "actor": f"u{i}"})
        for i in range(count)
    ]
    if big:
        padded = {"event_id": "big", "type": "login", "ts": T0, "actor": "u", "pad": ""}
        padded["pad"] = "x" * (big - len(json.dumps(padded)))
        lines.insert(1, json.dumps(padded))
    return lines


def test_a_config_given_by_flag_sets_how_long_a_line_may_be(tmp_path: Path) -> None:
    """`input.max_event_bytes` from --config bounds the reader as it bounds the gate: a
    line longer than the shipped bound but within the configured one is an event."""
    config = tmp_path / "long-lines.yaml"
    config.write_text("input:\n  max_event_bytes: 200000\n")
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(_logins(3, big=150_000)) + "\n")  # shipped: 64 KiB
    for args in ([str(events)], ["-"]):
        out = tmp_path / ("stdin" if args == ["-"] else "file")
        proc = _start(*args, "--config", str(config), "--out", str(out), "--metrics-port", "0",
                      stdin=subprocess.PIPE)  # fmt: skip
        _, stderr = proc.communicate(events.read_bytes() if args == ["-"] else b"", timeout=60)
        assert proc.returncode == 0, stderr.decode()
        assert "done: 4 events, 0 dead letters" in stderr.decode(), (args, stderr.decode())
        dead = out / "dead_letter.jsonl"
        assert not dead.exists() or not dead.read_text().strip()


def test_an_unreadable_input_ends_the_run_with_one_line_after_what_was_read(
    tmp_path: Path,
) -> None:
    """A corrupt gzip file (the reader thread's InputError): what came before it is
    processed and written, then one line says what failed, and the exit status is 1."""
    import gzip

    lines = _stream_with_jump()  # its line 11 is not JSON
    packed = gzip.compress(("\n".join(lines) + "\n").encode())
    events = tmp_path / "cut.jsonl.gz"
    events.write_bytes(packed[: len(packed) * 9 // 10])  # truncated: the last tenth is gone
    out = tmp_path / "out"
    proc = _start(str(events), "--out", str(out), "--metrics-port", "0")
    _, raw = proc.communicate(timeout=60)
    stderr = raw.decode()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "done:" not in stderr
    said = [line for line in stderr.splitlines() if line.startswith("lockstep: ")]
    assert said == [stderr.splitlines()[-1]], stderr  # the last line, and the only one
    assert str(events) in said[0] and "corrupt or truncated" in said[0]
    dead = read_jsonl(out / "dead_letter.jsonl")  # line 11, and the cut one at the end
    assert (dead[0]["reason"], dead[0]["position"]) == ("invalid_json", 11)
    findings = read_jsonl(out / "findings.jsonl")  # the windows read, closed at the end
    assert any(f["subject_id"] == "quiet" for f in findings)
