"""The throttling hook: may this account do this action now? For a gateway's request path.

The answer comes from the actions in force (`ThrottleTable`, built from actions as they
are issued): a `throttle` allows its `requests_per_unit` per `unit` for the actions its
descriptors name, and answers 429 with `Retry-After` (the end of the unit) beyond; a
measure that blocks (`pipeline.enforcement.measures`: restrict_functions, close_account,
...) limits every action until it expires (or for good); a `revert` lifts the action it
reverses. Only actions in mode `enforce` limit anyone: `shadow` and
`review` ones are recorded, not applied.

    GET /v1/throttle?account_id=<id>&action=<follow|comment|...>
        200 {"limited": false}
        429 {"limited": true, "action_id": ..., "reason": ..., "retry_after_s": N}

    POST /v1/ratelimit  (Envoy rate-limit style)
        {"descriptors": [{"entries": [{"key": "account_id", "value": ...},
                                      {"key": "action", "value": ...}]}]}
        -> {"overall_code": "OK" | "OVER_LIMIT", "statuses": [...]}

    GET /metrics  (Prometheus: checks by verdict and reason, check time, limits in force,
                   actions taken in and lines of the actions file refused)

A check is two dictionary look-ups and, for a throttle, a counter step: the server's
cost is its HTTP handling (see benchmarks/RESULTS.md for p50/p99 under load).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from pipeline.contract.findings import Action
from pipeline.enforcement.measures import BLOCKING, UNIT_S

ANY = "*"


@dataclass
class Limit:
    """One action's hold on an (account, action) pair: a throttle's counts, or a block."""

    action_id: str
    kind: str  # throttle, or a blocking measure
    expires_at: float | None  # seconds; None: until reverted
    per_unit: int = 0  # throttle: requests allowed per unit
    unit_s: int = 0
    counts: dict[int, int] = field(default_factory=dict)  # unit number -> requests seen


class ThrottleTable:
    """The limits in force, by (account, action); '*' for every action."""

    def __init__(self) -> None:
        self.limits: dict[tuple[str, str], list[Limit]] = {}
        self.by_id: dict[str, list[tuple[str, str]]] = {}
        self.applied = 0  # actions taken in (reverts included)

    def apply(self, actions: list[Action]) -> None:
        self.applied += len(actions)
        for a in actions:
            if a.action == "revert":
                self._lift(a.params.get("reverts", ""))
            elif a.mode == "enforce" and a.subject_type == "account":
                self._enforce(a)

    def _enforce(self, a: Action) -> None:
        """Limit the account as the action's measure says: a throttle counts the actions
        its descriptors name, a measure that blocks limits every action, others none."""
        expires = a.expires_at / 1000 if a.expires_at else None
        if a.action == "throttle":
            unit = UNIT_S.get(a.params.get("unit", ""), 0)
            per_unit = int(a.params.get("requests_per_unit", 0))
            kinds = [
                d["value"] for d in a.params.get("descriptors", []) if d["key"] == "action"
            ] or [ANY]
            for kind in kinds:
                self._add(a, kind, Limit(a.action_id, "throttle", expires, per_unit, unit))
        elif a.action in BLOCKING:
            self._add(a, ANY, Limit(a.action_id, a.action, expires))

    def _add(self, a: Action, kind: str, limit: Limit) -> None:
        key = (a.subject_id, kind)
        mine = self.limits.setdefault(key, [])
        if all(existing.action_id != a.action_id for existing in mine):
            mine.append(limit)
            self.by_id.setdefault(a.action_id, []).append(key)

    def _lift(self, action_id: str) -> None:
        for key in self.by_id.pop(action_id, []):
            kept = [x for x in self.limits.get(key, []) if x.action_id != action_id]
            if kept:
                self.limits[key] = kept
            else:
                self.limits.pop(key, None)

    def check(self, account: str, action: str, now: float) -> tuple[Limit, float] | None:
        """(the limit, seconds until it lets go) if the account may not do the action
        now; a throttled request that is let through is counted."""
        for key in ((account, action), (account, ANY)):
            for limit in self.limits.get(key, ()):
                if limit.expires_at is not None and now >= limit.expires_at:
                    continue
                if limit.kind != "throttle":
                    wait = math.inf if limit.expires_at is None else limit.expires_at - now
                    return limit, wait
                unit = int(now // limit.unit_s) if limit.unit_s else 0
                seen = limit.counts.get(unit, 0)
                if seen >= limit.per_unit:
                    return limit, (unit + 1) * limit.unit_s - now
                if unit not in limit.counts:
                    limit.counts.clear()  # a new unit: the old counts are done
                limit.counts[unit] = seen + 1
        return None


class ThrottleMetrics:
    """The hook's Prometheus metrics, in a registry of its own. Labels are bounded: the
    verdict and the measure that limited, never an account."""

    def __init__(self, table: ThrottleTable) -> None:
        self.registry = CollectorRegistry()
        self.checks = Counter(
            "lockstep_throttle_checks",
            "Checks answered, by verdict (allowed, limited) and the measure that limited.",
            ["verdict", "reason"],
            registry=self.registry,
        )
        self.check_time = Histogram(
            "lockstep_throttle_check_seconds",
            "Time to answer one check inside the server (HTTP handling included).",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
            registry=self.registry,
        )
        self.refused = Counter(
            "lockstep_throttle_refused_lines",
            "Lines of the actions file that are not actions (skipped, logged).",
            registry=self.registry,
        )
        limits = Gauge(
            "lockstep_throttle_limits", "(account, action) pairs limited now or until they expire.",
            registry=self.registry,
        )  # fmt: skip
        limits.set_function(lambda: len(table.limits))
        applied = Gauge(
            "lockstep_throttle_actions_applied",
            "Actions taken in from the actions file since start (reverts included).",
            registry=self.registry,
        )
        applied.set_function(lambda: table.applied)
        self.allowed = self.checks.labels("allowed", "")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


RETRY_FOR_GOOD_S = 365 * UNIT_S["day"]  # the Retry-After of a limit that does not expire


class Verdict(NamedTuple):
    """A check's answer, as the HTTP response carries it."""

    status: int  # 200 allowed, 429 limited
    body: dict[str, Any]
    headers: dict[str, str]


class Checks:
    """The hook's HTTP answers from `table` at `clock()` seconds, each counted and timed."""

    def __init__(
        self, table: ThrottleTable, clock: Callable[[], float], metrics: ThrottleMetrics
    ) -> None:
        self.table, self.clock, self.metrics = table, clock, metrics

    def verdict(self, account: str, action: str) -> Verdict:
        hit = self.table.check(account, action, self.clock())
        if hit is None:
            self.metrics.allowed.inc()
            return Verdict(200, {"limited": False}, {})
        limit, wait = hit
        self.metrics.checks.labels("limited", limit.kind).inc()
        retry = RETRY_FOR_GOOD_S if math.isinf(wait) else max(1, math.ceil(wait))
        body = {
            "limited": True,
            "action_id": limit.action_id,
            "reason": limit.kind,
            "retry_after_s": retry,
        }
        return Verdict(429, body, {"Retry-After": str(retry)})

    async def throttle(self, request: web.Request) -> web.Response:
        """GET /v1/throttle?account_id=&action=: one check."""
        started = time.perf_counter()
        account = request.query.get("account_id")
        action = request.query.get("action", ANY)
        if not account:
            return web.json_response({"error": "account_id is required"}, status=400)
        status, body, headers = self.verdict(account, action)
        response = web.json_response(body, status=status, headers=headers)
        self.metrics.check_time.observe(time.perf_counter() - started)
        return response

    async def ratelimit(self, request: web.Request) -> web.Response:
        """POST /v1/ratelimit, Envoy style: one check per descriptor, the worst overall."""
        started = time.perf_counter()
        try:
            data = await request.json()
            statuses = []
            worst = 200
            for d in data["descriptors"]:
                entries = {e["key"]: e["value"] for e in d["entries"]}
                status, body, _ = self.verdict(entries["account_id"], entries.get("action", ANY))
                worst = max(worst, status)
                code = "OVER_LIMIT" if status == 429 else "OK"
                statuses.append(
                    {"code": code, **({"reason": body["reason"]} if status == 429 else {})}
                )
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        overall = "OVER_LIMIT" if worst == 429 else "OK"
        response = web.json_response({"overall_code": overall, "statuses": statuses})
        self.metrics.check_time.observe(time.perf_counter() - started)
        return response

    async def scrape(self, request: web.Request) -> web.Response:
        """GET /metrics."""
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the server is up (tests and orchestrators wait on it)."""
    return web.json_response({"ok": True})


def app(
    table: ThrottleTable, clock: Callable[[], float], metrics: ThrottleMetrics | None = None
) -> web.Application:
    """The aiohttp application answering checks from `table` at `clock()` seconds."""
    checks = Checks(table, clock, metrics or ThrottleMetrics(table))
    application = web.Application()
    application.router.add_get("/v1/throttle", checks.throttle)
    application.router.add_post("/v1/ratelimit", checks.ratelimit)
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/metrics", checks.scrape)
    return application


class ActionsFile:
    """An actions file (JSON lines, as replay or run write it) taken into a table as it
    grows: whole lines only; a line that is not an action is logged, counted and skipped,
    and the hook keeps serving."""

    def __init__(self, path: str, table: ThrottleTable, metrics: ThrottleMetrics) -> None:
        self.path, self.table, self.metrics = path, table, metrics
        self.offset = 0  # bytes taken in so far
        self._decode = msgspec.json.Decoder(Action).decode

    def load(self) -> None:
        """Take in the whole lines appended since the last load."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:  # not written yet (a sink or run starting)
            return
        end = data.rfind(b"\n") + 1  # whole lines only: a writer may be mid-line
        lines = [line for line in data[:end].splitlines() if line.strip()]
        self.table.apply([a for line in lines for a in self._take(line)])
        self.offset += end

    def _take(self, line: bytes) -> list[Action]:
        try:
            return [self._decode(line)]
        except msgspec.DecodeError as exc:
            self.metrics.refused.inc()
            print(f"throttle: skipped a line of {self.path}: {exc}", file=sys.stderr)
            return []

    async def follow(self, application: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: loads every second while the application runs."""

        async def every_second() -> None:
            while True:
                await asyncio.sleep(1.0)
                self.load()

        task = asyncio.create_task(every_second())
        yield
        task.cancel()


def serve(actions_path: str, host: str, port: int, now: float | None = None) -> None:
    """Serve checks from an actions file, taking in the lines appended to it as they come
    (every second); `now` fixes the clock (seconds)."""
    table = ThrottleTable()
    metrics = ThrottleMetrics(table)
    actions = ActionsFile(actions_path, table, metrics)
    actions.load()
    application = app(table, (lambda: now) if now is not None else time.time, metrics)
    application.cleanup_ctx.append(actions.follow)
    web.run_app(application, host=host, port=port, print=None, access_log=None)
