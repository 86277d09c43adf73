"""`lockstep sink` writes a batch to OUT's JSON lines files before it commits the batch's
offsets, so a sink killed in between (or whose trail append failed) reads the batch again
when it restarts. The files it appends to hold each finding and action once all the same,
and a line the kill tore is cut off, to be written whole again. Without a broker: the
`Fanout` the sink builds (`append=True`, no publishing), restarted on the same directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.findings import Action, Finding, make_finding
from pipeline.core.settings import load_settings
from pipeline.outputs import jsonl_sink
from pipeline.outputs.fanout import Fanout
from tests.helpers import MINUTE, T0


@dataclass
class Batch:
    findings: list[Finding] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def _batch(*subjects: str) -> Batch:
    """A finding on each subject and an action on each finding, as the sink orders them."""
    batch = Batch()
    for subject in subjects:
        finding = make_finding(
            detector="follower_jump", article="12", subject_type="account",
            subject_id=subject, window_start=T0, window_end=T0 + 10 * MINUTE,
            score=0.91, severity="high", members=[f"bot{i}" for i in range(3)],
            evidence={"new_followers": 300},
        )  # fmt: skip
        action = Action(
            action_id=f"act-{subject}", action="human_review", subject_type="account",
            subject_id=subject, basis=["12"], finding_ids=[finding.finding_id], mode="enforce",
            ts=finding.ts,
        )  # fmt: skip
        batch.findings.append(finding)
        batch.actions.append(action)
    return batch


def _joined(*batches: Batch) -> Batch:
    return Batch([f for b in batches for f in b.findings], [a for b in batches for a in b.actions])


def _sink_outputs(out: Path) -> Fanout:
    """The outputs as `run_sink` opens them (the default trail, no webhooks, no Kafka)."""
    return Fanout.from_settings(load_settings(), out, audit=None, append=True, publish=False)


def _run(out: Path, *batches: Batch) -> None:
    """One sink process: each batch written and flushed, as before a commit. Closing adds
    nothing to the files, so it leaves them as a kill after the last flush would."""
    outputs = _sink_outputs(out)
    for batch in batches:
        outputs.write(batch)
        outputs.flush()
    outputs.close()


def _ids(path: Path, key: str) -> list[str]:
    """The ids in `path`, line by line: every line must be a whole JSON record."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line)[key] for line in data.decode().split("\n")[:-1]]


def _expect(out: Path, batch: Batch) -> None:
    assert _ids(out / "findings.jsonl", "finding_id") == [f.finding_id for f in batch.findings]
    assert _ids(out / "actions.jsonl", "action_id") == [a.action_id for a in batch.actions]


def test_a_batch_read_again_after_a_restart_is_written_once(tmp_path: Path) -> None:
    committed, uncommitted, new = _batch("a", "b"), _batch("c", "d", "e"), _batch("f", "g")
    _run(tmp_path, committed, uncommitted)  # killed before the second commit
    _run(tmp_path, _joined(uncommitted, new))  # the restart reads it again, then more
    _expect(tmp_path, _joined(committed, uncommitted, new))


def test_a_batch_read_again_over_several_batches_is_written_once(tmp_path: Path) -> None:
    """The first batch after a restart may hold only some of the records read again (one
    partition's, say): the ids already written are skipped past it too."""
    uncommitted, new = _batch("a", "b", "c", "d"), _batch("e", "f")
    _run(tmp_path, uncommitted)
    again = _batch("b", "a"), _joined(new, _batch("d", "c"))
    _run(tmp_path, *again)
    _expect(tmp_path, _joined(uncommitted, new))


def test_a_line_torn_by_a_kill_is_cut_and_written_whole_again(tmp_path: Path) -> None:
    committed, uncommitted = _batch("a", "b"), _batch("c", "d", "e")
    _run(tmp_path, committed)
    torn = _batch("c", "d")  # killed while writing: "d" half written in both files
    for name, records in (("findings", torn.findings), ("actions", torn.actions)):
        whole, half = (msgspec.json.encode(r) for r in records)
        with open(tmp_path / f"{name}.jsonl", "ab") as handle:
            handle.write(whole + b"\n" + half[: len(half) // 2])
    _run(tmp_path, uncommitted)
    _expect(tmp_path, _joined(committed, uncommitted))


def test_a_whole_last_record_without_its_newline_is_kept_once(tmp_path: Path) -> None:
    """Killed between a record and its newline: the record is whole, so it is kept (its
    newline added) and not written again."""
    uncommitted = _batch("a", "b")
    for name, records in (("findings", uncommitted.findings), ("actions", uncommitted.actions)):
        (tmp_path / f"{name}.jsonl").write_bytes(msgspec.json.encode(records[0]))
    _run(tmp_path, uncommitted)
    _expect(tmp_path, uncommitted)


def test_a_torn_dead_letter_line_is_cut(tmp_path: Path) -> None:
    (tmp_path / "dead_letter.jsonl").write_bytes(b'{"reason": "invalid_json"}\n{"reason": "inv')
    _sink_outputs(tmp_path).close()
    assert (tmp_path / "dead_letter.jsonl").read_bytes() == b'{"reason": "invalid_json"}\n'


def test_only_the_tail_is_read_for_the_ids_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids kept are those of the last RESUME_LINES lines, read backwards a chunk at a
    time: memory and start-up time stay bounded however long the file grew."""
    monkeypatch.setattr(jsonl_sink, "RESUME_LINES", 3)
    monkeypatch.setattr(jsonl_sink, "CHUNK_BYTES", 64)  # several chunks per line
    written = _batch("a", "b", "c", "d", "e")
    _run(tmp_path, written)
    _run(tmp_path, _batch("a", "d", "e", "f"))  # a: too far back to be seen
    _expect(tmp_path, _joined(written, _batch("a", "f")))


def test_crashes_in_a_row_before_a_commit_are_covered(tmp_path: Path) -> None:
    """Two full batches written and never committed (the restart after the first crash
    read further in another partition), then read again: each id once."""
    subjects = [f"s{n}" for n in range(2 * jsonl_sink.BATCH_RECORDS + 10)]
    first = _batch(*subjects[: jsonl_sink.BATCH_RECORDS])
    second = _batch(*subjects[jsonl_sink.BATCH_RECORDS : 2 * jsonl_sink.BATCH_RECORDS])
    _run(tmp_path, first)
    _run(tmp_path, second)
    _run(tmp_path, second, _batch(*subjects), first)
    _expect(tmp_path, _batch(*subjects))


def test_a_fresh_run_starts_the_files_anew(tmp_path: Path) -> None:
    batch = _batch("a", "b")
    _run(tmp_path, batch)
    outputs = Fanout.from_settings(load_settings(), tmp_path, fresh=True, publish=False)
    outputs.write(batch)
    outputs.close()
    _expect(tmp_path, batch)


def test_a_finding_sent_again_while_the_sink_runs_is_written_once(tmp_path: Path) -> None:
    """A worker that crashed sends findings and actions it had already sent (the
    contract's at-least-once): one sink process writes each once however late the copy
    comes within its last RESUME_LINES ids."""
    first, second = _batch("acct1", "acct2"), _batch("acct3")
    _run(tmp_path, first, second, _batch("acct2", "acct1"))  # the copies, two batches on
    _expect(tmp_path, _joined(first, second))
