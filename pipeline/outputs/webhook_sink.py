"""Results into the webhook outbox (`pipeline.outputs.webhooks`): each batch's actions
queued for every endpoint, and their delivery, from a background thread while a stream
runs or in the caller's thread at its end."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.settings import Settings
from pipeline.outputs.sink import Results, Sink

if TYPE_CHECKING:
    from pipeline.outputs.webhooks import Endpoint, Outbox, Sender, WebhookPolicy


class WebhookSink(Sink):
    """Queues actions in the outbox, a committed transaction per batch; delivery is
    separate, so an endpoint that is slow or down never holds up the results."""

    def __init__(self, outbox: Outbox, sender: Sender) -> None:
        self.outbox, self.sender = outbox, sender
        self._background: _BackgroundDelivery | None = None

    def write(self, results: Results) -> None:
        if results.actions:
            self.outbox.enqueue(results.actions, self.sender.endpoints, time.time())

    def deliver_in_background(self) -> None:
        """Deliver what falls due from another thread until `deliver` or `close`."""
        self._background = _BackgroundDelivery(
            self.outbox.path, self.sender.endpoints, self.sender.policy
        )

    def deliver(self, wait_s: float) -> dict[str, int]:
        """Deliver in this thread until nothing is pending or `wait_s` has passed (after
        stopping background delivery: one sender at a time); the outbox's counts by state."""
        self._stop_background()
        return self.sender.run(wait_s)

    def close(self) -> None:
        self._stop_background()
        self.sender.close()
        self.outbox.close()

    def _stop_background(self) -> None:
        if self._background is not None:
            self._background.stop()
            self._background = None


class _BackgroundDelivery:
    """A thread delivering the outbox at `path` to `endpoints`, with its own connection to
    it (an SQLite connection belongs to one thread) and its own sender."""

    def __init__(
        self, path: Path, endpoints: list[Endpoint], policy: WebhookPolicy, every_s: float = 0.2
    ) -> None:
        self.path, self.endpoints, self.policy, self.every_s = path, endpoints, policy, every_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="lockstep-hooks")
        self.thread.start()

    def _loop(self) -> None:
        from pipeline.outputs.webhooks import Outbox, Sender

        outbox = Outbox(self.path)
        sender = Sender(outbox, self.endpoints, self.policy)
        try:
            while not self.stopping.wait(self.every_s):
                sender.deliver_due()
        finally:
            sender.close()
            outbox.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)


def from_settings(settings: Settings, directory: Path) -> WebhookSink | None:
    """The outbox the settings name (by default DIRECTORY/webhook_outbox.sqlite), or None
    without endpoints; only then are the HTTP client and the signing library imported."""
    if not settings.webhooks.endpoints:
        return None
    from pipeline.outputs import webhooks

    path = Path(settings.webhooks.outbox or directory / "webhook_outbox.sqlite")
    outbox, sender = webhooks.from_settings(settings.webhooks, path)  # endpoints: not None
    return WebhookSink(outbox, sender)
