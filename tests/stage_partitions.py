"""Run stages as the distributed runtime does, in one process: an `Ingest` packs a stream
into stage records, `StagePartition`s over `TableCache`s apply them, every state goes
through pickle after each record, one chunk's records are delivered twice (a crash
upstream), and later every partition moves to a new owner, which starts from the table
alone (a rebalance). Tests compare what they find with the embedded `Engine`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pipeline.contract.events import NO_TIME
from pipeline.contract.findings import Action, Finding
from pipeline.core.derived import split_outputs
from pipeline.core.settings import Settings
from pipeline.core.stage import Stage
from pipeline.distributed.runtime import (
    Ingest,
    StagePartition,
    TableCache,
    decode_batch,
    pack_derived,
    upstream_sources,
)
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from pipeline.enforcement.stage import FINDING_STREAM, finding_records


@dataclass
class PartitionedRun:
    found: dict[str, Finding] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)
    parts: dict[tuple[str, int], StagePartition] = field(default_factory=dict)
    tables: dict[str, dict[str, bytes]] = field(default_factory=dict)  # stage -> its table

    moved_duplicates: int = 0  # counted by the owners before the partitions moved

    @property
    def duplicates(self) -> int:
        return self.moved_duplicates + sum(p.runner.duplicates for p in self.parts.values())


def run_partitioned(
    settings: Settings,
    stages: list[Stage],
    lines: list[bytes],
    topics: Topics,
    chunk: int = 2000,
    max_events: int = 500,
) -> PartitionedRun:
    run = PartitionedRun()
    ingest = Ingest(settings, stages, topics)

    def own_every_partition() -> None:
        """A StagePartition per stage partition over its slice of the stage's table: at
        the start, and again when the partitions move (a new owner has the table only)."""
        for stage in stages:
            table = run.tables.setdefault(stage.detector, {})  # each stage its own table
            expected = {"in:0"} | upstream_sources(stage, stages, topics)
            for p in range(topics.partitions):
                cache = TableCache(table, lambda k, p=p: topics.partition_of(k) == p)
                part = StagePartition(stage, cache, expected, 8192)
                run.parts[(topics.stage(stage.detector), p)] = part

    own_every_partition()
    crash = len(lines) // 2 // chunk * chunk
    moved = len(lines) * 3 // 4 // chunk * chunk

    def deliver(records: list[tuple[str, int, bytes]], twice: bool) -> None:
        """Apply stage records as the stage agents would, derived records handed on to
        the stages consuming them; with `twice`, everything is delivered again."""
        queue = deque(records + records if twice else records)
        while queue:
            topic, partition, record = queue.popleft()
            part = run.parts[(topic, partition)]
            outputs, _ = part.apply(decode_batch(record), "s")
            findings, derived, actions = split_outputs(outputs)
            run.found.update((f.finding_id, f) for f in findings)
            run.actions.update((a.action_id, a) for a in actions)
            if FINDING_STREAM in part.runner.stage.emits:
                derived.extend(finding_records(findings))
            part.runner.store.flush()  # every state goes through pickle
            if part.runner.stage.emits:
                handed = list(
                    pack_derived(
                        derived,
                        part.runner.stage,
                        f"{topic}:{partition}",
                        part.watermark,
                        stages,
                        topics,
                    )
                )
                queue.extend(handed + handed if twice else handed)

    for start in range(0, len(lines), chunk):
        raws = lines[start : start + chunk]
        admitted = ingest.admit("in:0", raws, list(range(start, start + len(raws))))
        records = list(ingest.pack([admitted], ingest.busy("in:0"), max_events=max_events))
        deliver(records, twice=start == crash)  # a crash upstream: delivered twice
        if start == moved and moved != crash:
            duplicates = run.duplicates
            own_every_partition()  # a rebalance: new owners, from the table alone,
            run.moved_duplicates = duplicates
            deliver(records, twice=False)  # re-reading what the old one had not committed
    for (topic, partition), part in run.parts.items():  # producers before consumers
        findings, derived, actions = split_outputs(part.runner.flush())
        run.found.update((f.finding_id, f) for f in findings)
        run.actions.update((a.action_id, a) for a in actions)
        if FINDING_STREAM in part.runner.stage.emits:
            derived.extend(finding_records(findings))
        if derived:
            deliver(
                list(
                    pack_derived(
                        derived, part.runner.stage, f"{topic}:{partition}", NO_TIME, stages, topics
                    )
                ),
                twice=False,
            )
    return run


def engine_findings(settings: Settings, stages: list[Stage], lines: list[bytes]) -> list[Finding]:
    """What the embedded runtime finds with `stages` on `lines` (one batch, then the end
    of input): what `run_partitioned` must find too."""
    engine = Engine(settings, stages=stages)
    return [*engine.process(lines, "f").findings, *engine.finish().findings]


def runtimes_agree(
    settings: Settings, stages: list[Stage], lines: list[bytes], topics: Topics, **kw: int
) -> PartitionedRun:
    """Run `stages` both ways and check the distributed runtime finds exactly what the
    embedded one finds (something, despite a crash and redelivery); returns its run."""
    expected = {f.finding_id for f in engine_findings(settings, stages, lines)}
    assert expected, "the stream gives the stages nothing to find"
    run = run_partitioned(settings, stages, lines, topics, **kw)
    assert set(run.found) == expected
    assert run.duplicates > 0
    return run
