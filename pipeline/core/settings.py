"""Settings loaded from `config/lockstep.yaml`, optionally overlaid by a user file.

The YAML file is the single source of every default; the structs below are only its schema,
so a typo or a wrong type in a user file fails with one clear line instead of being ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from pipeline.contract.events import EVENT_TYPES, Origin

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
    young_account_ms: int
    young_share: float
    shared_min: int
    crowding_share: float
    support_half_life_ms: int
    support_warmup_windows: int
    level_min_ratio: float
    level_allowance: float
    level_cap: float
    level_threshold: float
    level_min_net: int
    level_window_z: float
    attention_z: float


class EngagementInflationSettings(_Strict):
    enabled: bool
    article: str
    window_ms: int
    hop_ms: int
    half_life_ms: int
    prior_events: float
    warmup_windows: int
    owner_warmup_windows: int
    z_threshold: float
    min_events: int
    min_ratio: float
    clip_z: float
    max_accounts_per_event: float
    max_devices_per_event: float
    max_networks_per_event: float
    min_signals: int
    sample_events: int
    relearn_sources_windows: int
    min_member_events: int
    max_members: int
    idle_ttl_ms: int


class ForcedFollowSettings(_Strict):
    enabled: bool
    article: str
    window_ms: int
    hop_ms: int
    half_life_ms: int
    prior_forced: float
    warmup_windows: int
    z_threshold: float
    min_forced: int
    min_victims: int
    min_forced_share: float
    min_ratio: float
    clip_z: float
    forcing_origins: tuple[Origin, ...]
    max_tracked_victims: int
    max_listed_victims: int
    idle_ttl_ms: int


class EdgeBurstSettings(_Strict):
    enabled: bool
    article: str
    tick_ms: int
    shards: int
    rows: int
    buckets: int
    decay: float
    warmup_ticks: int
    seed: int
    z_threshold: float
    clip_z: float
    threshold: float
    min_follows: int
    min_ratio: float
    young_account_ms: int
    young_share: float
    shared_min: int
    crowding_share: float
    max_members: int
    idle_ttl_ms: int


class LockstepGroupSettings(_Strict):
    enabled: bool
    article: str
    actions: tuple[Literal["repost", "click", "comment"], ...]
    window_ms: int
    horizon_ms: int
    start_actions: int
    round_gap_ms: int
    max_round_ms: int
    min_round_actors: int
    min_items: int
    min_shared: int
    link_share: float
    member_share: float
    min_members: int
    regrow_share: float
    max_actions: int
    max_members: int
    idle_ttl_ms: int
    across_accounts: bool
    ring_bands: int
    ring_max_rounds: int
    ring_max_actors: int


class ChurnSettings(_Strict):
    enabled: bool
    article: str
    hop_ms: int
    undo_within_ms: int
    horizon_ms: int
    prior_undos: float
    z_threshold: float
    min_undos: int
    min_targets: int
    round_gap_ms: int
    renotify_ms: int
    max_undos: int
    idle_ttl_ms: int


class BatchRegistrationSettings(_Strict):
    enabled: bool
    article: str
    window_ms: int
    hop_ms: int
    half_life_ms: int
    prior_registrations: float
    z_threshold: float
    clip_z: float
    min_registrations: int
    min_ratio: float
    max_devices_per_registration: float
    max_members: int
    idle_ttl_ms: int


class HoardedAccountsSettings(_Strict):
    enabled: bool
    article: str
    dormancy_ms: int
    check_every_ms: int
    lookback_ms: int
    activity_types: list[str]
    shards: int
    max_watched: int
    min_dormant: int
    min_dormant_share: float
    idle_ttl_ms: int


class SilentFollowersSettings(_Strict):
    enabled: bool
    article: str
    activity_types: list[str]
    shards: int
    window_ms: int
    generation_ms: int
    warmup_ms: int
    follow_up_ms: int
    memory_ms: int
    min_silent: int
    min_silent_share: float
    max_members: int
    idle_ttl_ms: int


class DuplicateContentSettings(_Strict):
    enabled: bool
    article: str
    window_ms: int
    hop_ms: int
    permutations: int
    bands: int
    seed: int
    wide_weight: float
    min_information: float
    min_similarity: float
    min_accounts: int
    min_ratio: float
    half_life_ms: int
    habit_ms: int
    warmup_ms: int
    max_buckets: int
    max_members: int
    sample_texts: int
    bot_reservoir: int
    bot_learn_actors: int
    idle_ttl_ms: int


class DetectorSettings(_Strict):
    follower_jump: FollowerJumpSettings
    engagement_inflation: EngagementInflationSettings
    forced_follow: ForcedFollowSettings
    edge_burst: EdgeBurstSettings
    lockstep_group: LockstepGroupSettings
    churn: ChurnSettings
    batch_registration: BatchRegistrationSettings
    hoarded_accounts: HoardedAccountsSettings
    silent_followers: SilentFollowersSettings
    duplicate_content: DuplicateContentSettings


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
    detectors: DetectorSettings
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
    fj = settings.detectors.follower_jump
    if fj.hop_ms <= 0 or fj.window_ms <= 0 or fj.window_ms % fj.hop_ms:
        raise ConfigError(
            "detectors.follower_jump: window_ms must be a positive multiple of hop_ms"
        )
    for name in ("engagement_inflation", "forced_follow", "duplicate_content"):
        stage = getattr(settings.detectors, name)
        if stage.hop_ms <= 0 or stage.window_ms <= 0 or stage.window_ms % stage.hop_ms:
            raise ConfigError(f"detectors.{name}: window_ms must be a positive multiple of hop_ms")
    ei = settings.detectors.engagement_inflation
    if ei.sample_events < ei.min_events:
        raise ConfigError("detectors.engagement_inflation: sample_events must be >= min_events")
    if not 1 <= ei.min_signals <= 3:
        raise ConfigError("detectors.engagement_inflation: min_signals must be 1, 2 or 3")
    if ei.relearn_sources_windows < 1:
        raise ConfigError("detectors.engagement_inflation: relearn_sources_windows must be >= 1")
    if not 0.0 <= settings.detectors.forced_follow.min_forced_share <= 1.0:
        raise ConfigError("detectors.forced_follow: min_forced_share must be in [0, 1]")
    _check_edge_burst(settings.detectors.edge_burst)
    _check_lockstep_group(settings.detectors.lockstep_group)
    _check_churn(settings.detectors.churn)
    _check_batch_registration(settings.detectors.batch_registration)
    _check_hoarded_accounts(settings.detectors.hoarded_accounts)
    _check_silent_followers(settings.detectors.silent_followers, settings.detectors.follower_jump)
    _check_duplicate_content(settings.detectors.duplicate_content)
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


def _check_edge_burst(eb: EdgeBurstSettings) -> None:
    where = "detectors.edge_burst"
    if eb.tick_ms <= 0:
        raise ConfigError(f"{where}: tick_ms must be > 0")
    if eb.shards < 1:
        raise ConfigError(f"{where}: shards must be >= 1")
    if eb.rows < 1 or eb.buckets < 1:
        raise ConfigError(f"{where}: rows and buckets must be >= 1")
    if 9 * 8 * eb.rows * eb.buckets > SKETCH_MAX_BYTES:
        raise ConfigError(
            f"{where}: rows * buckets must be <= {SKETCH_MAX_BYTES // 72} (a shard's state is "
            "one table changelog record; Kafka's default record limit is 1 MiB)"
        )
    if not 0.0 < eb.decay < 1.0:
        raise ConfigError(f"{where}: decay must be in (0, 1)")
    if eb.z_threshold <= 0.0 or eb.clip_z <= 0.0 or eb.warmup_ticks < 0:
        raise ConfigError(f"{where}: z_threshold and clip_z must be > 0, warmup_ticks >= 0")
    if not 0.0 <= eb.threshold < 1.0:
        raise ConfigError(f"{where}: threshold must be in [0, 1)")
    if not (0.0 <= eb.young_share <= 1.0 and 0.0 <= eb.crowding_share <= 1.0):
        raise ConfigError(f"{where}: young_share and crowding_share must be in [0, 1]")
    if min(eb.min_follows, eb.shared_min, eb.max_members) < 1:
        raise ConfigError(f"{where}: min_follows, shared_min and max_members must be >= 1")


def _check_lockstep_group(lg: LockstepGroupSettings) -> None:
    where = "detectors.lockstep_group"
    if not lg.actions:
        raise ConfigError(f"{where}: actions must name at least one event type")
    if min(lg.window_ms, lg.round_gap_ms, lg.max_round_ms) <= 0:
        raise ConfigError(f"{where}: window_ms, round_gap_ms and max_round_ms must be > 0")
    if lg.horizon_ms < lg.max_round_ms or lg.idle_ttl_ms < lg.horizon_ms:
        raise ConfigError(f"{where}: need max_round_ms <= horizon_ms <= idle_ttl_ms")
    if not 1 <= lg.start_actions <= lg.min_round_actors:
        raise ConfigError(f"{where}: start_actions must be in [1, min_round_actors]")
    if lg.min_items < 2 or lg.min_round_actors < 2 or lg.min_shared < 2:
        raise ConfigError(f"{where}: min_items, min_round_actors and min_shared must be >= 2")
    if min(lg.min_members, lg.max_members, lg.max_actions) < 1:
        raise ConfigError(f"{where}: min_members, max_members and max_actions must be >= 1")
    if not (0.0 < lg.link_share <= 1.0 and 0.0 < lg.member_share <= 1.0):
        raise ConfigError(f"{where}: link_share and member_share must be in (0, 1]")
    if lg.regrow_share < 0.0:
        raise ConfigError(f"{where}: regrow_share must be >= 0")
    if min(lg.ring_bands, lg.ring_max_rounds) < 1 or lg.ring_max_actors < lg.min_round_actors:
        raise ConfigError(
            f"{where}: ring_bands and ring_max_rounds must be >= 1, "
            "ring_max_actors >= min_round_actors"
        )


def _check_churn(ch: ChurnSettings) -> None:
    where = "detectors.churn"
    if min(ch.hop_ms, ch.undo_within_ms, ch.round_gap_ms) <= 0:
        raise ConfigError(f"{where}: hop_ms, undo_within_ms and round_gap_ms must be > 0")
    if ch.horizon_ms < ch.hop_ms or ch.idle_ttl_ms < ch.horizon_ms:
        raise ConfigError(f"{where}: need hop_ms <= horizon_ms <= idle_ttl_ms")
    if ch.prior_undos < 0.0 or ch.z_threshold <= 0.0:
        raise ConfigError(f"{where}: prior_undos must be >= 0 and z_threshold > 0")
    if min(ch.min_undos, ch.min_targets, ch.max_undos) < 1 or ch.max_undos < ch.min_undos:
        raise ConfigError(f"{where}: need 1 <= min_undos <= max_undos and min_targets >= 1")
    if ch.renotify_ms < 0:
        raise ConfigError(f"{where}: renotify_ms must be >= 0")


def _check_hoarded_accounts(ha: HoardedAccountsSettings) -> None:
    where = "detectors.hoarded_accounts"
    if ha.check_every_ms <= 0 or ha.dormancy_ms < ha.check_every_ms:
        raise ConfigError(f"{where}: need 0 < check_every_ms <= dormancy_ms")
    if ha.lookback_ms < ha.check_every_ms or ha.idle_ttl_ms < ha.dormancy_ms:
        raise ConfigError(
            f"{where}: need lookback_ms >= check_every_ms and idle_ttl_ms >= dormancy_ms"
        )
    unknown = set(ha.activity_types) - set(EVENT_TYPES)
    if not ha.activity_types or unknown:
        raise ConfigError(f"{where}: activity_types must name event types, not {sorted(unknown)}")
    if ha.shards < 1 or ha.max_watched < 1 or ha.min_dormant < 1:
        raise ConfigError(f"{where}: shards, max_watched and min_dormant must be >= 1")
    if not 0.0 < ha.min_dormant_share <= 1.0:
        raise ConfigError(f"{where}: min_dormant_share must be in (0, 1]")


def _check_silent_followers(sf: SilentFollowersSettings, fj: FollowerJumpSettings) -> None:
    where = "detectors.silent_followers"
    unknown = set(sf.activity_types) - set(EVENT_TYPES)
    if not sf.activity_types or unknown or "follow" in sf.activity_types:
        raise ConfigError(
            f"{where}: activity_types must name event types other than follow, "
            f"not {sorted(unknown | ({'follow'} & set(sf.activity_types)))}"
        )
    if min(sf.shards, sf.min_silent, sf.max_members) < 1:
        raise ConfigError(f"{where}: shards, min_silent and max_members must be >= 1")
    if sf.window_ms <= 0 or sf.generation_ms < sf.window_ms or sf.warmup_ms < 0:
        raise ConfigError(f"{where}: need 0 < window_ms <= generation_ms and warmup_ms >= 0")
    if sf.memory_ms < fj.window_ms or sf.idle_ttl_ms < sf.window_ms:
        raise ConfigError(
            f"{where}: memory_ms must cover follower_jump.window_ms and idle_ttl_ms window_ms"
        )
    if not 0.0 < sf.min_silent_share <= 1.0:
        raise ConfigError(f"{where}: min_silent_share must be in (0, 1]")
    if sf.follow_up_ms < 0:
        raise ConfigError(f"{where}: follow_up_ms must be >= 0")


def _check_batch_registration(br: BatchRegistrationSettings) -> None:
    where = "detectors.batch_registration"
    if br.hop_ms <= 0 or br.window_ms <= 0 or br.window_ms % br.hop_ms:
        raise ConfigError(f"{where}: window_ms must be a positive multiple of hop_ms")
    if br.half_life_ms <= 0 or br.idle_ttl_ms < br.window_ms:
        raise ConfigError(f"{where}: half_life_ms must be > 0 and idle_ttl_ms >= window_ms")
    if br.prior_registrations < 0.0 or br.z_threshold <= 0.0 or br.clip_z <= 0.0:
        raise ConfigError(f"{where}: prior_registrations >= 0, z_threshold and clip_z > 0")
    if br.min_registrations < 2 or br.max_members < 1:
        raise ConfigError(f"{where}: min_registrations must be >= 2 and max_members >= 1")
    if not 0.0 < br.max_devices_per_registration <= 1.0:
        raise ConfigError(f"{where}: max_devices_per_registration must be in (0, 1]")


BUCKET_BYTES = 48  # a remembered bucket of `duplicate_content`, pickled (about 41 measured)


def _check_duplicate_content(dc: DuplicateContentSettings) -> None:
    where = "detectors.duplicate_content"
    if dc.bands < 1 or dc.permutations < dc.bands or dc.permutations % dc.bands:
        raise ConfigError(f"{where}: permutations must be a positive multiple of bands")
    if dc.seed < 0:
        raise ConfigError(f"{where}: seed must be >= 0")
    if dc.wide_weight < 1.0 or dc.min_information < 0.0:
        raise ConfigError(f"{where}: wide_weight must be >= 1 and min_information >= 0")
    if not 0.0 < dc.min_similarity <= 1.0:
        raise ConfigError(f"{where}: min_similarity must be in (0, 1]")
    if dc.max_buckets * BUCKET_BYTES > SKETCH_MAX_BYTES:
        raise ConfigError(
            f"{where}: max_buckets must be <= {SKETCH_MAX_BYTES // BUCKET_BYTES} (the memory "
            "of common texts is one table changelog record; Kafka's default limit is 1 MiB)"
        )
    if min(dc.min_accounts, dc.max_buckets, dc.max_members) < 1 or dc.sample_texts < 0:
        raise ConfigError(
            f"{where}: min_accounts, max_buckets and max_members must be >= 1, sample_texts >= 0"
        )
    if dc.min_ratio < 1.0 or dc.half_life_ms <= 0 or dc.warmup_ms < 0:
        raise ConfigError(f"{where}: min_ratio must be >= 1, half_life_ms > 0, warmup_ms >= 0")
    if dc.habit_ms < dc.hop_ms:
        raise ConfigError(f"{where}: habit_ms must be >= hop_ms")
    if not 256 <= dc.bot_reservoir <= 2000 or dc.bot_learn_actors < 1:
        raise ConfigError(
            f"{where}: bot_reservoir must be in [256, 2000] (rows kept twice in the one "
            "key's state), bot_learn_actors >= 1"
        )


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


def policy_path(settings: Settings) -> Path:
    """The enforcement policy file: as given, from the working directory, else next to the
    default config."""
    given = Path(settings.enforcement.policy)
    if given.is_absolute() or given.exists():
        return given
    return CONFIG_DIR / given


def load_settings(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults from config/lockstep.yaml, the user's file, LOCKSTEP_* variables, overrides."""
    data = read_yaml(DEFAULT_CONFIG)
    if path is not None:
        data = _merge(data, read_yaml(Path(path)))
    data = _merge(data, _from_environment(os.environ if environ is None else environ))
    if overrides:
        data = _merge(data, overrides)
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid config: {exc}") from exc
    _check(settings)
    return settings
