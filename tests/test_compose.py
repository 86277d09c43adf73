"""docker-compose.yml cannot be run here (no Docker engine), so it is checked by parsing:
every mounted file exists, every Lockstep command is a real, valid `lockstep` invocation,
and Prometheus scrapes the port Lockstep serves metrics on."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from pipeline.cli import app

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DATA_DIRS = {"./data"}  # created by the operator at deploy time, holds live data


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_mounted_path_exists() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith(".") and host not in RUNTIME_DATA_DIRS:
                assert (ROOT / host).exists(), f"{name} mounts missing {host}"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file()


def _lockstep_services() -> dict[str, dict]:
    return {n: s for n, s in _compose()["services"].items() if "build" in s}


def test_lockstep_commands_are_real_subcommands_with_valid_options() -> None:
    group = typer.main.get_command(app)
    services = _lockstep_services()
    assert services
    for name, service in services.items():
        args = [str(a) for a in service["command"]]
        ctx = group.make_context("lockstep", list(args))
        sub = group.get_command(ctx, args[0])
        assert sub is not None, f"{name}: `lockstep {args[0]}` does not exist"
        sub.make_context(args[0], args[1:], parent=ctx)  # raises on a bad option or value


def test_prometheus_scrapes_the_metrics_port() -> None:
    compose = _compose()
    prom = compose["services"]["prometheus"]
    host_file = next(v.split(":")[0] for v in prom["volumes"] if "prometheus.yml" in v)
    config = yaml.safe_load((ROOT / host_file).read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    for name, service in _lockstep_services().items():
        args = [str(a) for a in service["command"]]
        port = args[args.index("--metrics-port") + 1]
        assert f"{name}:{port}" in targets
