"""Settings loaded from `config/lockstep.yaml`, optionally overlaid by a user file.

The YAML file is the single source of every default; the structs below, and each
detector's own (declared by its module, `pipeline.detectors.registry`), are only its schema,
so a typo or a wrong type in a user file fails with one clear line instead of being ignored.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import yaml

# libyaml's safe loader where PyYAML was built with it (about 10x faster), else Python's.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# The defaults ship as package data (config/ is installed as `lockstep_config`).
CONFIG_DIR = Path(str(resources.files("lockstep_config")))
DEFAULT_CONFIG = CONFIG_DIR / "lockstep.yaml"


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


class SeveritySettings(_Strict):
    low: float
    medium: float
    high: float
    critical: float


class WebhookEndpointSettings(_Strict):
    url: str
    secret: str  # whsec_... or env:NAME


class WebhookSettings(_Strict):
    endpoints: list[WebhookEndpointSettings]
    outbox: str
    wait_s: float
    max_attempts: int
    first_backoff_s: float
    max_backoff_s: float
    timeout_s: float


class PublishSettings(_Strict):
    broker: str  # "": `replay` and `run` write no Kafka topic
    findings: bool  # findings too, not only actions


class ReviewSettings(_Strict):
    token: str  # bearer token of the review API; env:NAME reads it from NAME


class EnforcementSettings(_Strict):
    policy: str
    window_ms: int
    idle_ttl_ms: int


class RunSettings(_Strict):
    batch_size: int
    max_batch_wait_s: float
    metrics_port: int
    gc_young: int
    gc_full_every_s: float


class KafkaSettings(_Strict):
    broker: str
    topic_prefix: str
    partitions: int
    store: Literal["rocksdb", "memory"]
    data_dir: str
    batch_size: int
    batch_wait_s: float
    stage_record_events: int
    stage_take_records: int
    stage_round_s: float
    commit_interval_s: float
    idle_after_s: float


class Settings(_Strict):
    input: InputSettings
    event_time: EventTimeSettings
    dedup: DedupSettings
    # a block per detector, decoded into its settings struct: `DetectorBlocks.schema`
    detectors: Any
    severity: SeveritySettings
    enforcement: EnforcementSettings
    webhooks: WebhookSettings
    publish: PublishSettings
    review: ReviewSettings
    run: RunSettings
    kafka: KafkaSettings


class ConfigError(Exception):
    """A settings file that cannot be used; the message is one line for the user."""


def read_yaml(
    path: Path, what: str = "config", error: type[Exception] = ConfigError
) -> dict[str, Any]:
    """A YAML mapping from `path`; `error` with a one-line message naming `what` if the
    file cannot be read, is not YAML, or is not a mapping."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{what} {path} is not valid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a mapping at the top level")
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
    if settings.event_time.allowed_lateness_ms < 0:
        raise ConfigError("event_time.allowed_lateness_ms must be >= 0")
    if settings.dedup.max_ids <= 0 or settings.dedup.horizon_ms < 0:
        raise ConfigError("dedup: max_ids must be > 0 and horizon_ms >= 0")
    if min(settings.kafka.partitions, settings.kafka.batch_size) <= 0:
        raise ConfigError("kafka: partitions and batch_size must be > 0")
    if min(settings.kafka.stage_record_events, settings.kafka.stage_take_records) <= 0:
        raise ConfigError("kafka: stage_record_events and stage_take_records must be > 0")
    if min(settings.kafka.batch_wait_s, settings.kafka.stage_round_s) <= 0:
        raise ConfigError("kafka: batch_wait_s and stage_round_s must be > 0")
    if min(settings.enforcement.window_ms, settings.enforcement.idle_ttl_ms) <= 0:
        raise ConfigError("enforcement: window_ms and idle_ttl_ms must be > 0")
    wh = settings.webhooks
    if wh.max_attempts < 1 or min(wh.first_backoff_s, wh.timeout_s) <= 0 or wh.wait_s < 0:
        raise ConfigError("webhooks: need max_attempts >= 1, backoff and timeout > 0")
    for e in wh.endpoints:
        if not e.url.startswith(("http://", "https://")):
            raise ConfigError(f"webhooks: endpoint url must be http(s)://, not {e.url!r}")
    if settings.run.batch_size <= 0:
        raise ConfigError("run.batch_size must be > 0")
    if settings.run.gc_young < 700 or settings.run.gc_full_every_s <= 0:
        raise ConfigError("run: gc_young must be >= 700 (Python's default) and gc_full_every_s > 0")
    cut = settings.severity
    if not 0 <= cut.low <= cut.medium <= cut.high <= cut.critical <= 1:
        raise ConfigError("severity: need 0 <= low <= medium <= high <= critical <= 1")


# A shard's sketch (9 float64 arrays' worth of rows * buckets) and its open ticks are
# pickled into one changelog record by the distributed runtime.
SKETCH_MAX_BYTES = 768 * 1024


# Environment variables that override a setting (containers are configured this way).
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "LOCKSTEP_KAFKA_BROKER": ("kafka", "broker"),
    "LOCKSTEP_TOPIC_PREFIX": ("kafka", "topic_prefix"),
    "LOCKSTEP_PARTITIONS": ("kafka", "partitions"),
    "LOCKSTEP_STORE": ("kafka", "store"),
    "LOCKSTEP_DATA_DIR": ("kafka", "data_dir"),
    "LOCKSTEP_PUBLISH_BROKER": ("publish", "broker"),
}


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    overlay: dict[str, Any] = {}
    for name, (section, key) in ENVIRONMENT.items():
        if name in environ:
            value: Any = environ[name]
            if key == "partitions":
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(f"{name} must be an integer, got {value!r}") from None
            overlay.setdefault(section, {})[key] = value
    return overlay


def _policy_beside(overlay: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A user file naming a relative policy that is not in the working directory but next
    to the file: that one (a mounted config folder holds both files)."""
    section = overlay.get("enforcement")
    named = section.get("policy") if isinstance(section, dict) else None
    if not isinstance(named, str) or Path(named).is_absolute() or Path(named).exists():
        return overlay
    if not (folder / named).is_file():
        return overlay
    return _merge(overlay, {"enforcement": {"policy": str(folder / named)}})


def policy_path(settings: Settings) -> Path:
    """The enforcement policy file: as given, from the working directory, else (for a user
    file's policy) next to that file, else next to the default config."""
    given = Path(settings.enforcement.policy)
    if given.is_absolute() or given.exists():
        return given
    return CONFIG_DIR / given


class DetectorBlocks(Protocol):
    """The schema and the checks of the `detectors:` block, which only the detectors know."""

    @property
    def schema(self) -> type[msgspec.Struct]: ...

    def check(self, detectors: Any) -> None: ...


def _detector_blocks() -> DetectorBlocks:
    """The detectors' registry, which declares every detector's settings block. Imported
    when settings are loaded, not at the top: the detectors import this module."""
    from pipeline.detectors import REGISTRY

    return REGISTRY


def load_settings(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults from config/lockstep.yaml, the user's file, LOCKSTEP_* variables, overrides."""
    data = read_yaml(DEFAULT_CONFIG)
    if path is not None:
        data = _merge(data, _policy_beside(read_yaml(Path(path)), Path(path).parent))
    data = _merge(data, _from_environment(os.environ if environ is None else environ))
    if overrides:
        data = _merge(data, overrides)
    detectors = _detector_blocks()
    try:
        settings = msgspec.convert(data, _with_detectors(detectors.schema))
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid config: {exc}") from exc
    detectors.check(settings.detectors)
    _check(settings)
    return settings


@functools.cache
def _with_detectors(detectors: type[msgspec.Struct]) -> type[Settings]:
    """Settings whose `detectors` block decodes as `detectors`."""
    return msgspec.defstruct(
        "Settings", [("detectors", detectors)], bases=(Settings,), module=__name__
    )
