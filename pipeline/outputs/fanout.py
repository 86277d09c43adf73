"""Where results go: JSON lines files (one record per line, contract field names), the
audit trail, and the webhook outbox (delivered in the background while a stream runs)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


class JsonlSink:
    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = path
        self._file = open(path, "ab" if append else "wb")  # noqa: SIM115 - closed in close()
        self.count = 0

    def write(self, records: Iterable[Any]) -> None:
        chunk = b"".join(_encode(r) + b"\n" for r in records)
        if chunk:
            self._file.write(chunk)
            self.count += chunk.count(b"\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class OutputDir:
    """findings.jsonl, actions.jsonl and dead_letter.jsonl in one directory."""

    def __init__(self, directory: str | Path, append: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.findings = JsonlSink(self.dir / "findings.jsonl", append)
        self.actions = JsonlSink(self.dir / "actions.jsonl", append)
        self.dead_letters = JsonlSink(self.dir / "dead_letter.jsonl", append)

    def write(self, result: Any) -> None:
        self.findings.write(result.findings)
        self.actions.write(result.actions)
        self.dead_letters.write(result.dead_letters)

    def flush(self) -> None:
        for sink in (self.findings, self.actions, self.dead_letters):
            sink.flush()

    def close(self) -> None:
        for sink in (self.findings, self.actions, self.dead_letters):
            sink.close()


class ResultSinks:
    """Every place a run's results go: the JSON lines files, the audit trail, with webhook
    endpoints configured the webhook outbox, and with `publish.broker` set (and `publish`)
    Kafka topics (what `replay` and `run` share; `lockstep sink` reads Kafka, so it does
    not publish)."""

    def __init__(
        self,
        out: str | Path,
        settings: Any,
        audit: str | None = None,
        fresh: bool = False,
        append: bool = False,
        publish: bool = True,
    ) -> None:
        from pipeline.enforcement.audit import open_audit
        from pipeline.outputs import kafka_publish, webhooks

        # first: a broker that cannot be reached stops the run before it writes anything
        self.kafka = kafka_publish.from_settings(settings) if publish else None
        self.dir = Path(out)
        self.files = OutputDir(out, append)  # append: a process that restarts keeps adding
        if audit is None:
            trail = self.dir / "audit.sqlite"
            if fresh:  # a replay's trail holds that run, like its findings.jsonl
                trail.unlink(missing_ok=True)
            audit = str(trail)
        self.audit = open_audit(audit)
        self.settings = settings
        self.outbox_path = Path(settings.webhooks.outbox or self.dir / "webhook_outbox.sqlite")
        self.hooks = webhooks.from_settings(settings.webhooks, self.outbox_path)

    def write(self, result: Any) -> None:
        self.files.write(result)
        if result.findings:
            self.audit.append("finding", result.findings, "finding_id")
        if result.actions:
            self.audit.append("action", result.actions, "action_id")
            if self.hooks is not None:
                self.hooks[0].enqueue(result.actions, self.hooks[1].endpoints, time.time())
        if self.kafka is not None:
            self.kafka.publish(result.findings, result.actions)

    def flush(self) -> None:
        self.files.flush()

    def deliver(self, wait_s: float) -> dict[str, int] | None:
        """Deliver the outbox for up to `wait_s`; its counts by state (None: no webhooks)."""
        return None if self.hooks is None else self.hooks[1].run(wait_s)

    def close(self) -> None:
        self.files.close()
        self.audit.close()
        if self.kafka is not None:
            self.kafka.close()
        if self.hooks is not None:
            self.hooks[1].close()
            self.hooks[0].close()


class BackgroundDelivery:
    """Delivers a webhook outbox from its own thread (and its own connection to the
    outbox), so a slow endpoint never holds up the stream."""

    def __init__(self, settings: Any, outbox: Path, every_s: float = 0.2) -> None:
        import threading

        self.settings, self.outbox, self.every_s = settings, outbox, every_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="lockstep-hooks")
        self.thread.start()

    def _loop(self) -> None:
        from pipeline.outputs import webhooks

        hooks = webhooks.from_settings(self.settings.webhooks, self.outbox)
        if hooks is None:
            return
        box, sender = hooks
        try:
            while not self.stopping.wait(self.every_s):
                sender.deliver_due()
        finally:
            sender.close()
            box.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
