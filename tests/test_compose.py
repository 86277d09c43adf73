"""docker-compose.yml cannot be run here (no Docker engine), so it is checked by parsing.

The stack is Kafka (KRaft, one node), two Lockstep workers, the embedded pipeline behind the
`embedded` profile, the hooks (throttling, review API, case console) beside either,
Prometheus and Grafana, all configured from files in this repository.
Checked: every mounted file exists; every Lockstep command is a real, valid `lockstep`
invocation (with the service's environment, as in the container); the workers reach Kafka
on its advertised listener once it is healthy and agree on topics; Prometheus scrapes every
Lockstep service on its metrics port; Grafana provisions the datasource and the dashboards
from the mounted folders; and every metric a dashboard charts is one Lockstep exports.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import click
import pytest
import typer
import yaml

from pipeline.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DATA_DIRS = {"./data"}  # created by the operator at deploy time, holds live data
WORKERS = ("lockstep-worker-1", "lockstep-worker-2")
SINK = "lockstep-sink"  # the workers' results to the audit trail and the webhooks
DEFAULT_SERVICES = {"kafka", *WORKERS, SINK, "prometheus", "grafana"}  # `docker compose up`
EMBEDDED = "lockstep"  # the embedded pipeline, profile `embedded`
HOOKS = ("throttle", "review", "console")  # the throttling hook, review API, case console
# The same hooks over the sink's outputs in the distributed deployment, profile `hooks`.
DISTRIBUTED_HOOKS = ("lockstep-throttle", "lockstep-review", "lockstep-console")
THROTTLES = ("throttle", "lockstep-throttle")  # scraped on their serving port
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"  # Grafana's default provisioning path
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])lockstep_[a-z_]+")


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _lockstep_services() -> dict[str, dict]:
    return {n: s for n, s in _services().items() if "build" in s}


def _mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume, in short (`src:dst[:mode]`) or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append((volume.get("source", ""), volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            mounts.append((source, target))
    return mounts


def _is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _host_path(service: dict, container_path: str) -> Path | None:
    """The repository path a bind mount of `service` shows at `container_path`, if any."""
    wanted = PurePosixPath(container_path)
    for source, target in _mounts(service):
        if not _is_bind(source):
            continue
        if wanted == PurePosixPath(target) or PurePosixPath(target) in wanted.parents:
            return ROOT / source / wanted.relative_to(target)
    return None


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _args(service: dict) -> list[str]:
    return [str(a) for a in service["command"]]


def _metrics_port(service: dict) -> str:
    args = _args(service)
    return args[args.index("--metrics-port") + 1]


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        out[name] = (host, int(port))
    return out


# --- the compose file itself ---------------------------------------------------------------


def test_default_up_is_the_distributed_deployment() -> None:
    services = _services()
    default = {n for n, s in services.items() if not s.get("profiles")}
    assert default == DEFAULT_SERVICES
    assert services[EMBEDDED]["profiles"] == ["embedded"]
    assert set(_lockstep_services()) == {*WORKERS, SINK, EMBEDDED, *HOOKS, *DISTRIBUTED_HOOKS}
    for name in HOOKS:  # the hooks serve the embedded run's outputs, beside it
        assert services[name]["profiles"] == ["embedded"]
        assert EMBEDDED in services[name]["depends_on"]
    for name in DISTRIBUTED_HOOKS:  # or the sink's, and the review desk publishes on Kafka
        assert services[name]["profiles"] == ["hooks"]
        assert SINK in services[name]["depends_on"]
        sink_volume = next(v for v in services[SINK]["volumes"] if "sink" in v)
        assert sink_volume in services[name]["volumes"]
    for name in ("lockstep-review", "lockstep-console"):  # their decisions go to the sink
        assert "--kafka" in _args(services[name])
    for name in default:  # compose refuses to start a service whose dependency is off
        for dep in services[name].get("depends_on", []):
            assert dep in default, f"{name} depends on {dep}, which is behind a profile"


def test_no_two_services_that_start_together_publish_the_same_host_port() -> None:
    services = _services()
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    for profile in [None, *sorted(profiles)]:  # `up`, and `--profile P up`
        started = [s for s in services.values() if profile in s.get("profiles", [None])]
        started += [s for s in services.values() if profile and not s.get("profiles")]
        published = [str(port).rsplit(":", 1)[0] for s in started for port in s.get("ports", [])]
        assert len(published) == len(set(published)), (profile, published)


def test_every_mounted_path_exists() -> None:
    compose = _compose()
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _target in _mounts(service):
            if not _is_bind(source):
                assert source in named, f"{name} mounts undeclared volume {source!r}"
                continue
            assert source.startswith("."), f"{name} mounts {source}: not from the repository"
            if source not in RUNTIME_DATA_DIRS:
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(_lockstep_services()))
def test_lockstep_command_is_a_real_subcommand_with_valid_options(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's command parses as `lockstep ...` would in its container: with its
    environment set (options may be read from LOCKSTEP_* variables) and no other."""
    service = _lockstep_services()[name]
    for var in [v for v in os.environ if v.startswith("LOCKSTEP_")]:
        monkeypatch.delenv(var)
    for var, value in _env(service).items():
        monkeypatch.setenv(var, value)
    group = typer.main.get_command(app)
    args = _args(service)
    ctx = group.make_context("lockstep", list(args))
    sub = group.get_command(ctx, args[0])
    assert sub is not None, f"{name}: `lockstep {args[0]}` does not exist"
    # `lockstep throttle serve ...`: down to the command; `lockstep console --out ...` is a
    # group run without a subcommand, its own options given
    while isinstance(sub, click.Group) and len(args) > 1 and not args[1].startswith("-"):
        ctx = sub.make_context(args[0], [], parent=ctx)
        args = args[1:]
        nested = sub.get_command(ctx, args[0])
        assert nested is not None, f"{name}: `{args[0]}` is not a subcommand of {sub.name}"
        sub = nested
    sub.make_context(args[0], args[1:], parent=ctx)  # raises on a bad option or value


# --- Kafka and the workers ----------------------------------------------------------------


def test_kafka_is_a_single_kraft_node() -> None:
    kafka = _services()["kafka"]
    env = _env(kafka)
    assert kafka["image"] == "apache/kafka:3.9.1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = _listeners(env["KAFKA_LISTENERS"])
    assert listeners["PLAINTEXT"][1] == 9092 and listeners["CONTROLLER"][1] == 9093
    assert _listeners(env["KAFKA_ADVERTISED_LISTENERS"]) == {"PLAINTEXT": ("kafka", 9092)}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    for var in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "DEFAULT"):
        assert env[f"KAFKA_{var}_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert kafka["healthcheck"]["test"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_reaches_kafka_once_healthy_on_its_advertised_listener(name: str) -> None:
    services = _services()
    worker = services[name]
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in services["kafka"]
    advertised = _listeners(_env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
    broker = _env(worker)["LOCKSTEP_KAFKA_BROKER"]
    assert broker in {f"{host}:{port}" for host, port in advertised.values()}
    assert ("./config", "/etc/lockstep") in _mounts(worker)


def test_workers_agree_on_topics_and_keep_their_own_state() -> None:
    services = _services()
    envs = [_env(services[name]) for name in WORKERS]
    shared = ("LOCKSTEP_KAFKA_BROKER", "LOCKSTEP_TOPIC_PREFIX", "LOCKSTEP_PARTITIONS")
    for var in shared:
        assert len({env[var] for env in envs}) == 1, f"workers disagree on {var}"
    # Topics auto-created by a producer must be co-partitioned with the workers' tables.
    assert envs[0]["LOCKSTEP_PARTITIONS"] == _env(services["kafka"])["KAFKA_NUM_PARTITIONS"]
    data_volumes = []
    for name, env in zip(WORKERS, envs, strict=True):
        assert env["LOCKSTEP_STORE"] in {"rocksdb", "memory"}
        if env["LOCKSTEP_STORE"] == "rocksdb":
            volume = dict((t, s) for s, t in _mounts(services[name])).get(env["LOCKSTEP_DATA_DIR"])
            assert volume and not _is_bind(volume), f"{name}: no named volume for its data dir"
            data_volumes.append(volume)
    assert len(data_volumes) == len(set(data_volumes)), "RocksDB needs one data dir per worker"


def _seconds(duration: str) -> float:
    """A Compose duration such as `30s`, `1m30s` or `1500ms`, in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("name", WORKERS)
def test_a_worker_is_given_longer_to_stop_than_it_takes(name: str) -> None:
    """Compose kills a service 10 s after SIGTERM unless told otherwise; a worker bounds
    its own stop by kafka.stop_timeout_s, so its grace period must be longer."""
    from pipeline.core.settings import load_settings

    grace = _services()[name].get("stop_grace_period", "10s")
    assert _seconds(grace) > load_settings().kafka.stop_timeout_s


@pytest.mark.parametrize("name", sorted(_lockstep_services()))
def test_a_mounted_config_is_the_one_lockstep_reads(name: str) -> None:
    """The image holds the defaults as package data; a service that mounts config/ names
    its lockstep.yaml in LOCKSTEP_CONFIG (every command's --config), or the mount is dead."""
    service = _lockstep_services()[name]
    mounted = [target for source, target in _mounts(service) if source == "./config"]
    if not mounted:
        return
    overlay = _env(service).get("LOCKSTEP_CONFIG")
    assert overlay == f"{mounted[0]}/lockstep.yaml", f"{name} mounts config/ but never reads it"
    assert _host_path(service, overlay) == ROOT / "config" / "lockstep.yaml"


@pytest.mark.parametrize("name", sorted(_lockstep_services()))
def test_lockstep_environment_is_read_and_gives_valid_settings(name: str) -> None:
    """A misspelt LOCKSTEP_* variable would be silently ignored: each one the compose file
    sets must be read by the code, and together they must load as valid settings (the
    container's config/ is the repository's, mounted read-only, its policy beside it)."""
    from pipeline.core.settings import load_settings

    env = _env(_lockstep_services()[name])
    source = "\n".join(p.read_text() for p in (ROOT / "pipeline").rglob("*.py"))
    source += (ROOT / "config" / "lockstep.yaml").read_text()  # env:NAME settings name them
    for var in (v for v in env if v.startswith("LOCKSTEP_")):
        assert var in source, f"{name} sets {var}, which Lockstep never reads"
    overlay = env.get("LOCKSTEP_CONFIG")  # read by every command's --config
    path = _host_path(_lockstep_services()[name], overlay) if overlay else None
    settings = load_settings(path, environ=env)
    if name in WORKERS:
        kafka = settings.kafka
        assert kafka.broker == env["LOCKSTEP_KAFKA_BROKER"]
        assert kafka.topic_prefix == env["LOCKSTEP_TOPIC_PREFIX"]
        assert kafka.partitions == int(env["LOCKSTEP_PARTITIONS"])
        assert (kafka.store, kafka.data_dir) == (env["LOCKSTEP_STORE"], env["LOCKSTEP_DATA_DIR"])


# --- Prometheus ---------------------------------------------------------------------------


def _prometheus_config() -> dict:
    prom = _services()["prometheus"]
    flag = next(a for a in _args(prom) if a.startswith("--config.file="))
    host_file = _host_path(prom, flag.split("=", 1)[1])
    assert host_file is not None and host_file.is_file(), "Prometheus config is not mounted"
    return yaml.safe_load(host_file.read_text())


def test_prometheus_scrapes_every_lockstep_service_on_its_metrics_port() -> None:
    config = _prometheus_config()
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    for name, service in _lockstep_services().items():
        if name in THROTTLES:  # its /metrics is on the port it serves checks on
            port = _args(service)[_args(service).index("--port") + 1]
            assert f"{name}:{port}" in targets, f"{name} is not scraped"
        elif name not in (*HOOKS, *DISTRIBUTED_HOOKS, SINK):  # no metrics of their own
            assert f"{name}:{_metrics_port(service)}" in targets, f"{name} is not scraped"


# --- Grafana ------------------------------------------------------------------------------


def _grafana() -> dict:
    return _services()["grafana"]


def _provisioning_dir() -> Path:
    path = _host_path(_grafana(), GRAFANA_PROVISIONING)
    assert path is not None and path.is_dir(), f"nothing from the repo at {GRAFANA_PROVISIONING}"
    return path


def _provisioned(kind: str) -> list[dict]:
    files = sorted((_provisioning_dir() / kind).glob("*.y*ml"))
    assert files, f"no {kind} provisioning files"
    return [yaml.safe_load(f.read_text()) for f in files]


def _datasources() -> list[dict]:
    return [ds for doc in _provisioned("datasources") for ds in doc["datasources"]]


def _dashboard_dirs() -> list[Path]:
    """The repository folders the dashboard providers load, through the Grafana mounts."""
    dirs = []
    for doc in _provisioned("dashboards"):
        for provider in doc["providers"]:
            assert provider.get("type", "file") == "file"
            path = provider["options"]["path"]
            host = _host_path(_grafana(), path)
            assert host is not None, f"provider {provider['name']}: nothing mounted at {path}"
            dirs.append(host)
    return dirs


def _dashboards() -> dict[str, dict]:
    files = [f for d in _dashboard_dirs() for f in sorted(d.rglob("*.json"))]
    return {f.name: json.loads(f.read_text()) for f in files}


def _panels(dashboard: dict) -> list[dict]:
    """Every panel with queries, including those inside rows."""
    out, stack = [], list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        if panel.get("type") != "row":
            out.append(panel)
    return out


def _exprs(dashboards: dict[str, dict]) -> list[str]:
    return [t["expr"] for d in dashboards.values() for p in _panels(d) for t in p["targets"]]


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    prometheus = [ds for ds in _datasources() if ds["type"] == "prometheus"]
    assert len(prometheus) == 1
    ds = prometheus[0]
    assert ds["uid"] and ds["access"] == "proxy"
    url = urlsplit(ds["url"])
    assert url.hostname in _services() and url.hostname == "prometheus"
    assert url.port == 9090


def test_dashboard_provider_path_is_where_the_dashboards_are_mounted() -> None:
    mounted = {target for source, target in _mounts(_grafana()) if _is_bind(source)}
    for doc in _provisioned("dashboards"):
        for provider in doc["providers"]:
            assert provider["options"]["path"] in mounted
    dirs = _dashboard_dirs()
    assert dirs and all(d.is_dir() and any(d.rglob("*.json")) for d in dirs)
    home = _env(_grafana()).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        host = _host_path(_grafana(), home)
        assert host is not None and host.is_file() and host.parent in dirs


def test_dashboard_is_a_valid_lockstep_dashboard() -> None:
    dashboards = _dashboards()
    by_title = {d["title"]: d for d in dashboards.values()}
    assert "Lockstep" in by_title
    dashboard = by_title["Lockstep"]
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 39
    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["type"] == "timeseries" and panel["title"] and panel["gridPos"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    charted = " ".join(_exprs({"lockstep": dashboard}))
    for metric in (
        "lockstep_events_total",
        "lockstep_dead_letters_total",
        "lockstep_duplicate_events_total",
        "lockstep_late_events_total",
        "lockstep_findings_total",
        "lockstep_actions_total",
        "lockstep_consumer_lag_records",
        "lockstep_processing_latency_seconds_bucket",
        "lockstep_watermark_lag_seconds",
    ):
        assert metric in charted, f"the dashboard does not chart {metric}"


def test_every_panel_queries_the_provisioned_datasource() -> None:
    provisioned = {ds["uid"]: ds["type"] for ds in _datasources()}
    dashboards = _dashboards()
    assert dashboards
    for file, dashboard in dashboards.items():
        for panel in _panels(dashboard):
            refs = [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]
            assert refs[0], f"{file}: panel {panel['title']!r} names no datasource"
            for ref in filter(None, refs):
                where = f"{file}: panel {panel['title']!r}"
                assert ref.get("uid") in provisioned, f"{where} uses datasource {ref}"
                assert ref.get("type") == provisioned[ref["uid"]], f"{where}: wrong type"


def test_every_charted_metric_is_exported() -> None:
    from pipeline.outputs.metrics import EXPORTED_METRICS  # the families a scrape of Lockstep shows

    exported = set(EXPORTED_METRICS)
    used = {m for expr in _exprs(_dashboards()) for m in METRIC_NAME.findall(expr)}
    assert used
    for name in sorted(used):
        if name in exported:
            continue
        family = next(
            (
                name.removesuffix(s)
                for s in HISTOGRAM_SERIES
                if name.endswith(s) and not name.removesuffix(s).endswith("_total")
            ),
            None,
        )
        assert family in exported, f"the dashboard charts {name}, which Lockstep does not export"
