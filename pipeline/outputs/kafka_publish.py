"""The embedded runtime's actions (and, if asked, findings) on Kafka topics, as workers
write them (docs/contract.md §5), for consumers that already read Kafka.

`replay` and `run` are synchronous; the producer lives on an event loop in its own thread
and each batch's records are handed to it and waited for (acks from every in-sync
replica, idempotent producer) before the batch counts as written, so a record the run has
reported is on the broker. A batch without findings or actions costs nothing. When the
broker cannot take them the run stops with one line saying so, rather than going on with
results missing from the topic.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any

import msgspec

from pipeline.contract.findings import Action, Finding
from pipeline.core.settings import Settings
from pipeline.outputs.sink import Results, Sink

_encode = msgspec.json.Encoder().encode


class PublishError(Exception):
    """The broker did not take the results: one line, for the CLI to print."""


class KafkaPublisher(Sink):
    """Actions, and findings when a findings topic is set, on the topics workers write:
    keyed by action id and by subject, as the workers key them."""

    def __init__(
        self,
        broker: str,
        actions_topic: str,
        findings_topic: str | None,
        partitions: int,
        timeout_s: float = 30.0,
    ) -> None:
        self.broker, self.timeout_s = broker, timeout_s
        self.actions_topic, self.findings_topic = actions_topic, findings_topic
        # aiokafka would print each failed connection attempt: the error raised says it once
        logging.getLogger("aiokafka").addHandler(logging.NullHandler())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="lockstep-publish"
        )
        self._thread.start()
        self._producer: Any = None
        try:
            self._call(self._start(partitions))
        except PublishError:
            self._stop_loop()
            raise

    async def _start(self, partitions: int) -> None:
        from aiokafka import AIOKafkaProducer

        from pipeline.distributed.topics import ensure_topics

        topics = [t for t in (self.actions_topic, self.findings_topic) if t]
        await ensure_topics(self.broker, topics, partitions)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.broker,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=int(self.timeout_s * 1000),
        )
        await producer.start()
        self._producer = producer

    def _call(self, work: Coroutine[Any, Any, Any]) -> Any:
        from aiokafka.errors import KafkaConnectionError  # (100 ms to import: not at start)

        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(self.timeout_s * 2)
        except TimeoutError:
            future.cancel()
            raise PublishError(
                f"Kafka at {self.broker} did not answer within {self.timeout_s * 2:.0f} s"
            ) from None
        except KafkaConnectionError:
            raise PublishError(f"cannot reach Kafka at {self.broker}") from None
        except Exception as exc:  # aiokafka's other errors
            raise PublishError(f"cannot publish to Kafka at {self.broker}: {exc}") from None

    def write(self, results: Results) -> None:
        """Send a batch's findings (when a findings topic is set) and actions, and wait
        until the broker has them."""
        findings = results.findings if self.findings_topic else []
        if findings or results.actions:
            self._call(self._send(findings, results.actions))

    async def _send(self, findings: list[Finding], actions: list[Action]) -> None:
        send = self._producer.send
        acks = [
            await send(self.findings_topic, _encode(f), f.subject_id.encode()) for f in findings
        ]
        acks += [await send(self.actions_topic, _encode(a), a.action_id.encode()) for a in actions]
        await asyncio.gather(*acks)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._call(self._producer.stop())
            finally:
                self._producer = None
                self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def from_settings(settings: Settings) -> KafkaPublisher | None:
    """The publisher `publish` configures, or None when `publish.broker` is empty (and
    then aiokafka is not imported)."""
    cfg = settings.publish
    if not cfg.broker:
        return None
    from pipeline.distributed.topics import Topics

    topics = Topics.from_settings(settings.kafka)
    return KafkaPublisher(
        cfg.broker,
        topics.actions,
        topics.findings if cfg.findings else None,
        settings.kafka.partitions,
    )
