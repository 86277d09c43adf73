"""`lockstep sink`: the distributed deployment's findings and actions, read from Kafka,
to the other outputs `replay` writes (`pipeline.outputs.fanout`).

Workers write findings and actions to their topics; one sink process (its own consumer
group, `<prefix>-sink`) reads both and, batch by batch, appends them to OUT's JSON lines
files (the throttling hook and the review API follow OUT/actions.jsonl), the audit trail
(PostgreSQL in production) and the webhook outbox (delivered by a background thread);
then it commits the offsets. A record that is not a finding or an action (as the
contract's readers, `read_finding` and `read_action`, decide) or that the trail cannot
store is written to `OUT/dead_letter.jsonl` with its reason, topic, partition and offset,
and the sink goes on: a record that stopped the sink would stop it again each time it
started, since the batch is re-read. A crash re-reads a batch: the trail and the outbox
take each id once, and so do the JSON lines files: opened to append, each cuts off a line
a kill tore and skips the findings and actions its last lines hold (`jsonl_sink`, sized by
BATCH_RECORDS). Dead letters of a re-read batch are written again.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.contract.deadletter import DeadLetter, dead_letter
from pipeline.contract.findings import (
    Action,
    Finding,
    InvalidRecord,
    read_action,
    read_finding,
)
from pipeline.core.settings import Settings
from pipeline.distributed.kafka_io import partitions_of
from pipeline.distributed.topics import Topics, ensure_topics
from pipeline.enforcement.audit import UnstorableRecord, storable
from pipeline.outputs.fanout import Fanout
from pipeline.outputs.jsonl_sink import BATCH_RECORDS


class _Batch:
    """A batch as a `Sink` takes it (`Results`): its findings, actions and the records
    refused."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.actions: list[Action] = []
        self.dead_letters: list[DeadLetter] = []

    def take(self, record: Any, is_finding: bool, keep_bytes: int) -> None:
        """A record's finding or action; one that is not (another writer's mistake, a
        corrupt record) becomes a dead letter naming its topic, partition and offset."""
        value: bytes | None = record.value
        try:
            if value is None:  # a tombstone: no record at all
                raise InvalidRecord("no value", "invalid_json")
            if is_finding:
                finding = read_finding(value)
                storable(finding.finding_id, "the finding_id of a finding")
                self.findings.append(finding)
            else:
                action = read_action(value)
                storable(action.action_id, "the action_id of an action")
                self.actions.append(action)
        except (InvalidRecord, UnstorableRecord) as exc:
            reason = exc.reason if isinstance(exc, InvalidRecord) else "invalid_value"
            where = f"{record.topic}:{record.partition}"
            self.dead_letters.append(
                dead_letter(reason, str(exc), where, record.offset, value or b"", keep_bytes)
            )


async def run_sink(settings: Settings, out: Path, audit: str | None, stop: asyncio.Event) -> int:
    """Consume until `stop` is set; returns how many records were taken in."""
    topics = Topics.from_settings(settings.kafka)
    outputs = Fanout.from_settings(settings, out, audit=audit, append=True, publish=False)
    if outputs.webhooks is not None:
        outputs.webhooks.deliver_in_background()
    wanted = [topics.findings, topics.actions]
    keep = settings.input.dead_letter_raw_bytes
    await ensure_topics(settings.kafka.broker, wanted, settings.kafka.partitions)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.broker,
        group_id=f"{settings.kafka.topic_prefix}-sink",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    await _assign_all(consumer, wanted)
    taken = 0
    try:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=500, max_records=BATCH_RECORDS)
            if not got:
                continue
            batch = _Batch()
            for tp, records in got.items():
                for record in records:
                    batch.take(record, tp.topic == topics.findings, keep)
            batch.findings.sort(key=lambda f: (f.ts, f.finding_id))
            batch.actions.sort(key=lambda a: (a.ts, a.action_id))
            outputs.write(batch)  # findings before the actions on them
            outputs.flush()
            await consumer.commit()
            taken += len(batch.findings) + len(batch.actions)
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # aiokafka cancels its idle task
            await consumer.stop()
        outputs.close()
    return taken


async def _assign_all(consumer: AIOKafkaConsumer, topics: list[str]) -> None:
    """Take every partition of `topics` and start each at the group's committed offset
    (the beginning if none). One sink reads everything, so there is nothing to balance:
    a group subscription formed while a new topic's metadata was still missing would
    leave that topic unread until the next rebalance."""
    partitions: list[TopicPartition] = []
    for topic in topics:
        found = await partitions_of(consumer, topic, wait_s=30)
        if not found:
            raise RuntimeError(f"topic {topic} has no partitions on the broker")
        partitions += [TopicPartition(topic, p) for p in found]
    consumer.assign(partitions)
    for tp in partitions:
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


def main(settings: Settings, out: Path, audit: str | None) -> None:
    """Run until SIGINT or SIGTERM."""
    import signal

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_sink(settings, out, audit, stop)

    asyncio.run(go())
