"""Every kind of failure a `lockstep` command reports reads as one line, `lockstep: ...`,
with its exit status (2: what was asked cannot be done, 1: it failed while being done),
through the real command line (typer's runner, in this process). Failures that need a
broker, a busy port or a full disk are raised by the function the command calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.core.sources import InputError
from pipeline.enforcement.policy import DEFAULT_POLICY
from pipeline.outputs.kafka_publish import PublishError

BROKER = "broker.test:9092"


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"LOCKSTEP_KAFKA_BROKER": BROKER})
    return result.exit_code, result.stderr


def _one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _raising(exc: BaseException) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise exc

    return fail


async def _raising_async(*args: object, **kwargs: object) -> None:
    raise ConnectionRefusedError(111, "Connection refused")


def test_a_bad_setting_is_2(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("dedup:\n  horizon: 5\n")
    code, stderr = _cli("config", "--config", str(typo))
    assert code == 2
    assert _one_line(stderr) == (
        "lockstep: invalid config: Object contains unknown field `horizon` - at `$.dedup`"
    )


def test_a_bad_policy_is_2(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(DEFAULT_POLICY.read_text().replace("throttle", "restrict", 1))
    code, stderr = _cli("policy", "check", str(bad))
    assert code == 2
    line = _one_line(stderr)
    assert line.startswith(f"lockstep: policy {bad}: ") and "unknown action 'restrict'" in line


def test_an_audit_store_that_cannot_be_opened_is_2() -> None:
    code, stderr = _cli("audit", "verify", "postgresql://nobody@127.0.0.1:1/none")
    assert code == 2
    line = _one_line(stderr)
    assert line.startswith("lockstep: cannot open audit store postgresql://nobody@127.0.0.1:1/")


def test_unreadable_input_is_1(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    code, stderr = _cli("replay", str(missing), "--out", str(tmp_path / "out"))
    assert code == 1
    assert _one_line(stderr) == f"lockstep: cannot read {missing}: No such file or directory"


def test_outputs_that_cannot_be_written_are_1(tmp_path: Path) -> None:
    events, taken = tmp_path / "empty.jsonl", tmp_path / "a-file"
    events.write_bytes(b"")
    taken.write_text("not a directory")
    code, stderr = _cli("replay", str(events), "--out", str(taken))
    assert code == 1
    assert _one_line(stderr) == f"lockstep: cannot write to {taken}: File exists"


def test_a_commands_own_checks_are_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    code, stderr = _cli("run", str(missing), "--out", str(tmp_path / "out"))
    assert (code, _one_line(stderr)) == (2, f"lockstep: cannot read {missing}: no such file")
    trail = tmp_path / "audit.sqlite"
    code, stderr = _cli("report", "--audit", str(trail), "--from", "2026-01-01", "--to",
                        "2026-02-01", "--out", str(tmp_path))  # fmt: skip
    assert (code, _one_line(stderr)) == (2, f"lockstep: no audit store at {trail}")
    code, stderr = _cli("evaluate", "--labels", "l.json", "--findings", "f.jsonl", "--plot", "p")
    assert (code, _one_line(stderr)) == (
        2,
        "lockstep: --plot needs --events (the activity it draws)",
    )


def test_a_broken_audit_chain_is_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def verify(self) -> tuple[int, str]:
            return 2, "record 3 does not follow record 2"

        def close(self) -> None:
            pass

    monkeypatch.setattr("pipeline.enforcement.audit.open_audit", lambda target: Broken())
    code, stderr = _cli("audit", "verify", "postgresql://trail")
    assert code == 1
    assert _one_line(stderr) == (
        "lockstep: postgresql://trail: record 3 does not follow record 2 (2 records before it hold)"
    )


def test_bad_arguments_and_unreadable_files_of_the_lab(tmp_path: Path) -> None:
    code, stderr = _cli("simulate", "--out", str(tmp_path / "e.jsonl"), "--labels",
                        str(tmp_path / "l.json"), "--scenario", "nope")  # fmt: skip
    assert code == 2 and _one_line(stderr).startswith("lockstep: unknown scenario nope; valid: ")
    missing = tmp_path / "none.json"
    code, stderr = _cli("evaluate", "--labels", str(missing), "--findings", "f.jsonl")
    assert (code, _one_line(stderr)) == (
        1,
        f"lockstep: cannot read {missing}: No such file or directory",
    )
    not_labels = tmp_path / "not-labels.json"
    not_labels.write_text('{"a": 1}\n')
    code, stderr = _cli("evaluate", "--labels", str(not_labels), "--findings", "f.jsonl")
    assert code == 1 and _one_line(stderr).startswith(f"lockstep: {not_labels}: not a labels file")


RAISED = [
    # (command line, the function it calls, what that raises, stderr, exit status)
    (
        ["replay", "-", "--out", "out"],
        "pipeline.embedded.replay.replay",
        PublishError("cannot reach Kafka at 127.0.0.1:1"),
        "lockstep: cannot reach Kafka at 127.0.0.1:1",
        1,
    ),
    (
        ["replay", "-", "--out", "out"],
        "pipeline.embedded.replay.replay",
        InputError("- ends in a corrupt or truncated block"),
        "lockstep: - ends in a corrupt or truncated block",
        1,
    ),
    (
        ["simulate", "--out", "no/e.jsonl", "--labels", "l.json"],
        "pipeline.lab.simulation.simulate",
        FileNotFoundError(2, "No such file or directory"),
        "lockstep: cannot write: No such file or directory",
        1,
    ),
    (
        ["run", "-", "--out", "out", "--metrics-port", "9464"],
        "pipeline.embedded.live.run_live",
        OSError(98, "Address already in use"),
        "lockstep: cannot serve metrics on port 9464: Address already in use",
        2,
    ),
    (
        ["run", "-", "--out", "out", "--metrics-port", "0"],
        "pipeline.embedded.live.run_live",
        FileExistsError(17, "File exists", "out"),
        "lockstep: [Errno 17] File exists: 'out'",
        1,
    ),
    (
        ["run", "-", "--out", "out", "--metrics-port", "0"],
        "pipeline.embedded.live.run_live",
        KeyboardInterrupt(),
        "",
        130,
    ),
    (
        ["sink", "--out", "out"],
        "pipeline.distributed.sink.main",
        KafkaConnectionError("Unable to bootstrap"),
        f"lockstep: cannot reach Kafka at {BROKER}",
        1,
    ),
    (
        ["sink", "--out", "out"],
        "pipeline.distributed.sink.main",
        KafkaError("refused"),
        f"lockstep: cannot read Kafka at {BROKER}: KafkaError: refused",
        1,
    ),
    (
        ["sink", "--out", "out"],
        "pipeline.distributed.sink.main",
        RuntimeError("topic lockstep.actions has no partitions on the broker"),
        f"lockstep: cannot read Kafka at {BROKER}: topic lockstep.actions has no partitions"
        " on the broker",
        1,
    ),
]


@pytest.mark.parametrize(("args", "target", "exc", "line", "code"), RAISED)
def test_failures_while_running(
    args: list[str],
    target: str,
    exc: BaseException,
    line: str,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("signal.signal", lambda *a: None)  # `run` would keep its SIGTERM hook
    monkeypatch.setattr(target, _raising(exc))
    got, stderr = _cli(*args)
    assert got == code
    assert stderr.splitlines() == ([line] if line else [])


def test_a_broker_that_refuses_to_take_events(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("pipeline.distributed.produce.produce", _raising_async)
    code, stderr = _cli("produce", str(tmp_path / "e.jsonl"))
    assert code == 1
    assert _one_line(stderr) == (
        f"lockstep: cannot produce to {BROKER}: [Errno 111] Connection refused"
    )


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("pipeline.embedded.replay.replay", _raising(ZeroDivisionError("bug")))
    result = CliRunner().invoke(app, ["replay", "-", "--out", str(tmp_path)])
    assert isinstance(result.exception, ZeroDivisionError) and "lockstep:" not in result.stderr


def test_usage_errors_are_clicks_own() -> None:
    code, stderr = _cli("replay", "events.jsonl")
    assert code == 2 and "Missing option '--out'" in stderr and "lockstep:" not in stderr
