"""A refused action's reason is one short line, whatever the record holds: the value it
quotes is cut (a 1 MB `mode` must not make a 1 MB log line), where it is stays whole."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from pipeline.contract.findings import QUOTE_CHARS, Action, InvalidAction, read_action
from pipeline.serve.throttle import ActionsFile, ThrottleMetrics, ThrottleTable

MB = 1 << 20


def _record(**changes: object) -> bytes:
    action = Action(
        action_id="a1", action="warn", subject_type="account", subject_id="u1",
        basis=["18", "19"], finding_ids=["f1"], mode="enforce", ts=1_767_225_600_000,
    )  # fmt: skip
    return json.dumps({**msgspec.to_builtins(action), **changes}).encode()


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"mode": "m" * MB}, "`$.mode`"),
        ({"mode": "it's " + "m" * MB}, "`$.mode`"),  # quoted "...", with a ' inside
        ({"mode": "\\" * MB}, "`$.mode`"),  # escapes, cut between two of them
        ({"action": "throttle", "params": {"unit": "u" * MB}}, "`$.params.unit`"),
    ],
    ids=["mode", "quoted-with-apostrophe", "backslashes", "params"],
)
def test_a_huge_bad_value_is_quoted_cut_and_the_reason_keeps_where(
    changes: dict[str, object], where: str
) -> None:
    with pytest.raises(InvalidAction) as refused:
        read_action(_record(**changes))
    reason = str(refused.value)
    assert len(reason) < QUOTE_CHARS + 100, len(reason)
    assert reason.endswith(where) and "…" in reason and "\n" not in reason


def test_a_short_bad_value_is_quoted_whole() -> None:
    with pytest.raises(InvalidAction) as refused:
        read_action(_record(mode="m" * QUOTE_CHARS))
    assert str(refused.value) == f"Invalid enum value '{'m' * QUOTE_CHARS}' - at `$.mode`"


def test_the_hook_logs_a_huge_unknown_measure_in_one_short_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The throttling hook's own refusal (a measure it does not know) is cut the same."""
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(_record(action="x" * MB) + b"\n")
    table = ThrottleTable()
    metrics = ThrottleMetrics(table)
    ActionsFile(str(actions), table, metrics).load()
    (logged,) = capsys.readouterr().err.splitlines()
    assert logged.startswith("throttle: refused line 1") and "is not a measure" in logged
    assert len(logged) < len(str(actions)) + QUOTE_CHARS + 100, len(logged)
