"""Settings loaded from `config/lockstep.yaml`, optionally overlaid by a user file.

The YAML file is the single source of every default; the structs below are only its schema,
so a typo or a wrong type in a user file fails with one clear line instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "lockstep.yaml"

Severity = Literal["low", "medium", "high", "critical"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class InputSettings(_Strict):
    max_event_bytes: int
    dead_letter_raw_bytes: int
    min_ts_ms: int
    max_future_ms: int


class EventTimeSettings(_Strict):
    allowed_lateness_ms: int
    eviction_interval_ms: int


class DedupSettings(_Strict):
    horizon_ms: int
    max_ids: int


class FollowerJumpSettings(_Strict):
    enabled: bool
    article: str
    window_ms: int
    hop_ms: int
    half_life_ms: int
    warmup_windows: int
    z_threshold: float
    min_net_follows: int
    min_ratio: float
    clip_z: float
    max_members: int
    idle_ttl_ms: int


class DetectorSettings(_Strict):
    follower_jump: FollowerJumpSettings


class SeveritySettings(_Strict):
    low: float
    medium: float
    high: float
    critical: float


class ReviewSettings(_Strict):
    min_severity: Severity


class RunSettings(_Strict):
    batch_size: int
    max_batch_wait_s: float
    metrics_port: int


class Settings(_Strict):
    input: InputSettings
    event_time: EventTimeSettings
    dedup: DedupSettings
    detectors: DetectorSettings
    severity: SeveritySettings
    review: ReviewSettings
    run: RunSettings


class ConfigError(Exception):
    """A settings file that cannot be used; the message is one line for the user."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config {path} is not valid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return data


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check(settings: Settings) -> None:
    """Relations between values that the types alone cannot express."""
    fj = settings.detectors.follower_jump
    if fj.hop_ms <= 0 or fj.window_ms <= 0 or fj.window_ms % fj.hop_ms:
        raise ConfigError(
            "detectors.follower_jump: window_ms must be a positive multiple of hop_ms"
        )
    if settings.event_time.allowed_lateness_ms < 0:
        raise ConfigError("event_time.allowed_lateness_ms must be >= 0")
    if settings.dedup.max_ids <= 0 or settings.dedup.horizon_ms < 0:
        raise ConfigError("dedup: max_ids must be > 0 and horizon_ms >= 0")
    if settings.run.batch_size <= 0:
        raise ConfigError("run.batch_size must be > 0")
    cut = settings.severity
    if not 0 <= cut.low <= cut.medium <= cut.high <= cut.critical <= 1:
        raise ConfigError("severity: need 0 <= low <= medium <= high <= critical <= 1")


def load_settings(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Defaults from config/lockstep.yaml, then the user's file, then in-code overrides."""
    data = _read_yaml(DEFAULT_CONFIG)
    if path is not None:
        data = _merge(data, _read_yaml(Path(path)))
    if overrides:
        data = _merge(data, overrides)
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid config: {exc}") from exc
    _check(settings)
    return settings
