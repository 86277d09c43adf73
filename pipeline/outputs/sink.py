"""The `Sink` interface: one place a run's results go. Each output (JSON lines files, the
audit trail, the webhook outbox, Kafka topics) is one `Sink`; `pipeline.outputs.fanout`
hands every batch to each sink the settings ask for."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.findings import Action, Finding


class Results(Protocol):
    """One batch's outputs: the engine's `BatchResult`, or what `lockstep sink` read from
    Kafka. Findings come before the actions taken on them."""

    findings: list[Finding]
    actions: list[Action]
    dead_letters: list[DeadLetter]


class Sink(ABC):
    """Where results go. A sink takes each batch in order or raises: a run that cannot
    write its results stops rather than go on without them."""

    @abstractmethod
    def write(self, results: Results) -> None:
        """Take one batch, in the order given. On return the batch is as safe as this
        output makes it: committed (the audit trail, the webhook outbox), acknowledged by
        the broker (Kafka), or buffered until `flush` (files). Writing the same batch
        again adds nothing where records are kept by id (the trail, the outbox)."""

    def flush(self) -> None:  # noqa: B027 - not abstract: most outputs have nothing to do
        """Make every record written so far visible to readers that follow this output
        (a tailed actions.jsonl). An output that commits in `write` has nothing to do."""

    @abstractmethod
    def close(self) -> None:
        """Flush, then release the files, connections and threads; nothing is written
        after."""
