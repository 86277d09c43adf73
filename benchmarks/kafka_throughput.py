"""Events per second on a local Kafka broker: `lockstep worker` next to two baselines.

    python -m benchmarks.kafka_throughput [--events 300000] [--partitions 4]

All runs read the same events, loaded with `lockstep produce` (once per topic prefix, so
each worker run has its own topics and consumer group). (a), one worker and two workers
run side by side in each of `--rounds` rounds; ratios are taken within a round and the
median over rounds is reported:
  (a) a plain aiokafka consumer that reads and decodes every record, nothing else;
  (b) a naive Faust agent that handles one event at a time (decode, count per target);
  the ingest half of a worker alone (read, gate, pack, send; no stage consumers), to
  show how much of (a) a worker's stateless part already needs;
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from benchmarks.streams import ensure_file
from pipeline.contract.events import decoder
from pipeline.core.settings import Settings, load_settings
from pipeline.core.stats import Stats
from pipeline.detectors import build_stages
from pipeline.distributed.ingest_loop import IngestLoop
from pipeline.distributed.runtime import Ingest
from pipeline.distributed.topics import Topics, ensure_topics
from pipeline.distributed.worker import declared_topics
from tests.kafka import Broker

DATA = Path(__file__).resolve().parent / ".data"
NAIVE_AGENT = """
import os, sys, time, faust
from pipeline.detectors import build_stages
from pipeline.distributed.runtime import Ingest
from pipeline.core.stats import Stats
from pipeline.distributed.ingest_loop import IngestLoop
from pipeline.distributed.topics import ensure_topics
from pipeline.contract.events import decoder
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


async def plain_consumer(bootstrap: str, topics: list[str], total: int, group: str) -> float:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
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


def _progress(port: int, stage_types: set[str]) -> tuple[float, float, float]:
    """(inputs read, events of the stages' types admitted, events the stages received)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0, 0.0, 0.0

    def total(pattern: str) -> float:
        return sum(float(v) for v in re.findall(pattern, text, flags=re.M))

    types = "|".join(sorted(stage_types))
    return (
        total(r"^lockstep_inputs_total ([0-9.e+]+)$"),
        total(rf'^lockstep_events_total{{type="(?:{types})"}} ([0-9.e+]+)$'),
        total(r"^lockstep_stage_events_total{[^}]*} ([0-9.e+]+)$"),
    )


async def ingest_only(settings: Settings, total: int, group: str) -> float:
    """The stateless half of a worker alone, in this process: the ingest loop (read,
    gate, pack, send to the stage topics), with nothing consuming the stage topics."""
    topics = Topics.from_settings(settings.kafka)
    await ensure_topics(settings.kafka.broker, declared_topics(settings), topics.partitions)
    stats = Stats()
    ingest = Ingest(settings, build_stages(settings), topics)
    loop = IngestLoop(settings.kafka, ingest, topics, stats, threading.Lock(), group=group)
    task = asyncio.create_task(loop.run())
    while stats.inputs == 0:
        await asyncio.sleep(0.001)
    first = time.perf_counter()
    while stats.inputs < total:
        await asyncio.sleep(0.001)
    rate = total / (time.perf_counter() - first)
    loop.stopping.set()
    await task
    return rate


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
    """`count` worker processes on the input topics of `prefix`; the run ends when every
    input was read and every admitted event reached its stage partition."""
    stage_types = {t for stage in build_stages(load_settings()) for t in stage.event_types}
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
                stdout=open(DATA / f"{prefix}-w{i}.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            for i, port in enumerate(ports)
        ]
        try:
            first = 0.0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                read, admitted, staged = (
                    sum(x) for x in zip(*(_progress(p, stage_types) for p in ports), strict=True)
                )
                if read and not first:
                    first = time.perf_counter()
                if read >= total and staged >= admitted:
                    return total / (time.perf_counter() - first)
                time.sleep(0.05)
            raise RuntimeError(f"workers did not finish; logs: {DATA}/{prefix}-w*.log")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", default="plain,ingest,naive,one,two", help="a subset, to iterate")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs = set(args.runs.split(","))
    path = ensure_file(DATA / f"mixed-{args.events}.jsonl", args.events)
    # Kafka's production default for the initial rebalance delay: workers started together
    # share the partitions from the start, as a deployment's would.
    broker = Broker(
        port=19592,
        data_dir=Path(tempfile.mkdtemp(prefix="bench-kafka-")),
        initial_rebalance_delay_ms=3000,
    )
    broker.start()
    nan = float("nan")
    rounds: list[dict[str, float]] = []
    naive = nan
    try:
        prefix = "bench"
        if runs & {"plain", "ingest", "naive"}:
            produce(path, broker.bootstrap, prefix, args.partitions)
        settings = load_settings(
            overrides={"kafka": {"topic_prefix": prefix, "partitions": args.partitions}}
        )
        topics = Topics.from_settings(settings.kafka).inputs
        if "naive" in runs:
            naive = naive_faust(broker.bootstrap, topics, args.events)
        for r in range(args.rounds):  # paired rounds: ratios are taken within a round
            result = {"plain": nan, "ingest": nan, "one": nan, "two": nan}
            if "plain" in runs:
                result["plain"] = asyncio.run(
                    plain_consumer(broker.bootstrap, topics, args.events, f"bench-plain-{r}")
                )
            if "ingest" in runs:
                bench = load_settings(
                    overrides={
                        "kafka": {
                            "topic_prefix": prefix,
                            "partitions": args.partitions,
                            "broker": broker.bootstrap,
                        }
                    }
                )
                result["ingest"] = asyncio.run(ingest_only(bench, args.events, f"bench-ingest-{r}"))
            for name, count in (("one", 1), ("two", 2)):
                if name in runs:
                    run_prefix = f"{name}{r}"
                    produce(path, broker.bootstrap, run_prefix, args.partitions)
                    result[name] = lockstep_workers(
                        broker.bootstrap, run_prefix, args.partitions, args.events, count
                    )
            rounds.append(result)
    finally:
        broker.stop()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; {args.events:,} events, {args.partitions} partitions"
    )
    print(f"(b) naive Faust agent: {naive:,.0f} events/s")
    for r, x in enumerate(rounds):
        print(
            f"round {r}: (a) plain aiokafka {x['plain']:,.0f}/s, "
            f"ingest alone {x['ingest']:,.0f}/s ({x['ingest'] / x['plain']:.0%} of (a)), "
            f"one worker {x['one']:,.0f}/s "
            f"({x['one'] / x['plain']:.0%} of (a), {x['one'] / naive:.1f}x (b)), "
            f"two workers {x['two']:,.0f}/s ({x['two'] / x['one']:.2f}x one)"
        )
    of_plain = statistics.median(x["one"] / x["plain"] for x in rounds)
    of_naive = statistics.median(x["one"] for x in rounds) / naive
    scaling = statistics.median(x["two"] / x["one"] for x in rounds)
    ingest_share = statistics.median(x["ingest"] / x["plain"] for x in rounds)
    print(
        f"median: ingest alone = {ingest_share:.0%} of (a); "
        f"one worker = {of_plain:.0%} of (a), {of_naive:.1f}x (b); "
        f"two workers = {scaling:.2f}x one"
    )


if __name__ == "__main__":
    main()
