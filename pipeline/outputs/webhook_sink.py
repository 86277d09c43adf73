"""Results into the webhook outbox (`pipeline.outputs.webhooks`): each batch's actions
queued for every endpoint, and their delivery, in the background while a stream runs or
at its end, waiting for it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.settings import Settings
from pipeline.outputs.sink import Results, Sink

if TYPE_CHECKING:
    from pipeline.outputs.webhooks import Outbox, Sender


class WebhookSink(Sink):
    """Queues actions in the outbox, a committed transaction per batch; delivery is
    separate, so an endpoint that is slow or down never holds up the results."""

    def __init__(self, outbox: Outbox, sender: Sender) -> None:
        self.outbox, self.sender = outbox, sender

    def write(self, results: Results) -> None:
        if results.actions:
            self.outbox.enqueue(results.actions, self.sender.endpoints, time.time())

    def deliver_in_background(self) -> None:
        """Deliver what falls due from another thread until `deliver` or `close`."""
        self.sender.start_background()

    def deliver(self, wait_s: float) -> dict[str, int]:
        """Deliver in this thread until nothing is pending or `wait_s` has passed (after
        stopping background delivery: one sender at a time); the outbox's counts by state."""
        return self.sender.run(wait_s)

    def close(self) -> None:
        try:
            self.sender.close()
        finally:
            self.outbox.close()


def from_settings(settings: Settings, directory: Path) -> WebhookSink | None:
    """The outbox the settings name (by default DIRECTORY/webhook_outbox.sqlite), or None
    without endpoints; only then are the HTTP client and the signing library imported."""
    if not settings.webhooks.endpoints:
        return None
    from pipeline.outputs import webhooks

    path = Path(settings.webhooks.outbox or directory / "webhook_outbox.sqlite")
    outbox, sender = webhooks.from_settings(settings.webhooks, path)  # endpoints: not None
    return WebhookSink(outbox, sender)
