"""Alert webhooks: actions to HTTP endpoints, signed (Standard Webhooks), as CloudEvents.

Every action is first written to a durable outbox (SQLite): one row per (webhook-id,
endpoint), where the webhook-id is the action's own deterministic id, so enqueuing the
same action again (a restart, a replay) adds nothing and a receiver can drop repeats by
id. Delivery reads the outbox: a POST with `webhook-id`, `webhook-timestamp` and
`webhook-signature` (HMAC-SHA256 over id, timestamp and body, by the `standardwebhooks`
package) and a CloudEvents 1.0 JSON body; a 2xx marks the row delivered, a 408, 429 or
5xx or a network error schedules a retry after the next delay of `retry_schedule_s`
(with jitter, never sooner than the receiver's `Retry-After`: by default over a day, as
Standard Webhooks senders do, so a receiver down for hours loses nothing), any other
status or the end of the schedule makes it a dead letter with the reason. Each endpoint
has a worker of its own and each attempt a deadline (`timeout_s`, however slowly a
receiver answers), so a receiver that hangs delays only its own deliveries. A process
that stops mid-way leaves the rest in the outbox for the next (`lockstep webhooks
deliver`, which can also send dead letters again and pending rows before they are due).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
from standardwebhooks import Webhook

from pipeline.contract.findings import Action
from pipeline.core.settings import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    webhook_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (webhook_id, url)
);
"""
RETRYABLE = {408, 429}
JITTER = 0.2  # a retry waits up to this share longer: receivers back up are not stampeded


class Endpoint(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    secret: str  # whsec_... (base64), as Standard Webhooks has receivers hold it


class WebhookPolicy(msgspec.Struct, forbid_unknown_fields=True):
    # the delay after each failed attempt, then a dead letter: 8 attempts over 27.6 h
    retry_schedule_s: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    timeout_s: float = 10.0


def cloud_event(action: Action) -> dict[str, Any]:
    """An action as a CloudEvents 1.0 structured event."""
    when = datetime.fromtimestamp(action.ts / 1000, UTC)
    return {
        "specversion": "1.0",
        "id": action.action_id,
        "source": "urn:lockstep",
        "type": f"org.lockstep.action.{action.action}",
        "subject": f"{action.subject_type}:{action.subject_id}",
        "time": when.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": msgspec.to_builtins(action),
    }


def retry_after_s(value: str | None, now: float) -> float:
    """`Retry-After` in seconds from now (delta-seconds or an HTTP date); 0 if absent."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return 0.0


class Outbox:
    """The durable queue of deliveries, one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(_SCHEMA)

    def enqueue(self, actions: list[Action], endpoints: list[Endpoint], now: float) -> int:
        """Queue each action for each endpoint, once per (webhook-id, url)."""
        rows = [
            (a.action_id, e.url, json.dumps(cloud_event(a), ensure_ascii=False), now)
            for a in actions
            for e in endpoints
        ]
        with self.db:
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO outbox (webhook_id, url, body, due) VALUES (?, ?, ?, ?)",
                rows,
            )
            return self.db.total_changes - before

    def due(self, url: str, now: float, limit: int = 100) -> list[tuple[str, str, int]]:
        """(webhook-id, body, attempts so far) of `url`'s rows due by `now`, first due first."""
        return list(
            self.db.execute(
                "SELECT webhook_id, body, attempts FROM outbox WHERE url = ? AND "
                "state = 'pending' AND due <= ? ORDER BY due, webhook_id LIMIT ?",
                (url, now, limit),
            )
        )

    def next_due(self, url: str) -> float | None:
        row = self.db.execute(
            "SELECT MIN(due) FROM outbox WHERE url = ? AND state = 'pending'", (url,)
        ).fetchone()
        return row[0]

    def abandon_unknown(self, urls: list[str]) -> None:
        """Pending rows of endpoints no longer configured become dead letters."""
        marks = ", ".join("?" * len(urls))
        with self.db:
            self.db.execute(
                "UPDATE outbox SET state = 'dead', error = 'endpoint removed' "
                f"WHERE state = 'pending' AND url NOT IN ({marks})",
                urls,
            )

    def mark(self, webhook_id: str, url: str, state: str, attempts: int, due: float, error: str):
        with self.db:
            self.db.execute(
                "UPDATE outbox SET state = ?, attempts = ?, due = ?, error = ? "
                "WHERE webhook_id = ? AND url = ?",
                (state, attempts, due, error, webhook_id, url),
            )

    def revive(self, urls: list[str], now: float) -> list[tuple[str, str, int, str]]:
        """Dead letters of the endpoints `urls` pending again, due `now`, their attempts
        reset so the whole schedule is theirs again (the receiver is back): what they were,
        (webhook-id, url, attempts, error), for the operator's log."""
        marks = ", ".join("?" * len(urls))
        where = f"state = 'dead' AND url IN ({marks})"
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # what is listed is what is revived
            rows = list(
                self.db.execute(
                    f"SELECT webhook_id, url, attempts, error FROM outbox WHERE {where} "
                    "ORDER BY webhook_id, url",
                    urls,
                )
            )
            self.db.execute(
                f"UPDATE outbox SET state = 'pending', attempts = 0, due = ? WHERE {where}",
                [now, *urls],
            )
        return rows

    def hasten(self, urls: list[str], now: float) -> int:
        """Pending rows of the endpoints `urls` not due yet due `now`, whatever the schedule
        or a `Retry-After` said (an operator who knows the receiver is back); how many."""
        marks = ", ".join("?" * len(urls))
        with self.db:
            cursor = self.db.execute(
                "UPDATE outbox SET due = ? WHERE state = 'pending' AND due > ? "
                f"AND url IN ({marks})",
                [now, now, *urls],
            )
            return cursor.rowcount

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))

    def dead(self) -> list[tuple[str, str, int, str]]:
        return list(
            self.db.execute(
                "SELECT webhook_id, url, attempts, error FROM outbox WHERE state = 'dead' "
                "ORDER BY webhook_id"
            )
        )

    def close(self) -> None:
        self.db.close()


class Sender:
    """Delivers what the outbox holds, each endpoint by a worker of its own trying one row
    at a time in `due` order, so an endpoint that hangs delays only its own rows; every
    attempt (connect, send, the whole response) ends by `timeout_s`, however slowly the
    receiver trickles. Delivery runs in a thread and an event loop of its own, whatever
    loop the caller runs, with its own connection to the outbox; one delivery at a time."""

    def __init__(
        self,
        outbox: Outbox,
        endpoints: list[Endpoint],
        policy: WebhookPolicy,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.endpoints = endpoints
        self.signers = {e.url: Webhook(e.secret) for e in endpoints}
        self.policy = policy
        self.rng = rng or random.Random()
        self.tls = httpx.create_ssl_context()  # once: it takes a tenth of a second
        self._background: _Delivery | None = None

    def deliver_due(self) -> int:
        """One pass over the deliveries due now, endpoints side by side; how many were
        attempted."""
        self.stop_background()
        return _Delivery(self, _Pace()).join()

    def run(self, wait_s: float) -> dict[str, int]:
        """Deliver until nothing is pending or `wait_s` has passed; what is left stays in
        the outbox. An attempt starts only within `wait_s` (each endpoint's first one
        always), so this returns within `wait_s` and one `timeout_s`. Returns the
        outbox's counts by state."""
        self.stop_background()
        _Delivery(self, _Pace(deadline=time.monotonic() + wait_s)).join()
        return self.outbox.counts()

    def start_background(self, poll_s: float = 0.2) -> None:
        """Deliver from now on, taking up new rows within `poll_s`, until `stop_background`
        (or `run`, `deliver_due`, `close`)."""
        self.stop_background()
        self._background = _Delivery(self, _Pace(poll_s=poll_s))

    def stop_background(self) -> None:
        """Stop background delivery once the attempts in flight are done (within
        `timeout_s`: one abandoned could reach its receiver unrecorded, then again); raises
        what stopped it, if anything did."""
        if self._background is not None:
            background, self._background = self._background, None
            background.stop()

    def close(self) -> None:
        self.stop_background()

    async def _deliver(self, path: Path, pace: _Pace) -> int:
        outbox = Outbox(path)  # in the delivery's thread, where it is used
        try:
            outbox.abandon_unknown(list(self.signers))
            # no per-read timeouts: each attempt has its deadline
            client = httpx.AsyncClient(timeout=None, verify=self.tls)
            async with client, asyncio.TaskGroup() as group:
                workers = [
                    group.create_task(self._endpoint(client, outbox, url, pace))
                    for url in self.signers
                ]
        finally:
            outbox.close()
        return sum(worker.result() for worker in workers)

    async def _endpoint(
        self,
        client: httpx.AsyncClient,
        outbox: Outbox,
        url: str,
        pace: _Pace,
    ) -> int:
        """One endpoint's rows, one at a time, as long as `pace` says; how many attempts."""
        attempted = 0
        deadline, poll_s = pace.deadline, pace.poll_s
        while not pace.stopping.is_set():
            for webhook_id, body, attempts in outbox.due(url, time.time()):
                late = attempted and deadline is not None and time.monotonic() >= deadline
                if late or pace.stopping.is_set():
                    return attempted
                await self._attempt(client, outbox, webhook_id, url, body, attempts + 1)
                attempted += 1
            upcoming = outbox.next_due(url)
            if poll_s is not None:
                pause = poll_s if upcoming is None else min(poll_s, upcoming - time.time())
            elif deadline is None or upcoming is None:
                return attempted
            else:
                pause = upcoming - time.time()
                if time.monotonic() + pause > deadline:
                    return attempted
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, pause)):
                    await pace.stopping.wait()
        return attempted

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        outbox: Outbox,
        webhook_id: str,
        url: str,
        body: str,
        attempt: int,
    ) -> None:
        stamp = datetime.now(UTC)
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": self.signers[url].sign(webhook_id, stamp, body),
            "content-type": "application/cloudevents+json",
        }
        timeout_s = self.policy.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                response = await client.post(url, content=body.encode(), headers=headers)
        except TimeoutError:
            error = f"no complete response within {timeout_s:g} s"
            self._retry(outbox, webhook_id, url, attempt, error, 0.0)
            return
        except httpx.HTTPError as exc:
            self._retry(outbox, webhook_id, url, attempt, f"{type(exc).__name__}: {exc}", 0.0)
            return
        status = response.status_code
        if 200 <= status < 300:
            outbox.mark(webhook_id, url, "delivered", attempt, 0, "")
        elif status in RETRYABLE or status >= 500:
            wait = retry_after_s(response.headers.get("retry-after"), time.time())
            self._retry(outbox, webhook_id, url, attempt, f"HTTP {status}", wait)
        else:
            outbox.mark(webhook_id, url, "dead", attempt, 0, f"HTTP {status}: not retried")

    def _retry(
        self, outbox: Outbox, webhook_id: str, url: str, attempt: int, error: str, at_least: float
    ) -> None:
        """After failed attempt number `attempt`: the schedule's next delay (never less),
        or a dead letter once the schedule is used up."""
        schedule = self.policy.retry_schedule_s
        if attempt > len(schedule):
            reason = f"{error} after {attempt} attempts"
            outbox.mark(webhook_id, url, "dead", attempt, 0, reason)
            return
        delay = max(at_least, schedule[attempt - 1] * (1 + JITTER * self.rng.random()))
        outbox.mark(webhook_id, url, "pending", attempt, time.time() + delay, error)


@dataclass
class _Pace:
    """How long each endpoint's worker goes on: one pass (no deadline, no polling), until
    `deadline` (time.monotonic()), or, looking for new rows every `poll_s`, until
    `stopping` is set."""

    deadline: float | None = None
    poll_s: float | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class _Delivery:
    """One delivery by `sender` in a thread and an event loop of its own (it opens its
    own connection to the outbox there: an SQLite connection belongs to its thread)."""

    def __init__(self, sender: Sender, pace: _Pace) -> None:
        self.pace = pace
        self.background = pace.poll_s is not None  # nobody waits on it: failures are said
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(sender._deliver(sender.outbox.path, pace))
        self.thread = threading.Thread(target=self._main, daemon=True, name="lockstep-hooks")
        self.thread.start()

    def _main(self) -> None:
        self.loop.run_until_complete(asyncio.wait([self.task]))  # its outcome stays in it
        if self.background and self.task.exception():
            print(
                f"webhooks: background delivery stopped ({_first(self.task.exception())}); "
                "what is undelivered stays in the outbox",
                file=sys.stderr,
            )

    def join(self) -> int:
        """Wait for the end; how many attempts were made, or what failed (a worker's
        failure ends every worker)."""
        self.thread.join()
        self.loop.close()
        error = self.task.exception()
        if error is not None:
            raise _first(error)
        return self.task.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.pace.stopping.set)
        self.join()


def _first(error: BaseException) -> BaseException:
    """The failure itself, out of the group the endpoints' workers raise it in."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def from_settings(cfg: Any, default_outbox: Path) -> tuple[Outbox, Sender] | None:
    """The outbox and sender the settings describe (`webhooks`), or None without
    endpoints. A secret `env:NAME` is read from the environment variable NAME."""
    import os

    if not cfg.endpoints:
        return None
    endpoints = []
    for e in cfg.endpoints:
        secret = e.secret
        if secret.startswith("env:"):
            secret = os.environ.get(secret[4:], "")
            if not secret:
                raise ConfigError(f"webhooks: {e.secret[4:]} is not set (the secret of {e.url})")
        endpoints.append(Endpoint(e.url, secret))
    policy = WebhookPolicy(tuple(cfg.retry_schedule_s), cfg.timeout_s)
    outbox = Outbox(cfg.outbox or default_outbox)
    try:
        return outbox, Sender(outbox, endpoints, policy)
    except Exception as exc:  # the signing library's own error for a malformed secret
        outbox.close()
        raise ConfigError(f"webhooks: a secret is not a valid whsec_ key ({exc})") from exc
