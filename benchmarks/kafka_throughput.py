"""Events per second on a local Kafka broker: `lockstep worker` next to two baselines.

    python -m benchmarks.kafka_throughput [--events 300000] [--partitions 4]

All runs read the same events, loaded with `lockstep produce` (once per topic prefix, so
each worker run has its own topics and consumer group):
  (a) a plain aiokafka consumer that reads and decodes every record, nothing else;
  (b) a naive Faust agent that handles one event at a time (decode, count per target);
  one `lockstep worker`, and two of them (separate processes, same consumer group).
Each run gets a fresh consumer group; a run's rate is records / seconds from its first
record to its last. The broker runs on this machine, so it competes for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from benchmarks.streams import ensure_file
from pipeline.events import decoder
from pipeline.settings import load_settings
from pipeline.topics import Topics
from tests.kafka import Broker

DATA = Path(__file__).resolve().parent / ".data"
NAIVE_AGENT = """
import os, sys, time, faust
from pipeline.events import decoder
topics = os.environ["NAIVE_TOPICS"].split(","); total = int(os.environ["NAIVE_TOTAL"])
app = faust.App("bench-naive", broker="kafka://" + os.environ["NAIVE_BROKER"], web_enabled=False,
                consumer_auto_offset_reset="earliest", store="memory://")
counts = {}
seen = [0, 0.0]
@app.agent(app.topic(*topics, value_type=bytes, value_serializer="raw"))
async def naive(stream):
    async for value in stream:
        event = decoder.decode(value)
        key = getattr(event, "target", None) or event.actor
        counts[key] = counts.get(key, 0) + 1
        if seen[0] == 0:
            seen[1] = time.perf_counter()
        seen[0] += 1
        if seen[0] == total:
            print(f"RATE {total / (time.perf_counter() - seen[1])}", flush=True)
            os._exit(0)
app.main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def plain_consumer(bootstrap: str, topics: list[str], total: int) -> float:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id="bench-plain",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    decode = decoder.decode
    n, first = 0, 0.0
    try:
        while n < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                if not first:
                    first = time.perf_counter()
                for record in records:
                    with contextlib.suppress(Exception):
                        decode(record.value)
                n += sum(len(r) for r in batches.values())
        return n / (time.perf_counter() - first)
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


def naive_faust(bootstrap: str, topics: list[str], total: int) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                NAIVE_AGENT,
                "worker",
                "--loglevel",
                "warn",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=workdir,
            env={
                **os.environ,
                "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
                "NAIVE_TOPICS": ",".join(topics),
                "NAIVE_TOTAL": str(total),
                "NAIVE_BROKER": bootstrap,
            },
            check=False,
        )
    match = re.search(r"RATE ([0-9.]+)", proc.stdout + proc.stderr)  # Faust logs stdout
    if not match:
        raise RuntimeError(f"naive agent failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return float(match.group(1))


def _inputs_total(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    match = re.search(r"^lockstep_inputs_total ([0-9.e+]+)$", text, flags=re.M)
    return float(match.group(1)) if match else 0.0


def produce(path: Path, bootstrap: str, prefix: str, partitions: int) -> None:
    env = {
        **os.environ,
        "LOCKSTEP_KAFKA_BROKER": bootstrap,
        "LOCKSTEP_PARTITIONS": str(partitions),
        "LOCKSTEP_TOPIC_PREFIX": prefix,
    }
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "produce", str(path)],
        env=env,
        check=True,
        timeout=1800,
    )


def lockstep_workers(bootstrap: str, prefix: str, partitions: int, total: int, count: int) -> float:
    """`count` worker processes on the input topics of `prefix`."""
    ports = [_free_port() for _ in range(count)]
    with tempfile.TemporaryDirectory() as workdir:
        env = {
            **os.environ,
            "LOCKSTEP_KAFKA_BROKER": bootstrap,
            "LOCKSTEP_PARTITIONS": str(partitions),
            "LOCKSTEP_STORE": "memory",
            "LOCKSTEP_TOPIC_PREFIX": prefix,
        }
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "worker", "--metrics-port", str(port)],
                env={**env, "LOCKSTEP_DATA_DIR": f"{workdir}/w{i}"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i, port in enumerate(ports)
        ]
        try:
            first = 0.0
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                done = sum(_inputs_total(p) for p in ports)
                if done and not first:
                    first = time.perf_counter()
                if done >= total:
                    return total / (time.perf_counter() - first)
                time.sleep(0.05)
            raise RuntimeError("workers did not finish")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    path = ensure_file(DATA / f"mixed-{args.events}.jsonl", args.events)
    broker = Broker(port=19592, data_dir=Path(tempfile.mkdtemp(prefix="bench-kafka-")))
    broker.start()
    try:
        prefix = "bench"
        for name in (prefix, "one", "two"):
            produce(path, broker.bootstrap, name, args.partitions)
        settings = load_settings(
            overrides={"kafka": {"topic_prefix": prefix, "partitions": args.partitions}}
        )
        topics = Topics.from_settings(settings.kafka).inputs
        plain = asyncio.run(plain_consumer(broker.bootstrap, topics, args.events))
        naive = naive_faust(broker.bootstrap, topics, args.events)
        one = lockstep_workers(broker.bootstrap, "one", args.partitions, args.events, 1)
        two = lockstep_workers(broker.bootstrap, "two", args.partitions, args.events, 2)
    finally:
        broker.stop()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; {args.events:,} events, {args.partitions} partitions"
    )
    print(f"(a) plain aiokafka read+decode: {plain:,.0f} events/s")
    print(f"(b) naive Faust agent:          {naive:,.0f} events/s")
    print(
        f"one lockstep worker:            {one:,.0f} events/s "
        f"= {one / plain:.0%} of (a), {one / naive:.1f}x (b)"
    )
    print(f"two lockstep workers:           {two:,.0f} events/s = {two / one:.2f}x one worker")


if __name__ == "__main__":
    main()
