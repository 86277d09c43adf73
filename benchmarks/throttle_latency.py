"""Latency of the throttling hook under load, on loopback.

    python -m benchmarks.throttle_latency [--accounts 100000] [--concurrency 32] [--seconds 5]
                                          [--flood 20] [--flood-descriptors 8192]

Starts `lockstep throttle serve` on an actions file limiting `--accounts` accounts (half
throttled, half restricted), then a load generator (asyncio, `--concurrency` clients on
keep-alive connections) asks about random accounts, limited or not, for `--seconds`,
and measures each request's round trip. The baseline is the same server's `/healthz`
(routing, JSON and HTTP, no check), run in alternating rounds in the same script: the
ratio is what the check itself adds. Reports p50, p99 and requests per second.

With `--flood N`, each round measures the checks a third time while N more clients send
`POST /v1/ratelimit` requests of `--flood-descriptors` descriptors each (unauthenticated,
as anyone on the network can): what such a flood does to everyone else's checks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec

from pipeline.contract.findings import Action

NOW = "2026-01-01T01:00:00"
TS = 1_767_229_200_000


def _actions(path: Path, accounts: int) -> None:
    encode = msgspec.json.Encoder().encode
    with open(path, "wb") as handle:
        for i in range(accounts):
            throttled = i % 2 == 0
            params = (
                {
                    "descriptors": [
                        {"key": "account_id", "value": f"acct{i}"},
                        {"key": "action", "value": "follow"},
                    ],
                    "requests_per_unit": 20,
                    "unit": "hour",
                }
                if throttled
                else {}
            )
            action = Action(
                action_id=f"a{i}",
                action="throttle" if throttled else "restrict_functions",
                subject_type="account",
                subject_id=f"acct{i}",
                basis=["18", "19"],
                finding_ids=[f"f{i}"],
                mode="enforce",
                ts=TS,
                expires_at=TS + 86_400_000,
                params=params,
            )
            handle.write(encode(action) + b"\n")


async def _load(url: str, params: list[dict[str, str]] | None, clients: int, seconds: float):
    latencies: list[float] = []
    codes: dict[int, int] = {}
    rng = random.Random(7)
    stop = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop:
            query = rng.choice(params) if params else None
            started = time.perf_counter()
            async with session.get(url, params=query) as response:
                await response.read()
                codes[response.status] = codes.get(response.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return latencies, codes


async def _flood(url: str, clients: int, descriptors: int, seconds: float) -> dict[int, int]:
    """`clients` senders of oversized rate-limit requests, as fast as they are answered."""
    body = msgspec.json.encode(
        {
            "domain": "lockstep",
            "descriptors": [
                {"entries": [{"key": "account_id", "value": f"acct{i}"}]}
                for i in range(descriptors)
            ],
        }
    )
    codes: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    async def sender(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                codes[response.status] = codes.get(response.status, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(sender(session) for _ in range(clients)))
    return codes


def _load_under_flood(base: str, asks: list, args: argparse.Namespace):
    """The checks' load while the flood runs beside it, from a process of its own (in
    this one, it would slow the measuring clients rather than the server)."""
    flood = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.throttle_latency", "--flood-at", f"{base}/v1/ratelimit",
         "--flood", str(args.flood), "--flood-descriptors", str(args.flood_descriptors),
         "--seconds", str(args.seconds + 1)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.5)  # its clients under way
    lat, _ = asyncio.run(_load(f"{base}/v1/throttle", asks, args.concurrency, args.seconds))
    out, _ = flood.communicate(timeout=60)
    return lat, msgspec.json.decode(out.strip().splitlines()[-1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flood", type=int, default=0)
    parser.add_argument("--flood-descriptors", type=int, default=8192)
    parser.add_argument("--flood-at", help=argparse.SUPPRESS)  # the flood's own process
    args = parser.parse_args()
    if args.flood_at:
        codes = asyncio.run(_flood(args.flood_at, args.flood, args.flood_descriptors, args.seconds))
        print(msgspec.json.encode({str(k): v for k, v in codes.items()}).decode())
        return
    home = Path(tempfile.mkdtemp(prefix="lockstep-throttle-"))
    actions = home / "actions.jsonl"
    _actions(actions, args.accounts)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "throttle", "serve", "--actions", str(actions),
         "--port", str(port), "--now", NOW],
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        rng = random.Random(3)
        asks = [
            {"account_id": f"acct{rng.randrange(2 * args.accounts)}", "action": "follow"}
            for _ in range(10_000)
        ]  # half of them limited accounts, half unknown ones
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
            f"{platform.python_version()}; {args.accounts:,} limited accounts, "
            f"{args.concurrency} clients, {args.seconds:g} s per round"
        )
        rows = []
        for r in range(args.rounds):
            base_lat, _ = asyncio.run(
                _load(f"{base}/healthz", None, args.concurrency, args.seconds)
            )
            lat, codes = asyncio.run(
                _load(f"{base}/v1/throttle", asks, args.concurrency, args.seconds)
            )
            row = (
                _pct(lat, 0.5), _pct(lat, 0.99), len(lat) / args.seconds,
                _pct(base_lat, 0.5), _pct(base_lat, 0.99), len(base_lat) / args.seconds,
            )  # fmt: skip
            if args.flood:
                flood_lat, flooded = _load_under_flood(base, asks, args)
                row = (*row, _pct(flood_lat, 0.5), _pct(flood_lat, 0.99))
                answers = dict(sorted(flooded.items()))
                print(
                    f"round {r + 1}, under a flood of {args.flood} clients x "
                    f"{args.flood_descriptors} descriptors (answers {answers}):"
                    f" throttle p50 {row[6]:.2f} ms, p99 {row[7]:.2f} ms"
                )
            rows.append(row)
            print(
                f"round {r + 1}: throttle p50 {row[0]:.2f} ms, p99 {row[1]:.2f} ms, "
                f"{row[2]:,.0f} req/s (codes {dict(sorted(codes.items()))}); "
                f"baseline /healthz p50 {row[3]:.2f} ms, p99 {row[4]:.2f} ms, {row[5]:,.0f} req/s"
            )
        p50 = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        ratio = statistics.median(r[1] / r[4] for r in rows)
        rps = statistics.median(r[2] / r[5] for r in rows)
        print(
            f"median over rounds: throttle p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
            f"p99 / baseline p99 = {ratio:.2f}; throughput / baseline = {rps:.2f}"
        )
        if args.flood:
            flood_p99 = statistics.median(r[7] for r in rows)
            print(
                f"median over rounds under the flood: throttle p99 {flood_p99:.2f} ms, "
                f"{flood_p99 / p99:.2f}x the p99 without it"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
