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
from typing import Annotated, Any, Literal, Protocol

import msgspec
import yaml

from pipeline.core.numbers import NonNegative, NonNegativeInt, Positive, PositiveInt, Share

# libyaml's safe loader where PyYAML was built with it (about 10x faster), else Python's.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# The defaults ship as package data (config/ is installed as `lockstep_config`).
CONFIG_DIR = Path(str(resources.files("lockstep_config")))
DEFAULT_CONFIG = CONFIG_DIR / "lockstep.yaml"


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class InputSettings(_Strict):
    max_event_bytes: PositiveInt
    dead_letter_raw_bytes: NonNegativeInt
    min_ts_ms: NonNegativeInt
    max_future_ms: NonNegativeInt


class EventTimeSettings(_Strict):
    allowed_lateness_ms: NonNegativeInt
    eviction_interval_ms: PositiveInt
    max_jump_ms: PositiveInt
    jump_confirmations: Annotated[int, msgspec.Meta(ge=1, le=1000)]  # a run kept in memory


class DedupSettings(_Strict):
    horizon_ms: NonNegativeInt
    max_ids: PositiveInt


class SeveritySettings(_Strict):
    low: Share
    medium: Share
    high: Share
    critical: Share


class WebhookEndpointSettings(_Strict):
    url: str
    secret: str  # whsec_... or env:NAME


class WebhookSettings(_Strict):
    endpoints: list[WebhookEndpointSettings]
    outbox: str
    wait_s: NonNegative
    # the delay after each failed attempt; used up, the delivery is a dead letter
    retry_schedule_s: Annotated[list[Positive], msgspec.Meta(min_length=1)]
    timeout_s: Positive


class PublishSettings(_Strict):
    broker: str  # "": `replay` and `run` write no Kafka topic
    findings: bool  # findings too, not only actions


class ReviewSettings(_Strict):
    token: str  # bearer token of the review API; env:NAME reads it from NAME


class ConsoleUser(_Strict):
    """One person who may log in to the console: a name, a role, a password hash."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    role: Literal["viewer", "reviewer"]  # viewers read; reviewers also decide
    password: str  # `lockstep console hash-password`'s output, never the password itself


class ConsoleSettings(_Strict):
    users: list[ConsoleUser]
    session_secret: str  # "": a random one per process; env:NAME reads it from NAME
    session_ttl_s: PositiveInt
    secure_cookies: bool
    page_size: PositiveInt
    max_page_size: Annotated[int, msgspec.Meta(ge=1, le=1000)]  # a page is one response
    refresh_s: Positive
    verify_every_s: Positive


class ThrottleSettings(_Strict):
    max_descriptors: PositiveInt  # checks in one POST /v1/ratelimit at most
    max_body_bytes: PositiveInt


class EnforcementSettings(_Strict):
    policy: str
    window_ms: PositiveInt
    idle_ttl_ms: PositiveInt


class RunSettings(_Strict):
    batch_size: PositiveInt
    max_batch_wait_s: Positive
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: no metrics server
    gc_young: Annotated[int, msgspec.Meta(ge=700)]  # Python's default is the least
    gc_full_every_s: Positive


class KafkaSettings(_Strict):
    broker: str
    topic_prefix: str
    partitions: PositiveInt
    store: Literal["rocksdb", "memory"]
    data_dir: str
    batch_size: PositiveInt
    batch_wait_s: Positive
    stage_record_events: PositiveInt
    stage_take_records: PositiveInt
    stage_round_s: Positive
    commit_interval_s: Positive
    session_timeout_s: Annotated[float, msgspec.Meta(ge=6, le=300)]  # the broker's bounds
    idle_after_s: Positive
    stop_timeout_s: Positive


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
    console: ConsoleSettings
    throttle: ThrottleSettings
    run: RunSettings
    kafka: KafkaSettings


class ConfigError(Exception):
    """A settings file that cannot be used; the message is one line for the user."""


def read_yaml(
    path: Path, what: str = "config", error: type[Exception] = ConfigError
) -> dict[str, Any]:
    """A YAML mapping from `path`; `error` with a one-line message naming `what` if the
    file cannot be read, is not UTF-8 YAML, or is not a mapping."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start})") from exc
    except RecursionError as exc:  # PyYAML's own loader recurses once per level
        raise error(f"{what} {path} is nested too deeply") from exc
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
    """What the types (with their ranges) cannot say: relations between values."""
    for e in settings.webhooks.endpoints:
        if not e.url.startswith(("http://", "https://")):
            raise ConfigError(f"webhooks: endpoint url must be http(s)://, not {e.url!r}")
    console = settings.console
    if console.page_size > console.max_page_size:
        raise ConfigError("console: page_size must be at most max_page_size")
    if len({u.name for u in console.users}) < len(console.users):
        raise ConfigError("console: users: two users with one name")
    if any(u.name == "review-token" for u in console.users):  # what the token's records say
        raise ConfigError("console: users: review-token is the review token's name")
    cut = settings.severity
    if not cut.low <= cut.medium <= cut.high <= cut.critical:
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
