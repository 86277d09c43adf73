"""The case console under load: the queue's first page, a filtered search and a case view,
over a store of at least 100,000 findings in 10,000 cases.

    python -m benchmarks.console_load [--cases 10000] [--per-case 10] [--requests 2000]
                                      [--clients 8] [--seed 1]

Run by hand, never in CI. The store is written as a run writes it: OUT/findings.jsonl,
OUT/actions.jsonl and an audit trail (SQLite) holding every action, with findings of
every detector and article, subjects that are accounts, content and groups, members shared
between cases (so a member finds several), and actions in every mode. `lockstep console`
serves it on loopback as a separate process (start-up timed until the first page
answers), and a load generator (httpx, `--clients` concurrent connections, the review
token as bearer) sends each kind of request `--requests` times, interleaved, with a
baseline kind beside them in the same run: `GET /api/session`, which passes the same
login and JSON path but reads nothing of the store. Prints, per kind, p50 and p99 in ms
and their ratio to the baseline's, and the console's RSS; writes the figures as JSON to
benchmarks/.data/console-load-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil

from pipeline.contract.findings import Action, make_finding
from pipeline.enforcement.audit import open_audit

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
TOKEN = "console-load-token"
HOUR = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01
# (detector, article, subject type, measure) of the findings the store holds
KINDS = [
    ("follower_jump", "12", "account", "restrict_functions"),
    ("silent_followers", "12", "account", "restrict_functions"),
    ("engagement_inflation", "12", "content", "human_review"),
    ("forced_follow", "12", "account", "warn"),
    ("lockstep_group", "18", "group", "restrict_functions"),
    ("duplicate_content", "18", "group", "suspend_updates"),
    ("batch_registration", "18", "group", "restrict_functions"),
    ("churn", "12", "account", "warn"),
]
MODES = ("enforce", "review", "shadow")
SEVERITY = ("low", "medium", "high", "critical")


def write_store(out: Path, cases: int, per_case: int, seed: int) -> dict[str, Any]:
    """`cases` subjects with `per_case` findings each within the policy's cooldown (one
    case each), an action per finding, members drawn from a shared pool."""
    rng = random.Random(seed)
    encode = msgspec.json.encode
    pool = [f"m{rng.getrandbits(40):x}" for _ in range(cases * 5)]
    actions: list[Action] = []
    findings = members_total = 0
    with open(out / "findings.jsonl", "wb") as fw, open(out / "actions.jsonl", "wb") as aw:
        for c in range(cases):
            detector, article, subject_type, measure = KINDS[c % len(KINDS)]
            subject = f"{subject_type[0]}{c:06d}"
            start = T0 + rng.randrange(72) * HOUR
            mode = MODES[rng.randrange(3)]
            size = rng.choice((3, 12, 40, 150)) if subject_type == "group" else rng.randint(5, 60)
            members = rng.sample(pool, size)
            for k in range(per_case):
                end = start + (k + 1) * 5 * 60_000  # all within the cooldown (1 h)
                finding = make_finding(
                    detector=detector, article=article, subject_type=subject_type,
                    subject_id=subject, window_start=end - 10 * 60_000, window_end=end,
                    score=rng.random(), severity=SEVERITY[rng.randrange(4)],
                    members=members, evidence=_evidence(rng, detector, members, end),
                )  # fmt: skip
                fw.write(encode(finding) + b"\n")
                findings += 1
                members_total += len(members)
                action = Action(
                    action_id=f"a{c:06d}-{k}", action=measure, subject_type=subject_type,
                    subject_id=subject, basis=[article, "19"], finding_ids=[finding.finding_id],
                    mode=mode, ts=end, expires_at=end + 7 * 24 * HOUR,
                )  # fmt: skip
                aw.write(encode(action) + b"\n")
                actions.append(action)
    trail = open_audit(str(out / "audit.sqlite"))
    for i in range(0, len(actions), 5000):
        trail.append("action", actions[i : i + 5000], "action_id")
    trail.close()
    return {"cases": cases, "findings": findings, "actions": len(actions),
            "members_per_finding": members_total / findings, "pool": pool}  # fmt: skip


SERIES = {
    "follower_jump",
    "engagement_inflation",
    "forced_follow",
    "churn",
    "batch_registration",
}  # the detectors whose findings carry `series`
ITEMS = {"duplicate_content"}  # and `member_items`; lockstep_group carries `rounds`


def _evidence(rng: random.Random, detector: str, members: list[str], end: int) -> dict:
    """Evidence as large as the detectors write it: the numbers, a 48-point `series` with
    its expected level, `member_facts` for the first 100 members, a group's picture
    (`member_items` up to 50 x 50, or `rounds`), so a case view carries what it will."""
    evidence: dict[str, Any] = {"count": rng.randint(50, 5000), "expected": rng.uniform(5, 50)}
    if detector in SERIES:
        t = [end - (47 - i) * 5 * 60_000 for i in range(48)]
        evidence["series"] = {
            "t": t,
            "value": [rng.randint(0, 400) for _ in t],
            "expected": [round(rng.uniform(5, 50), 2) for _ in t],
        }
    evidence["member_facts"] = {
        m: {
            "created_at": end - rng.randrange(900) * 24 * HOUR,
            "network": f"198.51.{rng.randrange(256)}.0/24",
            "device": f"d{rng.getrandbits(32):x}",
        }
        for m in members[:100]
    }
    listed = members[:50]
    if detector in ITEMS:
        items = [
            {
                "content_id": f"c{rng.getrandbits(32):x}",
                "owner": rng.choice(members),
                "start": end - rng.randrange(3600) * 1000,
            }
            for _ in range(min(50, len(members)))
        ]
        acts = [
            [i, j, items[j]["start"] + rng.randrange(60_000)]
            for i in range(len(listed))
            for j in range(len(items))
            if rng.random() < 0.6
        ]
        evidence["member_items"] = {
            "members": listed,
            "items": items,
            "acts": acts,
            "members_total": len(members),
            "items_total": len(items),
        }
    elif detector == "lockstep_group":
        evidence["rounds"] = [
            {
                "content_id": f"c{rng.getrandbits(32):x}",
                "start": end - (10 - r) * 60_000,
                "end": end - (10 - r) * 60_000 + 30_000,
                "actors": len(members),
                "members": len(members),
            }
            for r in range(10)
        ]
        evidence["member_rounds"] = {
            m: [[r, end - (10 - r) * 60_000 + rng.randrange(30_000)] for r in range(10)]
            for m in members[:100]
        }
    return evidence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ready(
    base: str, proc: subprocess.Popen[bytes], cases: int, timeout: float = 300
) -> float:
    """Seconds until the queue answers with the whole store indexed (`cases` cases)."""
    started = time.monotonic()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"lockstep console exited with {proc.returncode}")
            try:
                r = await client.get(f"{base}/api/cases", timeout=30)
                if r.status_code == 200 and r.json().get("total", 0) >= cases:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("the console never served its first page")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(base: str, requests: int, clients: int, targets: dict[str, list[str]]) -> dict:
    """Each kind `requests` times, interleaved across `clients` connections."""
    plan = [(kind, path) for kind, paths in targets.items() for path in
            (paths[i % len(paths)] for i in range(requests))]  # fmt: skip
    random.Random(7).shuffle(plan)
    timings: dict[str, list[float]] = {kind: [] for kind in targets}
    failures: dict[str, int] = dict.fromkeys(targets, 0)
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                kind, path = queue.get_nowait()
                started = time.perf_counter()
                r = await client.get(path, timeout=60)
                elapsed = time.perf_counter() - started
                if r.status_code != 200:
                    failures[kind] += 1
                timings[kind].append(elapsed * 1000)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return {"timings": timings, "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--per-case", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="console-load-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        started = time.monotonic()
        store = write_store(out, args.cases, args.per_case, args.seed)
        pool = store.pop("pool")
        print(f"store: {store['findings']:,} findings, {store['actions']:,} actions in "
              f"{store['cases']:,} subjects, {time.monotonic() - started:.1f} s")  # fmt: skip
        port = free_port()
        env = {**os.environ, "LOCKSTEP_REVIEW_TOKEN": TOKEN}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "console", "--out", str(out), "--port",
             str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            ready_s = asyncio.run(wait_ready(base, proc, args.cases))
            first = httpx.get(f"{base}/api/cases", headers={"Authorization": f"Bearer {TOKEN}"})
            total = first.json()["total"]
            case_ids = [c["case_id"] for c in first.json()["cases"]]
            rng = random.Random(args.seed)
            more = httpx.get(f"{base}/api/cases?page=3&sort=-size",
                             headers={"Authorization": f"Bearer {TOKEN}"}).json()  # fmt: skip
            case_ids += [c["case_id"] for c in more["cases"]]
            filters = [
                f"/api/cases?detector={d}&status=needs_review&sort=-severity" for d, *_ in KINDS
            ] + [f"/api/cases?q={m}" for m in rng.sample(pool, 50)]
            targets = {
                "baseline: GET /api/session": ["/api/session"],
                "queue, first page": ["/api/cases"],
                "filtered search": filters,
                "case view": [f"/api/cases/{c}" for c in case_ids],
            }
            result = asyncio.run(load(base, args.requests, args.clients, targets))
            rss = psutil.Process(proc.pid).memory_info().rss
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    base_p50 = percentile(result["timings"]["baseline: GET /api/session"], 0.5)
    base_p99 = percentile(result["timings"]["baseline: GET /api/session"], 0.99)
    rows = []
    print(f"console ready in {ready_s:.1f} s with {total:,} cases; RSS {rss / 2**20:.0f} MiB")
    print("| request | n | failed | p50 ms | p99 ms | p50 / baseline | p99 / baseline |")
    print("|---|---|---|---|---|---|---|")
    for kind, values in result["timings"].items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        rows.append({"kind": kind, "n": len(values), "failed": result["failures"][kind],
                     "p50_ms": p50, "p99_ms": p99})  # fmt: skip
        print(f"| {kind} | {len(values):,} | {result['failures'][kind]} | {p50:.1f} | "
              f"{p99:.1f} | {p50 / base_p50:.1f}x | {p99 / base_p99:.1f}x |")  # fmt: skip
    DATA.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    record = {
        "command": " ".join(sys.argv), "args": vars(args), "store": store, "cases": total,
        "ready_s": ready_s, "rss_bytes": rss, "rows": rows,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "uname": " ".join(platform.uname())},
    }  # fmt: skip
    path = DATA / f"console-load-{stamp}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
