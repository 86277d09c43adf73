"""The distributed runtime on a real Kafka broker: two `lockstep worker` processes find
exactly what `lockstep replay` finds on the same input, with redelivered events counted
once and every action emitted once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from pipeline.distributed.kafka_io import read_to_end
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, lockstep, read_jsonl, write_lines
from tests.kafka import Broker
from tests.test_account_handover import owners, takeover
from tests.test_batch_registration import _batch
from tests.test_churn import _churner
from tests.test_engagement_inflation import _background, _farm
from tests.test_forced_follow import _newcomers

ARTICLE_11 = {"account_handover"}
ARTICLE_12 = {
    "follower_jump",
    "silent_followers",
    "engagement_inflation",
    "forced_follow",
    "edge_burst",
}
ARTICLE_18 = {
    "lockstep_group",
    "duplicate_content",
    "churn",
    "batch_registration",
    "hoarded_accounts",
    "lockstep_ring",
}

PARTITIONS = 2
PORTS: dict[str, int] = {}  # worker name -> its metrics port, for diagnostics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _diagnostics() -> str:
    """What each worker's /metrics says, to explain a failure."""
    lines = []
    for name, port in PORTS.items():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError as exc:
            lines.append(f"{name}: {exc}")
            continue
        keep = [
            x
            for x in text.splitlines()
            if x.startswith(
                (
                    "lockstep_inputs",
                    "lockstep_water",
                    "lockstep_findings",
                    "lockstep_dead",
                    "lockstep_duplicate",
                    "lockstep_consumer",
                )
            )
        ]
        lines.append(f"{name}: " + "; ".join(keep))
    return "\n".join(lines)


def _with_bad_input(lines: list[str]) -> list[str]:
    for i in range(0, len(lines), 997):  # upstream redeliveries, right behind the original
        lines.insert(i + 3, lines[i])
    lines.insert(100, "{not json")
    return lines


def _ring(b: StreamBuilder, creator: str, members: int, posts: int, start: int) -> None:
    """`members` accounts repost each of `posts` posts of `creator` (an hour apart) within
    minutes of it, most of them each time."""
    for k in range(posts):
        posted = start + k * HOUR
        for i in range(members):
            if b.rng.random() < 0.85:
                at = posted + b.rng.randrange(30_000, 8 * MINUTE)
                b.add("repost", at, f"ring{i}", target=creator, content_id=f"{creator}/p{k}")


def _hired_ring(b: StreamBuilder, members: int, customers: int, start: int) -> None:
    """`members` accounts repost one post of each of `customers` accounts (half an hour
    apart) within minutes of it: a ring spread over many accounts' content."""
    for k in range(customers):
        posted = start + k * 30 * MINUTE
        for i in range(members):
            if b.rng.random() < 0.85:
                at = posted + b.rng.randrange(30_000, 8 * MINUTE)
                b.add("repost", at, f"hired{i}", target=f"shop{k}", content_id=f"shop{k}/p")


def _copy_paste(b: StreamBuilder, start: int, bots: int, message: str) -> None:
    """`bots` accounts post `message`, a digit and an ending changed each time, under the
    items of several accounts within half an hour."""
    for i in range(bots):
        text = message.replace("300", str(b.rng.randrange(100, 999))) + b.rng.choice("!～ ")
        owner = f"acct{b.rng.randrange(40)}"
        at = start + b.rng.randrange(30 * MINUTE)
        b.add("comment", at, f"spam{i}", target=owner, content_id=f"{owner}/p0", text=text)


def _stream(hours: int, seed: int) -> list[str]:
    """Organic follows to many accounts, three bought bursts, a click farm on one post,
    sign-ups forced onto one account, ordinary clicks, a repost ring on one account and one
    spread over five, accounts churning
    follows, a batch of registrations from one address left dormant, a copy-paste comment
    campaign, accounts whose owners log in and comment, then handed over to a buyer who
    promotes one account, a bad line and redeliveries: every Article 11, Article 12 and
    Article 18 detector has something to find."""
    b = StreamBuilder(seed=seed)
    end = T0 + hours * HOUR
    for i in range(40):
        b.poisson_follows(f"acct{i}", T0, end, rate_per_hour=2 + 4 * i, active=True)
    b.burst("acct1", T0 + 2 * HOUR + 7 * MINUTE, 300, 4 * MINUTE)
    b.burst("acct7", T0 + (hours - 2) * HOUR + 2 * MINUTE, 400, 6 * MINUTE, prefix="ring")
    b.burst("acct20", T0 + (hours - 1) * HOUR, 250, 3 * MINUTE, prefix="farm")
    _background(b, end, items=30)
    farm = T0 + 3 * HOUR
    _farm(b, "promo", "shop", farm, farm + 20 * MINUTE, clicks=1200)
    _newcomers(b, T0 + HOUR, T0 + 2 * HOUR, per_hour=150, forced_onto="acct3")
    _ring(b, "acct30", members=40, posts=4, start=T0 + HOUR)
    _hired_ring(b, members=40, customers=5, start=T0 + 4 * HOUR)
    for k in range(3):
        _churner(b, f"churner{k}", T0 + HOUR + k * MINUTE)
    _batch(b, T0 + 2 * HOUR, 150, 5 * MINUTE, ["198.51.100.7"], 3, "bulk")
    _copy_paste(b, T0 + 3 * HOUR, 60, "兼职日结300元，在家就能做，有意向的加我V：k2231")
    sold = [f"owner{i}" for i in range(8)]
    owners(b, sold, T0, T0 + 2 * HOUR)
    takeover(b, sold, T0 + 4 * HOUR, beneficiary="acct12")
    return _with_bad_input(b.sorted_lines())


def _env(broker: Broker, prefix: str, data_dir: Path, store: str = "rocksdb") -> dict[str, str]:
    """A worker's environment: the store is the production default unless a test says."""
    return {
        **os.environ,
        "LOCKSTEP_KAFKA_BROKER": broker.bootstrap,
        "LOCKSTEP_TOPIC_PREFIX": prefix,
        "LOCKSTEP_PARTITIONS": str(PARTITIONS),
        "LOCKSTEP_STORE": store,
        "LOCKSTEP_DATA_DIR": str(data_dir),
    }


def _worker(env: dict[str, str], name: str, log_dir: Path) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the worker
    port = _free_port()
    PORTS[name] = port
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "worker", "--metrics-port", str(port)],
        env={**env, "LOCKSTEP_DATA_DIR": str(log_dir / name)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _read(bootstrap: str, topic: str) -> list[dict]:
    records = asyncio.run(read_to_end(bootstrap, topic, PARTITIONS, wait_s=5))
    return [json.loads(r.value) for r in records]


def _replay(tmp_path: Path, lines: list[str]) -> tuple[Path, set[str]]:
    events = write_lines(tmp_path / "events.jsonl", lines)
    proc = lockstep("replay", str(events), "--out", str(tmp_path / "replay"))
    assert proc.returncode == 0, proc.stderr.decode()
    expected = {f["finding_id"] for f in read_jsonl(tmp_path / "replay" / "findings.jsonl")}
    return events, expected


def _difference(found: list[dict], tmp_path: Path) -> str:
    """Which findings the workers and replay disagree on, by detector and subject."""
    replayed = read_jsonl(tmp_path / "replay" / "findings.jsonl")
    ids = {f["finding_id"] for f in found}
    wanted = {f["finding_id"] for f in replayed}

    def name(f: dict) -> str:
        return f"{f['detector']}:{f['subject_id']}@{f['window_end']}"

    extra = sorted(name(f) for f in found if f["finding_id"] not in wanted)
    missing = sorted(name(f) for f in replayed if f["finding_id"] not in ids)
    return f"workers only: {extra}; replay only: {missing}"


def _wait_for_findings(
    broker: Broker, prefix: str, expected: set[str], workers: list, timeout: float = 180
) -> list[dict]:
    return _wait_for(broker, f"{prefix}.findings", "finding_id", expected, workers, timeout)


def _wait_for_actions(
    broker: Broker, prefix: str, tmp_path: Path, workers: list, timeout: float = 180
) -> list[dict]:
    """Actions come after the findings that lead to them (the enforcement stage closes its
    windows on the finding stream's watermark): wait for them too, rather than a while.
    A failure says where the findings of each missing action went."""
    try:
        return _wait_for(
            broker, f"{prefix}.actions", "action_id", _replayed_actions(tmp_path), workers, timeout
        )
    except AssertionError as exc:
        try:
            trace = _trace_missing_actions(broker, prefix, tmp_path)
        except Exception as why:  # the trace explains; it must not hide the failure
            trace = f"(no trace: {why!r})"
        raise AssertionError(f"{exc}\n{trace}") from None


def _trace_missing_actions(broker: Broker, prefix: str, tmp_path: Path) -> str:
    """For each replay action not on the actions topic: the stage records on the
    enforcement stage's topic that carried its findings (partition, offset, source, time),
    and every dead letter but the malformed lines."""
    from pipeline.distributed.runtime import decode_batch

    on_topic = {a["action_id"] for a in _read(broker.bootstrap, f"{prefix}.actions")}
    records = asyncio.run(
        read_to_end(broker.bootstrap, f"{prefix}.stage.enforcement", PARTITIONS, wait_s=5)
    )
    carried: dict[str, list[str]] = {}
    for r in records:
        batch = decode_batch(r.value)
        sources = [s for s, n in batch.sources for _ in range(n)]
        for i, d in enumerate(batch.events):
            where = sources[i] if i < len(sources) else "?"
            trail = f"p{r.partition}@{r.offset} from {where} ts {d.ts}"
            carried.setdefault(d.event_id, []).append(trail)
    lines = []
    for a in read_jsonl(tmp_path / "replay" / "actions.jsonl"):
        if a["action_id"] in on_topic:
            continue
        trail = {f: carried.get(f, ["never on the enforcement topic"]) for f in a["finding_ids"]}
        lines.append(f"{_brief(a)} {a['action_id']}: {trail}")
    dead = _read(broker.bootstrap, f"{prefix}.dead-letters")
    kept = [(d["reason"], d["source"], d["detail"]) for d in dead if d["reason"] != "invalid_json"]
    return "\n".join([*lines, f"dead letters (not invalid_json): {kept[:20]} of {len(kept)}"])


QUIET_S = 60  # past the timeout, a wait goes on while the workers still move, this long
MOST_S = 900  # and no longer than this in all


def _wait_for(
    broker: Broker, topic: str, field: str, expected: set[str], workers: list, timeout: float
) -> list[dict]:
    """Wait until `topic` holds every `expected` id. Past `timeout`, only as long as the
    workers are still at work (a loaded machine makes recovery slow, not wrong): it gives
    up once nothing has moved for QUIET_S, so a result that will never come fails."""
    start = last_move = time.monotonic()
    seen: tuple[float, ...] | None = None
    found: list[dict] = []
    while True:
        for w in workers:
            assert w.poll() is None, f"a worker exited with {w.returncode}"
        found = _read(broker.bootstrap, topic)
        if expected <= {f[field] for f in found}:
            return found
        now = time.monotonic()
        if (moved := _progress()) != seen:
            seen, last_move = moved, now
        if now - start >= MOST_S or (now - start >= timeout and now - last_move >= QUIET_S):
            break
        time.sleep(2)
    missing = expected - {f[field] for f in found}
    extra = sorted(_brief(f) for f in found if f[field] not in expected)
    raise AssertionError(
        f"missing on {topic} after {now - start:.0f} s (the workers last moved "
        f"{now - last_move:.0f} s before): {missing}\non the topic only: {extra}\n"
        f"{_diagnostics()}"
    )


def _progress() -> tuple[float, ...]:
    """What the workers have done so far, by their metrics: a change means work goes on."""
    moved = []
    for port in PORTS.values():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            moved.append(-1.0)  # a worker gone (killed, or not up yet)
            continue
        moved.append(
            sum(
                float(x.rsplit(" ", 1)[1])
                for x in text.splitlines()
                if x.startswith(PROGRESS_METRICS)
            )
        )
    return tuple(moved)


PROGRESS_METRICS = (
    "lockstep_inputs_total",
    "lockstep_stage_events_total",
    "lockstep_stage_redeliveries_total",
    "lockstep_findings_total",
    "lockstep_actions_total",
)


def _brief(record: dict) -> str:
    """A finding or an action in a few words, to tell what differs from replay."""
    if "action_id" in record:
        return f"{record['action']}:{record['subject_id']}@{record['ts']}"
    return f"{record['detector']}:{record['subject_id']}@{record['window_end']}"


def _replayed_actions(tmp_path: Path) -> set[str]:
    return {a["action_id"] for a in read_jsonl(tmp_path / "replay" / "actions.jsonl")}


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=30)
        except subprocess.TimeoutExpired:
            w.kill()


def _produce(env: dict[str, str], events: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "produce", str(events)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()


def _owned_inputs(port: int) -> int:
    """How many input topics a worker reports consumer lag for (it owns partitions of)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0
    return text.count("lockstep_consumer_lag_records{")


def _wait_until_both_own_inputs(workers: list, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    stable_since = None
    while time.monotonic() < deadline:
        for w in workers:
            assert w.poll() is None, f"a worker exited with {w.returncode}"
        if all(_owned_inputs(port) for port in PORTS.values()):
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 3:
                return
        else:
            stable_since = None
        time.sleep(0.5)
    raise AssertionError(f"the workers never shared the input partitions\n{_diagnostics()}")


def test_two_workers_find_what_replay_finds(kafka: Broker, tmp_path: Path) -> None:
    lines = _stream(hours=6, seed=31)
    events, expected = _replay(tmp_path, lines)
    assert len(expected) >= 3
    detectors = {f["detector"] for f in read_jsonl(tmp_path / "replay" / "findings.jsonl")}
    every = ARTICLE_11 | ARTICLE_12 | ARTICLE_18
    assert detectors >= every, f"the stream leaves a detector idle: {detectors}"
    PORTS.clear()
    env = _env(kafka, "same", tmp_path)
    # Both workers join the group first and share the partitions; then the stream comes.
    # (Moving partitions between workers under load: tests/test_kafka_recovery.py.)
    workers = [_worker(env, f"w{i}", tmp_path) for i in (1, 2)]
    try:
        _wait_until_both_own_inputs(workers)
        _produce(env, events)
        _wait_for_findings(kafka, "same", expected, workers)
        _wait_for_actions(kafka, "same", tmp_path, workers)
        time.sleep(3)  # anything extra would show up now
        found = _read(kafka.bootstrap, "same.findings")
        actions = _read(kafka.bootstrap, "same.actions")
        scraped = _diagnostics()
        assert "lockstep_consumer_lag_records" in scraped and "lockstep_findings_total" in scraped
    finally:
        _stop(workers)
    assert {f["finding_id"] for f in found} == expected, _difference(found, tmp_path)
    dead = _read(kafka.bootstrap, "same.dead-letters")
    kept = [(d["reason"], d["source"], d["position"], d["detail"]) for d in dead
            if d["reason"] != "invalid_json"]  # fmt: skip
    by_stage = Counter(source.rsplit(":", 2)[0] for _, source, _, _ in kept)
    assert [d["reason"] for d in dead] == ["invalid_json"], f"{dict(by_stage)}: {kept[:10]}"
    ids = [a["action_id"] for a in actions]
    assert len(ids) == len(set(ids)) > 0
    assert set(ids) == _replayed_actions(tmp_path)
