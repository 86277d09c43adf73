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

    POST /v1/ratelimit  (Envoy rate-limit style; at most `throttle.max_descriptors`
                         descriptors and `throttle.max_body_bytes` bytes, else 413)
        {"descriptors": [{"entries": [{"key": "account_id", "value": ...},
                                      {"key": "action", "value": ...}]}]}
        -> {"overall_code": "OK" | "OVER_LIMIT", "statuses": [...]}

    GET /healthz   200 {"ok": true}, or 503 {"ok": false, "error": ...}
    GET /metrics  (Prometheus: checks by verdict and reason, check time, limits in force,
                   actions taken in, lines of the actions file refused, file readable)
    GET /openapi.json  the API's OpenAPI document, with the bounds of its settings

The actions file (`ActionsFile`) is followed every second. A line that is not a valid
action (`pipeline.contract.findings.read_action`, or a measure the table does not know)
is refused: logged with its line number and reason, counted, skipped. A file replaced
or rewritten (another inode, or the last line taken in no longer where it was) is read
again from its start. While the file cannot be read, or if following it stopped, the
hook does not know what is in force, so it does not pretend: every check and /healthz
answer 503 with the reason, and the gateway applies its own failure mode (Envoy's
`failure_mode_deny`, say), deny or allow, with its health checks seeing the hook down;
a stale "not limited" would let a closed account act for as long as nobody looked.
An unreadable file is tried again every second and the hook recovers when it can read.
A bad request is a 400 (413 when too large) with a JSON error, never a 5xx; so is a
path or method the hook does not serve (404, 405).

A check is two dictionary look-ups and, for a throttle, a counter step: the server's
cost is its HTTP handling (see benchmarks/RESULTS.md for p50/p99 under load).
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

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

from pipeline.contract.findings import Action, InvalidAction, read_action
from pipeline.core.settings import ThrottleSettings, load_settings
from pipeline.enforcement.measures import BLOCKING, MEASURES, UNIT_S
from pipeline.serve import apidoc
from pipeline.serve.errors import json_errors, quiet_unparsable_requests

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
                self._lift(a.params["reverts"])
            elif a.mode == "enforce" and a.subject_type == "account":
                self._enforce(a)

    def clear(self) -> None:
        """Forget every limit: the actions are about to be taken in again from the start."""
        self.limits.clear()
        self.by_id.clear()
        self.applied = 0

    def _enforce(self, a: Action) -> None:
        """Limit the account as the action's measure says: a throttle counts the actions
        its descriptors name, a measure that blocks limits every action, others none."""
        # 0 is the epoch, long gone: only None (no end) limits for good
        expires = None if a.expires_at is None else a.expires_at / 1000
        if a.action == "throttle":  # its params are valid: `Action` checks them
            unit = UNIT_S[a.params["unit"]]
            per_unit = a.params["requests_per_unit"]
            kinds = [d["value"] for d in a.params["descriptors"] if d["key"] == "action"] or [ANY]
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
            "Lines of the actions file that are not valid actions (skipped, logged).",
            registry=self.registry,
        )
        self.readable = Gauge(
            "lockstep_throttle_actions_readable",
            "1 while the actions file is followed; 0 while it cannot be (checks answer 503).",
            registry=self.registry,
        )
        limits = Gauge(
            "lockstep_throttle_limits", "(account, action) pairs limited now or until they expire.",
            registry=self.registry,
        )  # fmt: skip
        limits.set_function(lambda: len(table.limits))
        applied = Gauge(
            "lockstep_throttle_actions_applied",
            "Actions taken in from the actions file (reverts included; from its start again"
            " when it is replaced).",
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


class Entry(msgspec.Struct):
    key: str
    value: str


class RateLimitDescriptor(msgspec.Struct):
    entries: list[Entry]


class RateLimitRequest(msgspec.Struct):
    """The body of POST /v1/ratelimit; the other fields Envoy sends (domain, ...) are
    not needed."""

    descriptors: list[RateLimitDescriptor]


_decode_request = msgspec.json.Decoder(RateLimitRequest).decode
UTF8 = ("utf-8", "utf8")


class BadRequest(Exception):
    """A request the hook cannot answer: the message, and the HTTP status that says so."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Checks:
    """The hook's HTTP answers from `table` at `clock()` seconds, each counted and timed;
    503 whenever `trouble()` names a reason the table cannot be trusted."""

    def __init__(
        self,
        table: ThrottleTable,
        clock: Callable[[], float],
        metrics: ThrottleMetrics,
        trouble: Callable[[], str | None],
        limits: ThrottleSettings,
    ) -> None:
        self.table, self.clock, self.metrics = table, clock, metrics
        self.trouble, self.limits = trouble, limits

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

    def unknown(self, **body: Any) -> web.Response | None:
        """The 503 every check (and /healthz) gets while the actions in force are not
        known, saying why; None while they are."""
        trouble = self.trouble()
        if trouble is None:
            return None
        error = f"actions in force unknown: {trouble}"
        return web.json_response({**body, "error": error}, status=503)

    async def throttle(self, request: web.Request) -> web.Response:
        """GET /v1/throttle?account_id=&action=: one check."""
        started = time.perf_counter()
        account = request.query.get("account_id")
        action = request.query.get("action", ANY)
        if not account:
            return web.json_response({"error": "account_id is required"}, status=400)
        if (unknown := self.unknown()) is not None:
            return unknown
        status, body, headers = self.verdict(account, action)
        response = web.json_response(body, status=status, headers=headers)
        self.metrics.check_time.observe(time.perf_counter() - started)
        return response

    async def ratelimit(self, request: web.Request) -> web.Response:
        """POST /v1/ratelimit, Envoy style: one check per descriptor, the worst overall."""
        started = time.perf_counter()
        try:
            asked = self._asked(await self._body(request))
        except BadRequest as exc:
            refusal = web.json_response({"error": str(exc)}, status=exc.status)
            if exc.status == 413:  # the rest of the body is not worth reading
                refusal.force_close()
            return refusal
        if (unknown := self.unknown()) is not None:
            return unknown
        statuses = []
        worst = 200
        for account, action in asked:
            status, body, _ = self.verdict(account, action)
            worst = max(worst, status)
            code = "OVER_LIMIT" if status == 429 else "OK"
            statuses.append({"code": code, **({"reason": body["reason"]} if status == 429 else {})})
        overall = "OVER_LIMIT" if worst == 429 else "OK"
        response = web.json_response({"overall_code": overall, "statuses": statuses})
        self.metrics.check_time.observe(time.perf_counter() - started)
        return response

    async def _body(self, request: web.Request) -> RateLimitRequest:
        """The request's JSON body, decoded; BadRequest saying what is wrong with it."""
        if request.charset is not None and request.charset.lower() not in UTF8:
            raise BadRequest(f"the body must be JSON in UTF-8, not charset={request.charset}")
        too_large = BadRequest(f"the body is over {self.limits.max_body_bytes} bytes", 413)
        if (request.content_length or 0) > self.limits.max_body_bytes:
            raise too_large
        try:
            return _decode_request(await request.read())
        except web.HTTPRequestEntityTooLarge:  # longer than it said, or chunked
            raise too_large from None
        except msgspec.DecodeError as exc:
            raise BadRequest(f"not a rate-limit request: {exc}") from None
        except RecursionError:
            raise BadRequest("not a rate-limit request: nested too deeply") from None

    def _asked(self, ask: RateLimitRequest) -> list[tuple[str, str]]:
        """(account, action) of each descriptor; BadRequest for too many or no account."""
        most = self.limits.max_descriptors
        if len(ask.descriptors) > most:
            raise BadRequest(
                f"{len(ask.descriptors)} descriptors in one request: at most {most}", 413
            )
        asked = []
        for d in ask.descriptors:
            entries = {e.key: e.value for e in d.entries}
            if "account_id" not in entries:
                raise BadRequest("every descriptor needs an account_id entry")
            asked.append((entries["account_id"], entries.get("action", ANY)))
        return asked

    async def healthz(self, request: web.Request) -> web.Response:
        """GET /healthz: 200 while the hook knows the actions in force, else 503 and why
        (tests, orchestrators and gateways' health checks wait on it)."""
        return self.unknown(ok=False) or web.json_response({"ok": True})

    async def scrape(self, request: web.Request) -> web.Response:
        """GET /metrics."""
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


class ActionsFile:
    """An actions file (JSON lines, as replay or run write it) taken into a table as it
    grows: whole lines only; a line that is not a valid action is logged, counted and
    skipped; a file replaced or rewritten is taken in again from its start."""

    def __init__(self, path: str, table: ThrottleTable, metrics: ThrottleMetrics) -> None:
        self.path, self.table, self.metrics = path, table, metrics
        self.file_id: tuple[int, int] | None = None  # (device, inode) of the file taken in
        self.offset = 0  # bytes taken in so far
        self.lines = 0  # lines taken in so far (for the line numbers of refusals)
        self.last_line = b""  # the last line taken in, as it ends at `offset`
        self.unreadable: str | None = None  # why the last read failed
        self.following: asyncio.Task[None] | None = None

    def trouble(self) -> str | None:
        """Why the table may not hold the actions in force, or None."""
        if self.following is not None and self.following.done():
            return f"stopped following {self.path}"
        return self.unreadable

    def load(self) -> None:
        """Take in the whole lines appended since the last load, or every line again if
        the file is not the one taken in so far."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:  # not written yet, or being replaced: keep what is known
            return
        with handle:
            if not self._same_file(handle):
                self._start_over(handle)
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # whole lines only: a writer may be mid-line
        if not end:
            return
        lines = data[:end].split(b"\n")[:-1]
        taken = [a for line in lines if (a := self._take(line)) is not None]
        self.table.apply(taken)
        self.offset += end
        self.last_line = data[data.rfind(b"\n", 0, end - 1) + 1 : end]

    def _same_file(self, handle: IO[bytes]) -> bool:
        """Whether `handle` is the file taken in so far, at most grown: the same inode,
        with the last line taken in still where it was."""
        stat = os.fstat(handle.fileno())
        if (stat.st_dev, stat.st_ino) != self.file_id:
            return False
        handle.seek(self.offset - len(self.last_line))
        return handle.read(len(self.last_line)) == self.last_line

    def _start_over(self, handle: IO[bytes]) -> None:
        if self.file_id is not None:
            print(f"throttle: {self.path} was replaced or rewritten: reading it again",
                  file=sys.stderr)  # fmt: skip
        stat = os.fstat(handle.fileno())
        self.file_id = (stat.st_dev, stat.st_ino)
        self.offset, self.lines, self.last_line = 0, 0, b""
        self.table.clear()

    def _take(self, line: bytes) -> Action | None:
        self.lines += 1
        if not line.strip():
            return None
        try:
            action = read_action(line)
            if action.action not in MEASURES:
                raise InvalidAction(f"{action.action!r} is not a measure")
        except InvalidAction as exc:
            self.metrics.refused.inc()
            print(f"throttle: refused line {self.lines} of {self.path}: {exc}", file=sys.stderr)
            return None
        return action

    def refresh(self) -> None:
        """`load`, noting whether the file could be read (and saying when that changes)."""
        try:
            self.load()
        except OSError as exc:
            reason = f"cannot read {self.path}: {exc.strerror or exc}"
            if reason != self.unreadable:
                print(f"throttle: {reason}; every check answers 503", file=sys.stderr)
            self.unreadable = reason
        else:
            if self.unreadable is not None:
                print(f"throttle: {self.path} is readable again", file=sys.stderr)
            self.unreadable = None
        self.metrics.readable.set(self.trouble() is None)

    async def follow(self, application: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: loads the file before the server answers, then
        every second while the application runs."""

        async def every_second() -> None:
            while True:
                await asyncio.sleep(1.0)
                self.refresh()

        self.refresh()
        self.following = asyncio.create_task(every_second())
        self.following.add_done_callback(self._stopped)
        yield
        self.following.cancel()

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """Say so when following ends other than by the server stopping: a bug."""
        if task.cancelled():
            return
        self.metrics.readable.set(0)
        error = task.exception()
        detail = "".join(traceback.format_exception(error)) if error else ""
        print(f"throttle: stopped following {self.path}; every check answers 503\n{detail}",
              file=sys.stderr)  # fmt: skip


def document(limits: ThrottleSettings) -> dict[str, Any]:
    """The hook's OpenAPI document (openapi/throttle.yaml), with the bounds `limits` set."""
    return apidoc.load(
        "throttle", max_descriptors=limits.max_descriptors, max_body_bytes=limits.max_body_bytes
    )


def app(
    table: ThrottleTable,
    clock: Callable[[], float],
    metrics: ThrottleMetrics | None = None,
    *,
    actions: ActionsFile | None = None,
    settings: ThrottleSettings | None = None,
) -> web.Application:
    """The aiohttp application answering checks from `table` at `clock()` seconds: with
    `actions`, the file followed into it while it runs; requests bounded by `settings`
    (the shipped ones if None)."""
    limits = settings or load_settings(None).throttle
    metrics = metrics or ThrottleMetrics(table)
    trouble = actions.trouble if actions is not None else lambda: None
    checks = Checks(table, clock, metrics, trouble, limits)
    quiet_unparsable_requests()
    application = web.Application(client_max_size=limits.max_body_bytes, middlewares=[json_errors])
    application.router.add_get(apidoc.PATH, apidoc.route(document(limits)))
    application.router.add_get("/v1/throttle", checks.throttle)
    application.router.add_post("/v1/ratelimit", checks.ratelimit)
    application.router.add_get("/healthz", checks.healthz)
    application.router.add_get("/metrics", checks.scrape)
    if actions is not None:
        application.cleanup_ctx.append(actions.follow)
    return application


def serve(
    actions_path: str, settings: ThrottleSettings, host: str, port: int, now: float | None = None
) -> None:
    """Serve checks from an actions file, taking in the lines appended to it as they come
    (every second); `now` fixes the clock (seconds)."""
    table = ThrottleTable()
    metrics = ThrottleMetrics(table)
    actions = ActionsFile(actions_path, table, metrics)
    clock = (lambda: now) if now is not None else time.time
    application = app(table, clock, metrics, actions=actions, settings=settings)
    web.run_app(application, host=host, port=port, print=None, access_log=None)
