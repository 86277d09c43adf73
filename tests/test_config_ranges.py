"""Every number of the settings and of the policy is refused, in one line, outside its
range, and so is a file YAML cannot use: a NaN credit or threshold makes every comparison
it meets false, which quietly changes who is throttled and who is closed (with `top: .nan`
the default policy closed the accounts it throttles)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core import settings
from pipeline.core.settings import DEFAULT_CONFIG, ConfigError, load_settings, read_yaml
from pipeline.enforcement.policy import DEFAULT_POLICY, PolicyError, load_policy
from tests.helpers import lockstep

Path_ = tuple[str | int, ...]  # keys and list indices from the top of a YAML document


def _refusal(*args: str) -> str:
    """The one line `lockstep ARGS` refuses with (exit status 2)."""
    run = lockstep(*args)
    lines = run.stderr.decode().strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr.decode()
    return lines[0]


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (("top: 100 ", "top: .nan "), "`$.credit.top`"),
        (("top: 100 ", "top: .inf "), "`$.credit.top`"),
        (("recover_per_day: 5 ", "recover_per_day: .nan "), "`$.credit.recover_per_day`"),
        (("critical: 25", "critical: -1000"), "`$.credit.cost[...]`"),
        (("cooldown_s: 3600 ", "cooldown_s: -3600 "), "`$.cooldown_s`"),
        (("requests_per_unit: 20", "requests_per_unit: -5"), "requests_per_unit"),
    ],
)
def test_policy_check_refuses_numbers_out_of_range(
    tmp_path: Path, edit: tuple[str, str], where: str
) -> None:
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    assert edit[0] in text
    bad = tmp_path / "policy.yaml"
    bad.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    line = _refusal("policy", "check", str(bad))
    assert line.startswith(f"lockstep: policy {bad}: ") and where in line


@pytest.mark.parametrize(
    ("overlay", "where"),
    [
        ("input:\n  max_event_bytes: 0\n", "`$.input.max_event_bytes`"),
        (
            "detectors:\n  follower_jump:\n    z_threshold: .nan\n",
            "`$.detectors.follower_jump.z_threshold`",
        ),
    ],
)
def test_config_refuses_numbers_out_of_range(tmp_path: Path, overlay: str, where: str) -> None:
    bad = tmp_path / "lockstep.yaml"
    bad.write_text(overlay, encoding="utf-8")
    line = _refusal("config", "--config", str(bad))
    assert line.startswith("lockstep: invalid config: ") and where in line


def _numbers(data: Any, path: Path_ = ()) -> Iterator[Path_]:
    """The path of every number in a YAML document."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _numbers(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _numbers(value, (*path, i))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        yield path


def _replaced(data: Any, path: Path_, value: float) -> Any:
    """`data` with the number at `path` replaced by `value`."""
    if not path:
        return value
    head, *rest = path
    if isinstance(data, dict):
        return {k: _replaced(v, tuple(rest), value) if k == head else v for k, v in data.items()}
    return [_replaced(v, tuple(rest), value) if i == head else v for i, v in enumerate(data)]


NOT_FINITE = [math.nan, math.inf]
DEFAULTS = read_yaml(DEFAULT_CONFIG)
SETTING_NUMBERS = list(_numbers(DEFAULTS))
POLICY_DATA = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
POLICY_NUMBERS = list(_numbers(POLICY_DATA))


def test_the_defaults_load_and_hold_many_numbers() -> None:
    load_settings()
    load_policy()
    assert len(SETTING_NUMBERS) > 150 and len(POLICY_NUMBERS) > 15


@pytest.mark.parametrize("value", NOT_FINITE)
def test_every_setting_refuses_nan_and_infinity(value: float) -> None:
    accepted = []
    for path in SETTING_NUMBERS:
        try:
            load_settings(overrides=_replaced(DEFAULTS, path, value))
        except ConfigError as exc:
            assert "\n" not in str(exc)
        else:
            accepted.append(".".join(map(str, path)))
    assert accepted == []


@pytest.mark.parametrize("value", NOT_FINITE)
def test_every_policy_number_refuses_nan_and_infinity(tmp_path: Path, value: float) -> None:
    accepted = []
    for path in POLICY_NUMBERS:
        bad = tmp_path / "policy.yaml"
        bad.write_text(yaml.safe_dump(_replaced(POLICY_DATA, path, value)), encoding="utf-8")
        try:
            load_policy(bad)
        except PolicyError as exc:
            assert "\n" not in str(exc)
        else:
            accepted.append(".".join(map(str, path)))
    assert accepted == []


def test_a_port_is_refused_outside_its_range() -> None:
    with pytest.raises(ConfigError, match=r"<= 65535 - at `\$\.run\.metrics_port`$"):
        load_settings(overrides={"run": {"metrics_port": 70_000}})


def _nested(levels: int) -> bytes:
    return b"a: " + b"[" * levels + b"]" * levels + b"\n"


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"credit:\n  top: \xff\xfe\n", "is not UTF-8 text (byte 15)"), (_nested(10_000), "YAML")],
)
def test_unusable_yaml_is_one_line(tmp_path: Path, content: bytes, says: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    line = _refusal("config", "--config", str(bad))
    assert line.startswith(f"lockstep: config {bad} ") and says in line
    with pytest.raises(PolicyError, match=f"^policy {bad} "):
        load_policy(bad)


def test_deep_nesting_is_one_line_without_libyaml_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyYAML's own loader (where libyaml is missing) recurses once per level."""
    monkeypatch.setattr(settings, "SAFE_LOADER", yaml.SafeLoader)
    deep = tmp_path / "deep.yaml"
    deep.write_bytes(_nested(1_200))
    with pytest.raises(ConfigError, match=r"^config .* is nested too deeply$"):
        load_settings(deep)
