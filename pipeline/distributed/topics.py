"""Topic names of the distributed runtime, the partitioner every stage agrees on, and the
creation of missing topics.

{prefix}.events.{type}    input, one topic per event type (contract JSON, key event_id)
{prefix}.events.unrouted  input whose type could not be read; the gate dead-letters it
{prefix}.stage.{detector} repartitioned, validated events for one stage, by its key
{prefix}.findings         contract findings (key: subject_id)
{prefix}.actions          contract actions (key: action_id, so compaction keeps one each)
{prefix}.dead-letters     rejected inputs with their reason (key: none)
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.partitioner import murmur2

from pipeline.contract.events import EVENT_TYPES
from pipeline.core.settings import KafkaSettings

UNROUTED = "unrouted"


@dataclass(frozen=True)
class Topics:
    prefix: str
    partitions: int

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> Topics:
        return cls(kafka.topic_prefix, kafka.partitions)

    def input(self, event_type: str) -> str:
        return f"{self.prefix}.events.{event_type}"

    @property
    def inputs(self) -> list[str]:
        return [self.input(t) for t in (*EVENT_TYPES, UNROUTED)]

    def stage(self, detector: str) -> str:
        return f"{self.prefix}.stage.{detector}"

    @property
    def findings(self) -> str:
        return f"{self.prefix}.findings"

    @property
    def actions(self) -> str:
        return f"{self.prefix}.actions"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letters"

    def partition_of(self, key: str) -> int:
        """Kafka's default partition for a key (murmur2), so any client agrees with us."""
        return (murmur2(key.encode()) & 0x7FFFFFFF) % self.partitions


async def ensure_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Create the topics that do not exist yet, with the configured partition count."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()
