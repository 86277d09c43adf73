"""Alert webhooks: actions to HTTP endpoints, signed (Standard Webhooks), as CloudEvents.

Every action is first written to a durable outbox (SQLite): one row per (webhook-id,
endpoint), where the webhook-id is the action's own deterministic id, so enqueuing the
same action again (a restart, a replay) adds nothing and a receiver can drop repeats by
id. Delivery reads the outbox: a POST with `webhook-id`, `webhook-timestamp` and
`webhook-signature` (HMAC-SHA256 over id, timestamp and body, by the `standardwebhooks`
package) and a CloudEvents 1.0 JSON body; a 2xx marks the row delivered, a 408, 429 or
5xx or a network error schedules a retry with exponential backoff and jitter (never
sooner than the receiver's `Retry-After`), any other status or the end of the retry
budget makes it a dead letter with the reason. A process that stops mid-way leaves the
rest in the outbox for the next (`lockstep webhooks deliver`).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
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


class Endpoint(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    secret: str  # whsec_... (base64), as Standard Webhooks has receivers hold it


class WebhookPolicy(msgspec.Struct, forbid_unknown_fields=True):
    max_attempts: int = 8
    first_backoff_s: float = 1.0
    max_backoff_s: float = 600.0
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

    def due(self, now: float, limit: int = 100) -> list[tuple[str, str, str, int]]:
        return list(
            self.db.execute(
                "SELECT webhook_id, url, body, attempts FROM outbox "
                "WHERE state = 'pending' AND due <= ? ORDER BY due, webhook_id LIMIT ?",
                (now, limit),
            )
        )

    def next_due(self) -> float | None:
        row = self.db.execute("SELECT MIN(due) FROM outbox WHERE state = 'pending'").fetchone()
        return row[0]

    def mark(self, webhook_id: str, url: str, state: str, attempts: int, due: float, error: str):
        with self.db:
            self.db.execute(
                "UPDATE outbox SET state = ?, attempts = ?, due = ?, error = ? "
                "WHERE webhook_id = ? AND url = ?",
                (state, attempts, due, error, webhook_id, url),
            )

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
    """Delivers what the outbox holds, signing each request for its endpoint."""

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
        self.client = httpx.Client(timeout=policy.timeout_s)

    def deliver_due(self, now: float | None = None) -> int:
        """One pass over the deliveries due now; how many were attempted."""
        now = time.time() if now is None else now
        batch = self.outbox.due(now)
        for webhook_id, url, body, attempts in batch:
            self._attempt(webhook_id, url, body, attempts + 1)
        return len(batch)

    def run(self, wait_s: float) -> dict[str, int]:
        """Deliver until nothing is pending or `wait_s` has passed; what is left stays in
        the outbox. Returns the outbox's counts by state."""
        deadline = time.monotonic() + wait_s
        while True:
            self.deliver_due()
            nxt = self.outbox.next_due()
            if nxt is None:
                break
            pause = max(0.0, nxt - time.time())
            if time.monotonic() + pause > deadline:
                break
            time.sleep(min(pause, 1.0) if pause else 0.0)
        return self.outbox.counts()

    def _attempt(self, webhook_id: str, url: str, body: str, attempt: int) -> None:
        stamp = datetime.now(UTC)
        signer = self.signers.get(url)
        if signer is None:
            self.outbox.mark(webhook_id, url, "dead", attempt - 1, 0, "endpoint removed")
            return
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": signer.sign(webhook_id, stamp, body),
            "content-type": "application/cloudevents+json",
        }
        try:
            response = self.client.post(url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            self._retry(webhook_id, url, attempt, f"{type(exc).__name__}: {exc}", 0.0)
            return
        status = response.status_code
        if 200 <= status < 300:
            self.outbox.mark(webhook_id, url, "delivered", attempt, 0, "")
        elif status in RETRYABLE or status >= 500:
            wait = retry_after_s(response.headers.get("retry-after"), time.time())
            self._retry(webhook_id, url, attempt, f"HTTP {status}", wait)
        else:
            self.outbox.mark(webhook_id, url, "dead", attempt, 0, f"HTTP {status}: not retried")

    def _retry(self, webhook_id: str, url: str, attempt: int, error: str, at_least: float):
        policy = self.policy
        if attempt >= policy.max_attempts:
            reason = f"{error} after {attempt} attempts"
            self.outbox.mark(webhook_id, url, "dead", attempt, 0, reason)
            return
        backoff = min(policy.max_backoff_s, policy.first_backoff_s * 2 ** (attempt - 1))
        delay = max(at_least, backoff * (0.5 + 0.5 * self.rng.random()))  # jitter
        self.outbox.mark(webhook_id, url, "pending", attempt, time.time() + delay, error)

    def close(self) -> None:
        self.client.close()


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
    policy = WebhookPolicy(cfg.max_attempts, cfg.first_backoff_s, cfg.max_backoff_s, cfg.timeout_s)
    outbox = Outbox(cfg.outbox or default_outbox)
    try:
        return outbox, Sender(outbox, endpoints, policy)
    except Exception as exc:  # the signing library's own error for a malformed secret
        outbox.close()
        raise ConfigError(f"webhooks: a secret is not a valid whsec_ key ({exc})") from exc
