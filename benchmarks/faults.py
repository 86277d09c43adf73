"""Fault campaign: the distributed runtime on real services, under faults, against replay.

    python -m benchmarks.faults [--kind KIND ...] [--cycles 20] [--minutes 360] [--seed N]
                                [--scale S] [--partitions 4]

Run by hand, never in CI. Each kind (`kill`, `join`, `broker`, `postgres`, `webhook`;
`baseline` is one world with no fault, to measure) runs on services of its own: a real
Kafka broker (deploy/kafka/kafka.sh, on a free port with a data directory of its own), a
real PostgreSQL server for the sink's audit trail (deploy/postgres/postgres.sh, a database
per world) and a webhook receiver in this process that verifies every Standard Webhooks
signature and counts each webhook-id it is given.

A world is `lockstep simulate --minutes M --seed N --scale S`, followed by a tail of a few
clicks three hours of event time later (so the workers' watermark passes every window
`replay` closes at the end of its input: a stream has no end a worker could see);
`lockstep replay` of that same file gives the expected finding and action ids. The
workers (`lockstep worker`, on the project's default `rocksdb` store unless `--store`
says), the
sink (`lockstep sink --audit postgresql://... --config hooks.yaml`) and everything
`lockstep` here run from a copy of pipeline/, models/ and config/ taken when the
campaign starts, so edits made meanwhile change nothing mid-run; the copy's hash and the
git state are in the JSON.

The world is streamed into the input topics paced, in file order (routing and keys as
`lockstep produce`; an idempotent producer that resends a chunk the broker did not
acknowledge), so that every cycle happens mid-stream: cycle i's fault is injected once the
(i+1)/(n+1) share of the lines is on the broker, at a rate of one such share per cycle
(the mean of the cycles measured so far), and the stream waits half a share past the
next fault point if a cycle runs longer. A cycle injects its fault, waits for the
recovery, then waits (up to `CHECK_S`, or until nothing missing has turned up for
`STALL_S`) until every replay finding and action whose `ts` (the watermark that closed
its window) is `MARGIN_MS` behind the event time produced at recovery is on the findings
and actions topics, in the sink's findings.jsonl and actions.jsonl, in the audit trail
and (when the receiver is up) at the receiver.

Kinds: `kill` SIGKILLs one of two workers (in turn) and restarts it on its data directory;
`join` starts a second worker (a fresh data directory each time) beside the one running,
waits until both own input partitions, then stops it (SIGTERM) so the next cycle can join
again; `broker` restarts the broker (kafka.sh stop, then start on the same data
directory); `postgres` restarts the audit database (pg_ctl stop -m fast, start) while the
sink writes; `webhook` takes the receiver down (connection refused, or 503 on alternate
cycles) while one hour of event time passes through the workers' watermark, then back up
(the sink retries on the project's schedule compressed as the world's time is, `hook_schedule`)
(the stream waits 5 minutes of event time past each outage until its check is done);
a 6-hour world holds 4 such cycles, so its cycles are spread over worlds of seeds N, N+1,
... Every process the campaign starts is supervised as `restart: unless-stopped` would
(docker-compose.yml): one that exits is started again after a second, and counted.

At the end of each world: lost = replay ids missing from any place; divergent = ids in any
place that replay does not have; duplicated = ids more than once on the actions topic, in
findings.jsonl or actions.jsonl, or in the audit trail (and, reported on its own, on the
findings topic); webhooks delivered more than once per webhook-id are "redelivered" (the
at-least-once contract), a webhook-id never delivered is lost. Prints a table per kind and
writes everything to benchmarks/.data/faults-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
KINDS = ("kill", "join", "broker", "postgres", "webhook")
MINUTE = 60_000
HOUR = 60 * MINUTE
TAIL_MS = 3 * HOUR  # the tail's clicks come this long after the world's last event
MARGIN_MS = 10 * MINUTE  # a result this far behind the produced event time is due
CHECK_S = 300.0  # how long a cycle waits for its due results
FINAL_S = 900.0  # how long the end of a world waits for every result
STALL_S = 60.0  # ... unless no missing result has turned up for this long
EST_CYCLE_S = {"kill": 180.0, "join": 120.0, "broker": 120.0, "postgres": 60.0, "baseline": 1.0}
STAMP_RUN = 200  # lines whose median event time counts as the stream's, at their end
HOOK_CYCLES_PER_WORLD = 4
HOOK_FIRST_MS = 30 * MINUTE  # first outage starts this long after the world's start
HOOK_DOWN_MS = HOUR
HOOK_PERIOD_MS = 75 * MINUTE  # outage starts this far apart: an hour down, 15 min up
HOOK_WORLD_S = 240.0  # wall time a webhook world's stream is paced to
MIN_RATE = 20.0  # lines per second the producer is paced at least
PACE = {"max": 20_000.0}  # and at most (`--max-rate`)
BASELINE_RATE = float(os.environ.get("FAULTS_BASELINE_RATE", "5000"))  # no faults: this pace


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def free_port(pair: bool = False) -> int:
    """A free port (and, with `pair`, the next one free too: the broker's controller)."""
    if pair:
        from tests.kafka import free_port_pair

        return free_port_pair()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the code under test, frozen ------------------------------------------------------


def snapshot_code(dest: Path) -> dict[str, Any]:
    """pipeline/, models/ and config/ (as the package lockstep_config) copied to `dest`;
    their hash and the git state they came from."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, target in (
        ("pipeline", "pipeline"),
        ("models", "models"),
        ("config", "lockstep_config"),
    ):
        shutil.copytree(ROOT / name, dest / target, ignore=ignore)
    digest = hashlib.sha256()
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dest)).encode())
        digest.update(path.read_bytes())

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
        return proc.stdout.strip()

    dirty = git("status", "--short", "--", "pipeline", "models", "config").splitlines()
    return {"sha256": digest.hexdigest(), "git_head": git("rev-parse", "HEAD"), "dirty": dirty}


class Code:
    """How to run `lockstep` from the snapshot: environment and working directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        base = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}
        self.env = {**base, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", *args]

    def run(self, *args: str, timeout: float = 1800, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            self.argv(*args),
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"lockstep {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return proc.stderr

    def check(self) -> None:
        """The subprocesses import the snapshot, not the working tree."""
        proc = subprocess.run(
            [sys.executable, "-c", "import pipeline, lockstep_config, models; "
             "print(pipeline.__file__, lockstep_config.__file__, models.__file__)"],
            cwd=self.root, env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        for path in proc.stdout.split():
            if not Path(path).resolve().is_relative_to(self.root.resolve()):
                raise RuntimeError(f"the snapshot is not what runs: {path}")


# --- worlds -------------------------------------------------------------------------------


class _Peek(msgspec.Struct):
    ts: int | str | None = None


_peek = msgspec.json.Decoder(_Peek).decode


@dataclass
class World:
    seed: int
    path: Path
    lines: list[bytes]
    routes: list[tuple[str, bytes | None, int | None]]
    stamps: list[int]  # running maximum of event time up to each line
    start_ms: int
    end_ms: int
    findings: dict[str, dict[str, Any]]
    actions: dict[str, dict[str, Any]]
    replay_summary: dict[str, Any]
    prep_s: float

    def index_at(self, event_time: int) -> int:
        """The first line whose running event time reaches `event_time`."""
        lo, hi = 0, len(self.stamps)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.stamps[mid] < event_time:
                lo = mid + 1
            else:
                hi = mid
        return lo


def _ts(line: bytes) -> int | None:
    try:
        ts = _peek(line).ts
    except (msgspec.DecodeError, RecursionError):
        return None
    return ts if isinstance(ts, int) else None


def tail_lines(after_ms: int, partitions: int) -> list[bytes]:
    """Clicks from accounts of their own, `TAIL_MS` after `after_ms`, at least three (the
    jump confirmations) on every partition of the click topic."""
    from pipeline.distributed.topics import Topics

    topics = Topics("tail", partitions)
    per = Counter[int]()
    lines: list[bytes] = []
    k = 0
    while min(per[p] for p in range(partitions)) < 4 and k < 1000:
        event_id = f"faults-tail-{k:04d}"
        per[topics.partition_of(event_id)] += 1
        event = {
            "event_id": event_id,
            "type": "click",
            "ts": after_ms + TAIL_MS + k * 1000,
            "actor": f"faults-tail-{k}",
            "target": "faults-tail-owner",
            "content_id": "faults-tail-owner/p0",
        }
        lines.append(json.dumps(event, separators=(",", ":")).encode())
        k += 1
    return lines


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON lines file (a line still being written is skipped)."""
    if not path.exists():
        return []
    out = []
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def prepare_world(
    code: Code, seed: int, minutes: int, scale: float, partitions: int, home: Path
) -> World:
    """Simulate, add the tail, replay; the lines with their routes and event times."""
    from pipeline.distributed.produce import route

    started = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    raw, path = home / "simulated.jsonl", home / "world.jsonl"
    code.run(
        "simulate", "--minutes", str(minutes), "--seed", str(seed), "--scale", str(scale),
        "--out", str(raw), "--labels", str(home / "labels.json"),
    )  # fmt: skip
    lines = [line.rstrip(b"\r\n") for line in raw.read_bytes().splitlines()]
    lines = [line for line in lines if line]
    raw.unlink()
    # the world's span, from its labels: the simulator also writes a few lines with a
    # wrong clock, which must not count as the stream's event time
    labels = json.loads((home / "labels.json").read_text())
    first, last = int(labels["start"]), int(labels["end"])
    # and a few with a clock ahead inside it (the gate waits for confirmations of such a
    # jump): the stream's event time is the running maximum of the median of each run of
    # `STAMP_RUN` lines
    stamps: list[int] = []
    latest = first
    for start in range(0, len(lines), STAMP_RUN):
        run = lines[start : start + STAMP_RUN]
        times = sorted(t for t in map(_ts, run) if t is not None and first <= t <= last)
        if times:
            latest = max(latest, times[len(times) // 2])
        stamps.extend([latest] * len(run))
    tail = tail_lines(latest, partitions)
    for line in tail:
        latest = max(latest, _ts(line) or 0)
        stamps.append(latest)
    end_ms = stamps[len(lines) - 1]
    lines += tail
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    code.run("replay", str(path), "--out", str(home / "replay"))
    findings = {
        f["finding_id"]: {
            "ts": f["ts"],
            "detector": f["detector"],
            "subject": f["subject_id"],
            "window_end": f["window_end"],
        }
        for f in read_jsonl(home / "replay" / "findings.jsonl")
    }
    actions = {
        a["action_id"]: {
            "ts": a["ts"],
            "action": a["action"],
            "mode": a["mode"],
            "subject": a["subject_id"],
            "findings": a["finding_ids"],
        }
        for a in read_jsonl(home / "replay" / "actions.jsonl")
    }
    summary = json.loads((home / "replay" / "summary.json").read_text())
    return World(
        seed=seed,
        path=path,
        lines=lines,
        routes=[route(line) for line in lines],
        stamps=stamps,
        start_ms=first,
        end_ms=end_ms,
        findings=findings,
        actions=actions,
        replay_summary={
            k: summary.get(k) for k in ("inputs", "events", "duplicates", "late_events")
        },
        prep_s=time.monotonic() - started,
    )


# --- services -------------------------------------------------------------------------------


class Kafka:
    """A broker of our own (tests/kafka.py `Broker`); a restart keeps its data."""

    def __init__(self, home: Path) -> None:
        from tests.kafka import Broker

        self.broker = Broker(free_port(pair=True), home, initial_rebalance_delay_ms=3000)
        self.bootstrap = self.broker.bootstrap

    def start(self) -> None:
        self.broker.start()

    def restart(self) -> float:
        """kafka.sh stop (SIGTERM, clean shutdown), then start on the same data directory;
        seconds the broker was away."""
        started = time.monotonic()
        proc = self.broker.run("stop", timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"kafka.sh stop failed: {proc.stderr}")
        self.start()
        return time.monotonic() - started

    def clean(self) -> None:
        self.broker.stop()  # kafka.sh clean


class Postgres:
    """A PostgreSQL server of our own (tests/postgres.py `Server`), a database per world."""

    def __init__(self) -> None:
        from tests.postgres import Server

        self.server = Server(free_port())
        self.url = ""

    def start(self) -> None:
        self.server.start()
        self.url = self.server.url

    def restart(self, down_s: float) -> float:
        """pg_ctl stop -m fast, `down_s` later start; seconds it was away."""
        started = time.monotonic()
        self.server.stop()
        time.sleep(down_s)
        self.server.start()
        return time.monotonic() - started

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name

    def clean(self) -> None:
        self.server.stop()
        shutil.rmtree(self.server.home, ignore_errors=True)


class Receiver:
    """The webhook receiver: verifies each Standard Webhooks signature and counts every
    webhook-id per path (one path per world). Up, refusing connections, or answering
    503."""

    def __init__(self, secret: str) -> None:
        from standardwebhooks import Webhook

        self.webhook = Webhook(secret)
        self.lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = {}
        self.rejected: Counter[str] = Counter()  # forged, stale or not matching, by reason
        self.answered_503 = 0
        self.mode = "up"
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self._listen()

    def _listen(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.take(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        for _ in range(100):
            try:
                self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"the receiver cannot listen on {self.port} again")
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if self.mode == "503":
            with self.lock:
                self.answered_503 += 1
            handler.send_response(503)
            handler.end_headers()
            return
        headers = {k.lower(): v for k, v in handler.headers.items()}
        webhook_id = headers.get("webhook-id", "")
        try:
            event = self.webhook.verify(body, headers)
            if event.get("id") != webhook_id:
                raise ValueError("the CloudEvent id is not the webhook-id")
        except Exception as exc:
            with self.lock:
                self.rejected[type(exc).__name__] += 1
            handler.send_response(400)
            handler.end_headers()
            return
        with self.lock:
            self.counts.setdefault(handler.path, Counter())[webhook_id] += 1
        handler.send_response(204)
        handler.end_headers()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self, path: str) -> Counter[str]:
        with self.lock:
            return Counter(self.counts.get(path, {}))

    def refuse(self) -> None:
        """Stop listening: connections are refused."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.mode = "refused"

    def unavailable(self) -> None:
        self.mode = "503"

    def up(self) -> None:
        if self.server is None:
            self._listen()
        self.mode = "up"

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Proc:
    """A `lockstep` process, supervised: one that exits without being told to is started
    again a second later (docker-compose's `restart: unless-stopped`)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, logs: Path):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = logs / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.held = True  # not supervised until started
        self.restarts: list[tuple[float, int]] = []  # (when, exit code) of unbidden exits
        self.started_at = 0.0
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            log_file = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
            log_file.write(f"--- start {datetime.datetime.now().isoformat()}\n".encode())
            log_file.flush()
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log_file.close()
            self.started_at = time.monotonic()
            self.held = False

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def supervise(self) -> None:
        with self.lock:
            if self.held or self.popen is None or self.popen.poll() is None:
                return
            code = self.popen.returncode
        self.restarts.append((time.monotonic(), code))
        log(f"{self.name} exited with {code}; the supervisor starts it again in 1 s")
        time.sleep(1.0)
        with self.lock:
            if self.held:
                return
        self.start()

    def kill(self) -> None:
        """SIGKILL, unsupervised until started again."""
        with self.lock:
            self.held = True
            if self.popen is not None and self.popen.poll() is None:
                self.popen.send_signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=30)

    def dump_stacks(self) -> None:
        """Where a process that will not stop is stuck: every thread's stack, appended to
        its log (py-spy, if installed; `pip install py-spy`)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if self.popen is None or not Path(spy).exists():
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            proc = subprocess.run(
                [spy, "dump", "--pid", str(self.popen.pid)],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            with open(self.log_path, "a") as log_file:
                log_file.write(f"--- stacks (py-spy) while ignoring SIGTERM\n{proc.stdout}\n")

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM and wait (SIGKILL after `timeout`); seconds it took."""
        started = time.monotonic()
        with self.lock:
            self.held = True
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} ignored SIGTERM for {timeout:g} s: SIGKILL")
                self.dump_stacks()
                self.popen.kill()
                self.popen.wait(timeout=30)
        return time.monotonic() - started


class Supervisor:
    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        while not self.stopping.wait(0.5):
            for proc in list(self.procs):
                try:
                    proc.supervise()
                except Exception as exc:  # never let supervision die
                    log(f"supervisor: {proc.name}: {exc}")

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


# --- the paced producer ------------------------------------------------------------------


class Producer:
    """The world's lines onto the input topics, in file order, at `rate` lines per second,
    never past `limit`, from a thread of its own. A chunk counts as sent once the broker
    has acknowledged all of it; a chunk that fails (the broker is away) is sent again."""

    CHUNK_S = 0.2
    MAX_CHUNK = 5_000

    def __init__(self, world: World, bootstrap: str, prefix: str, partitions: int) -> None:
        from pipeline.core.settings import load_settings
        from pipeline.distributed.topics import Topics

        self.world = world
        self.bootstrap = bootstrap
        self.topics = Topics(prefix, partitions)
        # in flight together: at most half the lateness of event time, as `lockstep produce`
        self.span_ms = load_settings().event_time.allowed_lateness_ms // 2
        self.rate = 0.0
        self.limit = len(world.lines)
        self.sent = 0
        self.failures = 0
        self.resent = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True, name="producer")

    @property
    def event_time(self) -> int:
        return self.world.stamps[self.sent - 1] if self.sent else 0

    @property
    def done(self) -> bool:
        return self.sent >= len(self.world.lines)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)

    def _main(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # said by the controller
            self.error = exc

    async def _produce(self) -> None:
        from aiokafka import AIOKafkaProducer

        from pipeline.distributed.produce import OrderedSends
        from pipeline.distributed.topics import ensure_topics

        await ensure_topics(self.bootstrap, self.topics.inputs, self.topics.partitions)
        lines, routes = self.world.lines, self.world.routes
        producer: AIOKafkaProducer | None = None
        credit, last = 0.0, time.monotonic()
        try:
            while not self.stopping.is_set() and not self.done:
                now = time.monotonic()
                credit = min(credit + self.rate * (now - last), self.rate * 30 + 1)
                last = now
                n = min(int(credit), self.limit - self.sent, self.MAX_CHUNK)
                if n <= 0:
                    await asyncio.sleep(self.CHUNK_S / 2)
                    continue
                try:
                    if producer is None:
                        producer = AIOKafkaProducer(
                            bootstrap_servers=self.bootstrap,
                            acks="all",
                            enable_idempotence=True,
                            linger_ms=10,
                            max_batch_size=1 << 20,
                            request_timeout_ms=20_000,
                        )
                        await producer.start()
                    sends = OrderedSends(producer, self.span_ms)
                    for i in range(self.sent, self.sent + n):
                        kind, key, ts = routes[i]
                        await sends.send(self.topics.input(kind), lines[i], key, ts)
                        if i % 200 == 0:
                            await asyncio.sleep(0)  # the client's sender goes on meanwhile
                    await sends.drain()
                except Exception as exc:
                    self.failures += 1
                    self.resent += n
                    log(f"producer: a chunk of {n} lines failed ({type(exc).__name__}); again")
                    if producer is not None:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                    producer = None
                    await asyncio.sleep(1.0)
                    continue
                self.sent += n
                credit -= n
                await asyncio.sleep(max(0.0, self.CHUNK_S - (time.monotonic() - now)))
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()


# --- what came out -----------------------------------------------------------------------


@dataclass
class Seen:
    """Ids by place, each with how often it was there."""

    findings: dict[str, Counter[str]] = field(default_factory=dict)
    actions: dict[str, Counter[str]] = field(default_factory=dict)


FINDING_PLACES = ("topic", "findings.jsonl", "audit")
ACTION_PLACES = ("topic", "actions.jsonl", "audit", "webhooks")


class Outputs:
    """Reads every place results reach: the findings and actions topics, the sink's JSON
    lines files, the audit trail and the receiver; a place that cannot be read now (its
    service is restarting) keeps what it showed last."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.last = Seen(
            findings={p: Counter() for p in FINDING_PLACES},
            actions={p: Counter() for p in ACTION_PLACES},
        )

    def _topic(self, topic: str, id_field: str) -> Counter[str] | None:
        from pipeline.distributed.kafka_io import read_to_end

        try:
            records = asyncio.run(
                asyncio.wait_for(
                    read_to_end(self.run.kafka.bootstrap, topic, self.run.partitions, wait_s=5),
                    timeout=60,
                )
            )
        except Exception:
            return None
        return Counter(json.loads(r.value)[id_field] for r in records)

    def dead_letters(self) -> dict[str, Any]:
        """The workers' dead letters by reason, and a few of the late ones."""
        from pipeline.distributed.kafka_io import read_to_end

        try:
            records = asyncio.run(
                read_to_end(
                    self.run.kafka.bootstrap, self.run.topics.dead_letters, self.run.partitions
                )
            )
        except Exception as exc:
            return {"error": repr(exc)}
        letters = [json.loads(r.value) for r in records]
        late = [d for d in letters if d["reason"] == "late"]
        return {
            "by_reason": dict(Counter(d["reason"] for d in letters)),
            "late_by_stage": dict(Counter(d["source"].rsplit(":", 2)[0] for d in late)),
            "late_examples": [(d["source"], d["detail"]) for d in late[:5]],
        }

    def _audit(self) -> tuple[Counter[str], Counter[str]] | None:
        import psycopg

        try:
            with psycopg.connect(self.run.audit_url, connect_timeout=3) as db:
                rows = db.execute("SELECT kind, record_id FROM audit").fetchall()
        except psycopg.Error:
            return None
        findings, actions = Counter[str](), Counter[str]()
        for kind, record_id in rows:
            (findings if kind == "finding" else actions)[record_id] += 1
        return findings, actions

    def read(self) -> Seen:
        run, last = self.run, self.last
        topics = run.topics
        got = self._topic(topics.findings, "finding_id")
        if got is not None:
            last.findings["topic"] = got
        got = self._topic(topics.actions, "action_id")
        if got is not None:
            last.actions["topic"] = got
        last.findings["findings.jsonl"] = Counter(
            f["finding_id"] for f in read_jsonl(run.out / "findings.jsonl")
        )
        last.actions["actions.jsonl"] = Counter(
            a["action_id"] for a in read_jsonl(run.out / "actions.jsonl")
        )
        trail = self._audit()
        if trail is not None:
            last.findings["audit"], last.actions["audit"] = trail
        last.actions["webhooks"] = run.receiver.delivered(run.hook_path)
        return Seen(
            findings={k: Counter(v) for k, v in last.findings.items()},
            actions={k: Counter(v) for k, v in last.actions.items()},
        )

    def outbox(self) -> dict[str, Any]:
        path = self.run.out / "webhook_outbox.sqlite"
        if not path.exists():
            return {}
        with contextlib.closing(sqlite3.connect(path)) as db:
            counts = dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
            dead = db.execute(
                "SELECT webhook_id, attempts, error FROM outbox WHERE state = 'dead' LIMIT 20"
            ).fetchall()
            attempts = db.execute("SELECT MAX(attempts) FROM outbox").fetchone()[0]
        return {"states": counts, "dead": dead, "max_attempts": attempts}


def missing(seen: Seen, findings: Iterable[str], actions: Iterable[str], places: tuple[str, ...]):
    """The wanted ids each place does not have yet."""
    findings, actions = set(findings), set(actions)
    out: dict[str, list[str]] = {}
    for place in FINDING_PLACES:
        gone = findings - seen.findings[place].keys()
        if gone:
            out[f"findings@{place}"] = sorted(gone)
    for place in places:
        gone = actions - seen.actions[place].keys()
        if gone:
            out[f"actions@{place}"] = sorted(gone)
    return out


# --- one world through the pipeline ---------------------------------------------------------


@dataclass
class Services:
    kafka: Kafka
    postgres: Postgres
    receiver: Receiver
    secret: str
    store: str


class Run:
    """One world's pipeline: its topics (a prefix of its own), workers, sink, database."""

    def __init__(
        self, kind: str, world: World, services: Services, code: Code, home: Path, partitions: int
    ) -> None:
        from pipeline.distributed.topics import Topics

        self.kind, self.world, self.code, self.home = kind, world, code, home
        self.kafka, self.postgres, self.receiver = (
            services.kafka,
            services.postgres,
            services.receiver,
        )
        self.partitions = partitions
        self.store = services.store
        self.prefix = f"faults-{kind}-s{world.seed}-{os.getpid()}-{int(time.time()) % 100000}"
        self.topics = Topics(self.prefix, partitions)
        home.mkdir(parents=True, exist_ok=True)
        self.logs = home / "logs"
        self.logs.mkdir(exist_ok=True)
        self.out = home / "sink"
        self.audit_url = self.postgres.database(self.prefix.replace("-", "_"))
        self.hook_path = f"/{self.prefix}"
        config = home / "hooks.yaml"
        config.write_text(
            "webhooks:\n"
            f'  endpoints: [{{url: "{self.receiver.url(self.hook_path)}", '
            'secret: "env:FAULTS_HOOK_SECRET"}]\n'
            f"  retry_schedule_s: {json.dumps(hook_schedule(world, code))}\n"
        )
        self.env = {
            **code.env,
            "LOCKSTEP_KAFKA_BROKER": self.kafka.bootstrap,
            "LOCKSTEP_TOPIC_PREFIX": self.prefix,
            "LOCKSTEP_PARTITIONS": str(partitions),
            "FAULTS_HOOK_SECRET": services.secret,
        }
        self.supervisor = Supervisor()
        self.workers: dict[str, Proc] = {}
        self.metrics_ports: dict[str, int] = {}
        self.sink = self.supervisor.add(
            Proc(
                "sink",
                code.argv(
                    "sink", "--out", str(self.out), "--audit", self.audit_url,
                    "--config", str(config),
                ),
                self.env, code.root, self.logs,
            )
        )  # fmt: skip
        self.outputs = Outputs(self)
        self.producer = Producer(world, self.kafka.bootstrap, self.prefix, partitions)
        self.watermark_seen = 0

    def worker(self, name: str, fresh_dir: str | None = None) -> Proc:
        """The worker `name` (created on first use; `fresh_dir` names a new data
        directory), started."""
        proc = self.workers.get(name)
        if proc is None or fresh_dir is not None:
            port = self.metrics_ports.setdefault(name, free_port())
            data_dir = self.home / "workers" / (fresh_dir or name)
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            env = {**self.env, "LOCKSTEP_DATA_DIR": str(data_dir), "LOCKSTEP_STORE": self.store}
            argv = self.code.argv("worker", "--metrics-port", str(port))
            proc = Proc(name, argv, env, self.code.root, self.logs)
            if name not in self.workers:
                self.supervisor.add(proc)
            else:
                index = self.supervisor.procs.index(self.workers[name])
                self.supervisor.procs[index] = proc
            self.workers[name] = proc
        proc.start()
        return proc

    def scrape(self, name: str) -> str:
        url = f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            return ""

    def owns_inputs(self, name: str) -> bool:
        return "lockstep_consumer_lag_records{" in self.scrape(name)

    def watermark(self) -> int:
        """The highest event-time watermark any live worker reports, never going back."""
        for name, proc in self.workers.items():
            if not proc.alive():
                continue
            for line in self.scrape(name).splitlines():
                if line.startswith("lockstep_watermark_timestamp_seconds "):
                    mark = int(float(line.split()[1]) * 1000)
                    self.watermark_seen = max(self.watermark_seen, mark)
        return self.watermark_seen

    def wait_owning(self, names: list[str], timeout: float = 300, steady_s: float = 3) -> float:
        """Until each of `names` owns input partitions, steadily; seconds it took."""
        started = time.monotonic()
        since = None
        while time.monotonic() - started < timeout:
            self.raise_if_broken()
            if all(self.workers[n].alive() and self.owns_inputs(n) for n in names):
                since = since or time.monotonic()
                if time.monotonic() - since >= steady_s:
                    return time.monotonic() - started
            else:
                since = None
            time.sleep(0.5)
        raise RuntimeError(f"workers {names} did not own input partitions in {timeout:g} s")

    def raise_if_broken(self) -> None:
        if self.producer.error is not None:
            raise RuntimeError(f"the producer stopped: {self.producer.error!r}")

    def due(self, event_time: int) -> tuple[list[str], list[str]]:
        """Replay's finding and action ids whose windows closed `MARGIN_MS` before
        `event_time`."""
        limit = event_time - MARGIN_MS
        w = self.world
        return (
            [i for i, f in w.findings.items() if f["ts"] <= limit],
            [i for i, a in w.actions.items() if a["ts"] <= limit],
        )

    def wait_for(
        self,
        findings: list[str],
        actions: list[str],
        timeout: float,
        hooks: bool = True,
    ) -> tuple[float, dict[str, list[str]], Seen]:
        """Until every wanted id is in every place (the receiver's only with `hooks`);
        (seconds, what is still missing, the last reading)."""
        places = ACTION_PLACES if hooks else ACTION_PLACES[:-1]
        started = time.monotonic()
        fewest, progress_at = None, started
        while True:
            self.raise_if_broken()
            seen = self.outputs.read()
            gone = missing(seen, findings, actions, places)
            left = sum(map(len, gone.values()))
            now = time.monotonic()
            if fewest is None or left < fewest:
                fewest, progress_at = left, now
            if not gone or now - started > timeout or now - progress_at > STALL_S:
                return now - started, gone, seen
            time.sleep(2.0)

    def close(self) -> dict[str, float]:
        """Stop the sink and the workers (SIGTERM); seconds each took."""
        if self.producer.thread.is_alive():
            self.producer.stop()
        took = {}
        for proc in [*self.workers.values(), self.sink]:
            if proc.popen is not None:
                took[proc.name] = proc.stop()
        self.supervisor.close()
        return took

    def restarts(self) -> dict[str, int]:
        return {p.name: len(p.restarts) for p in self.supervisor.procs if p.restarts}


# --- cycles ---------------------------------------------------------------------------------


@dataclass
class Cycle:
    index: int
    fault: str
    event_time: int  # produced event time at injection (ms)
    injected_at_line: int
    recover_s: float
    consistent_s: float
    due_findings: int
    due_actions: int
    missing: dict[str, list[str]]
    divergent: dict[str, list[str]]
    wall_s: float
    note: str = ""


def divergent(seen: Seen, world: World) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for place, ids in seen.findings.items():
        extra = sorted(ids.keys() - world.findings.keys())
        if extra:
            out[f"findings@{place}"] = extra
    for place, ids in seen.actions.items():
        extra = sorted(ids.keys() - world.actions.keys())
        if extra:
            out[f"actions@{place}"] = extra
    return out


def inject(run: Run, kind: str, i: int) -> tuple[float, str]:
    """Inject cycle i's fault and wait for the recovery; (seconds, what happened)."""
    started = time.monotonic()
    if kind == "kill":
        name = ("w1", "w2")[i % 2]
        victim = run.workers[name]
        pid = victim.pid
        victim.kill()
        run.worker(name)  # the supervisor's restart, at once
        run.wait_owning(["w1", "w2"])
        return time.monotonic() - started, f"SIGKILL {name} (pid {pid})"
    if kind == "join":
        run.worker("w2", fresh_dir=f"w2-join{i}")
        joined = run.wait_owning(["w1", "w2"])
        time.sleep(5.0)  # both at work for a while
        left = run.workers["w2"].stop()
        run.wait_owning(["w1"])
        return time.monotonic() - started, f"w2 joined in {joined:.1f} s, left in {left:.1f} s"
    if kind == "broker":
        away = run.kafka.restart()
        run.wait_owning(list(run.workers))
        return time.monotonic() - started, f"broker away {away:.1f} s"
    if kind == "postgres":
        away = run.postgres.restart(down_s=3.0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            run.sink.alive() and time.monotonic() - run.sink.started_at > 3
        ):
            time.sleep(0.5)
        return time.monotonic() - started, f"database away {away:.1f} s"
    raise ValueError(kind)


def set_pace(run: Run, lines_left: int, seconds: float) -> None:
    run.producer.rate = max(MIN_RATE, min(PACE["max"], lines_left / max(seconds, 1.0)))


def run_cycles(run: Run, kind: str, n: int) -> list[Cycle]:
    """Time-driven kinds: cycle i once the (i+1)/(n+1) share of the lines is out."""
    world, producer = run.world, run.producer
    total = len(world.lines)
    points = [total * (i + 1) // (n + 1) for i in range(n)]
    estimate = EST_CYCLE_S[kind]
    durations: list[float] = []
    slice_ = total // (n + 1)
    # never more than half a slice past the next fault point: every cycle is mid-stream
    # even when one takes far longer than the estimate (the stream waits there)
    set_pace(run, slice_, estimate)
    producer.limit = min(total - slice_ // 2, points[1] + slice_ // 2) if n > 1 else total
    producer.start()
    cycles = []
    for i in range(n):
        while producer.sent < points[i]:
            run.raise_if_broken()
            time.sleep(0.2)
        producer.limit = points[i + 2] + slice_ // 2 if i + 2 < n else total - slice_ // 2
        started = time.monotonic()
        at_line, event_time = producer.sent, producer.event_time
        recover_s, note = inject(run, kind, i)
        due_f, due_a = run.due(producer.event_time)
        consistent_s, gone, seen = run.wait_for(due_f, due_a, CHECK_S)
        wall = time.monotonic() - started
        cycle = Cycle(
            i + 1, kind, event_time, at_line, recover_s, consistent_s, len(due_f), len(due_a),
            gone, divergent(seen, world), wall, note,
        )  # fmt: skip
        cycles.append(cycle)
        durations.append(wall)
        estimate = sum(durations) / len(durations)
        set_pace(run, slice_, estimate)  # a slice per cycle
        if i + 1 == n:
            producer.limit = total
        log(
            f"{kind} {i + 1}/{n}: {note}; recovered {recover_s:.1f} s, due results everywhere "
            f"{consistent_s:.1f} s ({len(due_f)} findings, {len(due_a)} actions); "
            f"missing {sum(map(len, gone.values()))}, divergent "
            f"{sum(map(len, cycle.divergent.values()))}; line {at_line:,}/{total:,}, "
            f"rate {producer.rate:,.0f}/s"
        )
    set_pace(run, total - producer.sent, max(estimate, 10.0))
    return cycles


def run_webhook_cycles(run: Run, n: int) -> list[Cycle]:
    """The receiver down while an hour of event time passes through the workers'
    watermark, then up; cycles `HOOK_PERIOD_MS` apart."""
    world, producer, receiver = run.world, run.producer, run.receiver
    total = len(world.lines)
    set_pace(run, total, HOOK_WORLD_S)
    starts = [world.start_ms + HOOK_FIRST_MS + k * HOOK_PERIOD_MS for k in range(n)]
    producer.start()
    cycles = []
    for k, down_at in enumerate(starts):
        # the stream goes on past this outage's hour, no further until its check is done
        past = down_at + HOOK_DOWN_MS + 5 * MINUTE
        producer.limit = world.index_at(past) if k + 1 < n else total
        while run.watermark() < down_at:
            run.raise_if_broken()
            time.sleep(0.2)
        started = time.monotonic()
        at_line, event_time = producer.sent, producer.event_time
        how = "refused" if k % 2 == 0 else "503"
        if how == "refused":
            receiver.refuse()
        else:
            receiver.unavailable()
        while run.watermark() < down_at + HOOK_DOWN_MS:
            run.raise_if_broken()
            time.sleep(0.2)
        receiver.up()
        down_s = time.monotonic() - started
        due_f, due_a = run.due(producer.event_time)
        consistent_s, gone, seen = run.wait_for(due_f, due_a, CHECK_S)
        wall = time.monotonic() - started
        outbox = run.outputs.outbox()
        note = (
            f"receiver {how} for {down_s:.1f} s (watermark {_clock(down_at)} to "
            f"{_clock(down_at + HOOK_DOWN_MS)}); outbox max attempts "
            f"{outbox.get('max_attempts')}, states {outbox.get('states')}"
        )
        cycle = Cycle(
            k + 1, "webhook", event_time, at_line, down_s, consistent_s, len(due_f), len(due_a),
            gone, divergent(seen, world), wall, note,
        )  # fmt: skip
        cycles.append(cycle)
        log(
            f"webhook {k + 1}/{n} (seed {world.seed}): {note}; due results everywhere "
            f"{consistent_s:.1f} s later ({len(due_a)} actions); missing "
            f"{sum(map(len, gone.values()))}, divergent {sum(map(len, cycle.divergent.values()))}"
        )
    producer.limit = total
    return cycles


def hook_schedule(world: World, code: Code) -> list[float]:
    """The snapshot's retry schedule, compressed as the webhook worlds compress event time
    (their 6 hours pass in `HOOK_WORLD_S`): an outage of an hour of event time meets the
    retries a receiver down for an hour meets in production."""
    import yaml

    config = yaml.safe_load((code.root / "lockstep_config" / "lockstep.yaml").read_text())
    squeeze = (world.end_ms - world.start_ms) / 1000 / HOOK_WORLD_S
    return [round(s / squeeze, 3) for s in config["webhooks"]["retry_schedule_s"]]


def _clock(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%H:%M")


@dataclass
class WorldResult:
    seed: int
    prefix: str
    cycles: list[Cycle]
    expected_findings: int
    expected_actions: int
    final: dict[str, Any]
    wall_s: float
    prep_s: float


def run_world(
    kind: str, world: World, services: Services, code: Code, home: Path, partitions: int, n: int
) -> WorldResult:
    started = time.monotonic()
    run = Run(kind, world, services, code, home, partitions)
    log(
        f"{kind}: world seed {world.seed}, {len(world.lines):,} lines, replay "
        f"{len(world.findings)} findings / {len(world.actions)} actions; topics {run.prefix}.*"
    )
    final: dict[str, Any] = {}
    try:
        run.sink.start()
        first = ["w1"] if kind == "join" else ["w1", "w2"]
        for name in first:
            run.worker(name)
        run.wait_owning(first, timeout=300)
        if kind == "webhook":
            cycles = run_webhook_cycles(run, n)
        elif kind == "baseline":
            run.producer.rate = BASELINE_RATE
            run.producer.start()
            cycles = []
        else:
            cycles = run_cycles(run, kind, n)
        while not run.producer.done:
            run.raise_if_broken()
            time.sleep(0.5)
        produced_s = time.monotonic() - started
        everything_s, gone, seen = run.wait_for(list(world.findings), list(world.actions), FINAL_S)
        time.sleep(10.0)  # anything extra, or twice, shows up now
        seen = run.outputs.read()
        final.update(tally(seen, world))
        final.update(
            produced_s=produced_s,
            everything_s=everything_s,
            missing_at_end={k: v[:50] for k, v in gone.items()},
            outbox=run.outputs.outbox(),
            restarts=run.restarts(),
            producer_failures=run.producer.failures,
            producer_resent_lines=run.producer.resent,
            receiver_rejected=dict(services.receiver.rejected),
            audit_chain=verify_chain(run.audit_url),
            dead_letters=run.outputs.dead_letters(),
        )
    finally:
        final["stop_s"] = run.close()
    wall = time.monotonic() - started
    log(f"{kind}: world seed {world.seed} done in {wall:.0f} s: {summary_line(final)}")
    return WorldResult(
        world.seed, run.prefix, cycles, len(world.findings), len(world.actions), final, wall,
        world.prep_s,
    )  # fmt: skip


def verify_chain(url: str) -> dict[str, Any]:
    from pipeline.enforcement.audit import open_audit

    for _ in range(30):
        try:
            trail = open_audit(url)
            break
        except Exception:
            time.sleep(1)
    else:
        return {"error": "cannot open"}
    try:
        checked, problem = trail.verify()
    finally:
        trail.close()
    return {"records": checked, "broken": problem}


def tally(seen: Seen, world: World) -> dict[str, Any]:
    """Lost, duplicated, divergent by place, over a world's final reading."""
    out: dict[str, Any] = {"findings": {}, "actions": {}}
    for what, places, wanted in (
        ("findings", seen.findings, world.findings),
        ("actions", seen.actions, world.actions),
    ):
        lost, dup, extra = set(), {}, set()
        for place, ids in places.items():
            gone = set(wanted) - ids.keys()
            lost |= gone
            twice = {i: n for i, n in ids.items() if n > 1}
            dup[place] = twice
            extra |= ids.keys() - wanted.keys()
            out[what][place] = {
                "distinct": len(ids),
                "records": sum(ids.values()),
                "lost": sorted(gone)[:50],
                "lost_count": len(gone),
                "more_than_once": len(twice),
                "more_than_once_ids": dict(sorted(twice.items())[:50]),
                "divergent": sorted(ids.keys() - wanted.keys())[:50],
                "divergent_count": len(ids.keys() - wanted.keys()),
            }
        out[what]["expected"] = len(wanted)
        out[what]["seen"] = len(places["topic"].keys() & wanted.keys())
        out[what]["lost"] = len(lost)
        out[what]["lost_ids"] = [_describe(world, what, i) for i in sorted(lost)[:50]]
        out[what]["divergent"] = len(extra)
        # webhooks more than once are redeliveries (at least once), counted apart; the
        # findings topic is reported apart too (see the module's docstring)
        must_once = [p for p in places if p not in ("webhooks", "topic")]
        if what == "actions":
            must_once.append("topic")
        out[what]["duplicated"] = len(set().union(*(dup[p].keys() for p in must_once)))
    out["findings_topic_repeats"] = len(dup_ids(seen.findings["topic"]))
    out["webhooks_redelivered"] = len(dup_ids(seen.actions["webhooks"]))
    out["webhooks_delivered"] = len(seen.actions["webhooks"].keys() & world.actions.keys())
    out["webhooks_never"] = len(world.actions.keys() - seen.actions["webhooks"].keys())
    out["audit_records"] = sum(seen.findings["audit"].values()) + sum(
        seen.actions["audit"].values()
    )
    return out


def dup_ids(ids: Counter[str]) -> list[str]:
    return [i for i, n in ids.items() if n > 1]


def _describe(world: World, what: str, record_id: str) -> str:
    if what == "findings":
        f = world.findings[record_id]
        return f"{record_id} {f['detector']}:{f['subject']} window_end {_clock(f['window_end'])}"
    a = world.actions[record_id]
    return f"{record_id} {a['action']}({a['mode']}) {a['subject']} ts {_clock(a['ts'])}"


def summary_line(final: dict[str, Any]) -> str:
    f, a = final["findings"], final["actions"]
    return (
        f"findings {f['seen']}/{f['expected']} lost {f['lost']} dup {f['duplicated']} "
        f"div {f['divergent']}; actions {a['seen']}/{a['expected']} lost {a['lost']} "
        f"dup {a['duplicated']} div {a['divergent']}; webhooks never {final['webhooks_never']} "
        f"redelivered {final['webhooks_redelivered']}; restarts {final['restarts']}"
    )


# --- a kind -----------------------------------------------------------------------------------


def run_kind(
    kind: str,
    args: argparse.Namespace,
    code: Code,
    home: Path,
    worlds: Callable[[int], World],
) -> dict[str, Any]:
    started = time.monotonic()
    if kind == "webhook":
        seeds = [args.seed + k for k in range(math.ceil(args.cycles / HOOK_CYCLES_PER_WORLD))]
        per_world = [
            min(HOOK_CYCLES_PER_WORLD, args.cycles - k * HOOK_CYCLES_PER_WORLD)
            for k in range(len(seeds))
        ]
    elif kind == "baseline":
        seeds, per_world = [args.seed], [0]
    else:
        seeds, per_world = [args.seed], [args.cycles]
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    kafka = Kafka(home / "kafka")
    postgres = Postgres()
    receiver = Receiver(secret)
    results: list[WorldResult] = []
    prep = 0.0
    try:
        kafka.start()
        postgres.start()
        services = Services(kafka, postgres, receiver, secret, args.store)
        for seed, n in zip(seeds, per_world, strict=True):
            before = time.monotonic()
            world = worlds(seed)
            prep += time.monotonic() - before
            results.append(
                run_world(kind, world, services, code, home / f"seed{seed}", args.partitions, n)
            )
    finally:
        receiver.close()
        with contextlib.suppress(Exception):
            postgres.clean()
        with contextlib.suppress(Exception):
            if args.keep:
                kafka.broker.run("stop", timeout=120)
            else:
                kafka.clean()
    wall = time.monotonic() - started
    return {
        "kind": kind,
        "seeds": seeds,
        "cycles": sum(len(r.cycles) for r in results),
        "wall_s": wall,
        "prep_s": prep,
        "worlds": [world_json(r) for r in results],
        "row": kind_row(kind, results, wall, prep),
    }


def world_json(r: WorldResult) -> dict[str, Any]:
    return {
        "seed": r.seed,
        "prefix": r.prefix,
        "expected_findings": r.expected_findings,
        "expected_actions": r.expected_actions,
        "wall_s": r.wall_s,
        "prep_s": r.prep_s,
        "final": r.final,
        "cycles": [c.__dict__ for c in r.cycles],
    }


def kind_row(kind: str, results: list[WorldResult], wall: float, prep: float) -> dict[str, Any]:
    def total(what: str, key: str) -> int:
        return sum(r.final[what][key] for r in results)

    cycles = [c for r in results for c in r.cycles]
    return {
        "kind": kind,
        "worlds": len(results),
        "cycles": len(cycles),
        "findings": {k: total("findings", k) for k in ("expected", "seen", "lost")}
        | {k: total("findings", k) for k in ("duplicated", "divergent")},
        "actions": {k: total("actions", k) for k in ("expected", "seen", "lost")}
        | {k: total("actions", k) for k in ("duplicated", "divergent")},
        "findings_topic_repeats": sum(r.final["findings_topic_repeats"] for r in results),
        "cycle_missing": sum(1 for c in cycles if c.missing),
        "cycle_divergent": sum(1 for c in cycles if c.divergent),
        "max_consistent_s": max((c.consistent_s for c in cycles), default=0.0),
        "audit_records": sum(r.final["audit_records"] for r in results),
        "audit_chain_ok": all(r.final["audit_chain"].get("broken") is None for r in results),
        "webhooks_delivered": sum(r.final["webhooks_delivered"] for r in results),
        "webhooks_redelivered": sum(r.final["webhooks_redelivered"] for r in results),
        "webhooks_never": sum(r.final["webhooks_never"] for r in results),
        "restarts": sum(sum(r.final["restarts"].values()) for r in results),
        "wall_s": wall,
        "prep_s": prep,
    }


HEADER = (
    "| kind | worlds | cycles | findings exp / seen / lost / dup / div | "
    "actions exp / seen / lost / dup / div | audit records (chain) | "
    "webhooks delivered / redelivered / never | cycles short / divergent | "
    "supervisor restarts | wall (prep) |"
)


def markdown_row(row: dict[str, Any]) -> str:
    f, a = row["findings"], row["actions"]
    return (
        f"| {row['kind']} | {row['worlds']} | {row['cycles']} | "
        f"{f['expected']:,} / {f['seen']:,} / **{f['lost']}** / **{f['duplicated']}** / "
        f"**{f['divergent']}** | {a['expected']:,} / {a['seen']:,} / **{a['lost']}** / "
        f"**{a['duplicated']}** / **{a['divergent']}** | {row['audit_records']:,} "
        f"({'ok' if row['audit_chain_ok'] else 'BROKEN'}) | {row['webhooks_delivered']:,} / "
        f"{row['webhooks_redelivered']:,} / **{row['webhooks_never']}** | "
        f"{row['cycle_missing']} / {row['cycle_divergent']} | {row['restarts']} | "
        f"{row['wall_s'] / 60:.1f} min ({row['prep_s'] / 60:.1f}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kind", action="append", choices=[*KINDS, "baseline"], help="repeatable; default all"
    )
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--minutes", type=int, default=360)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--store",
        choices=["memory", "rocksdb"],
        default="rocksdb",
        help="the workers' table store (LOCKSTEP_STORE); see the module's docstring",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=PACE["max"],
        help="lines/s the stream is paced at most: slower, sparse input partitions fall "
        "silent between records (nearer real time)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args()
    PACE["max"] = args.max_rate
    kinds = args.kind or list(KINDS)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    home = DATA / "faults" / stamp
    home.mkdir(parents=True)
    code = Code(home / "code")
    snapshot = snapshot_code(code.root)
    code.check()
    log(f"code snapshot {snapshot['sha256'][:12]} (HEAD {snapshot['git_head'][:12]}, "
        f"{len(snapshot['dirty'])} files changed since) in {code.root}")  # fmt: skip
    cache: dict[int, World] = {}

    def worlds(seed: int) -> World:
        if seed not in cache:
            log(f"world seed {seed}: simulate {args.minutes} min at scale {args.scale}, replay")
            cache[seed] = prepare_world(
                code, seed, args.minutes, args.scale, args.partitions, home / f"world{seed}"
            )
            w = cache[seed]
            log(f"world seed {seed}: {len(w.lines):,} lines, {len(w.findings)} findings, "
                f"{len(w.actions)} actions, {w.prep_s:.0f} s")  # fmt: skip
        return cache[seed]

    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.faults", *sys.argv[1:]]),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "machine": platform.machine(),
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "uname": " ".join(platform.uname()),
        },
        "args": vars(args),
        "code": snapshot,
        "kinds": [],
    }
    out = DATA / f"faults-{stamp}.json"
    try:
        for kind in kinds:
            log(f"=== {kind} ===")
            result["kinds"].append(run_kind(kind, args, code, home / kind, worlds))
            out.write_text(json.dumps(result, indent=1, default=str))
    finally:
        result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        out.write_text(json.dumps(result, indent=1, default=str))
        if not args.keep:
            for world in cache.values():
                with contextlib.suppress(OSError):
                    world.path.unlink()
            for kind in kinds:
                shutil.rmtree(home / kind / "kafka", ignore_errors=True)
                for workers in (home / kind).glob("seed*/workers"):
                    shutil.rmtree(workers, ignore_errors=True)
    print()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for k in result["kinds"]:
        print(markdown_row(k["row"]))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
