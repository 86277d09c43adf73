"""Every place a run's results go, as one: the sinks its settings ask for, each given every
batch in turn. `replay`, `run` and `lockstep sink` write their results through it; a new
output is a `Sink` and one line in `Fanout.from_settings`."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.settings import Settings
from pipeline.outputs import kafka_publish, webhook_sink
from pipeline.outputs.audit_sink import AuditSink
from pipeline.outputs.jsonl_sink import JsonlSink
from pipeline.outputs.sink import Results, Sink
from pipeline.outputs.webhook_sink import WebhookSink


class Fanout(Sink):
    """Writes each batch to every sink, in their order: one that fails stops the batch
    there, its error raised, so no output gets results an earlier one refused (no webhook
    for an action the trail did not take)."""

    def __init__(self, sinks: list[Sink], webhooks: WebhookSink | None = None) -> None:
        self.sinks = sinks
        self.webhooks = webhooks  # one of `sinks`, for its delivery

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        out: Path,
        *,
        audit: str | None = None,
        fresh: bool = False,
        append: bool = False,
        publish: bool = True,
    ) -> Fanout:
        """The JSON lines files in `out` (`append`: added to, each finding and action once
        across restarts, else started anew), the audit trail (`audit`, by default
        OUT/audit.sqlite, started anew when `fresh`), with webhook endpoints the webhook
        outbox, and with `publish` and `publish.broker` set the Kafka topics (`lockstep
        sink` reads those, so it does not publish)."""
        # first: a broker that cannot be reached stops the run before it writes anything
        kafka = kafka_publish.from_settings(settings) if publish else None
        files = JsonlSink(out, append)
        trail = AuditSink.open(audit, out, fresh)
        webhooks = webhook_sink.from_settings(settings, out)
        sinks = [files, trail, webhooks, kafka]
        return cls([sink for sink in sinks if sink is not None], webhooks)

    def write(self, results: Results) -> None:
        for sink in self.sinks:
            sink.write(results)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        """Close every sink, even after one fails to; the first failure is raised."""
        failure: Exception | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
