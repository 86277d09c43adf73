"""Lockstep installs as a package: a wheel carries its code and its defaults, declares every
library it imports, and works from any directory once installed into a fresh virtualenv."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SHIPPED = ("pipeline", "models")  # source folders whose packages the wheel must carry


def _declared_distributions() -> set[str]:
    """Distribution names in `dependencies`, normalised (PEP 503)."""
    names = set()
    for requirement in PYPROJECT["project"]["dependencies"]:
        name = requirement.split(";")[0]
        for stop in "<>=!~[ ":
            name = name.split(stop)[0]
        names.add(_normal(name))
    return names


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _imported_top_level_names() -> dict[str, Path]:
    """Every top-level module imported anywhere in the shipped code, with one file that does."""
    found: dict[str, Path] = {}
    for folder in SHIPPED:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], path)
    return found


def test_every_package_in_the_tree_is_in_the_wheel() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for folder in SHIPPED
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - on_disk == {"lockstep_config"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["lockstep_config"] == "config"
    assert "*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["lockstep_config"]


def test_every_imported_library_is_declared() -> None:
    local = {*SHIPPED, "lockstep_config"}
    providers = metadata.packages_distributions()
    declared = _declared_distributions()
    missing = {}
    for name, where in _imported_top_level_names().items():
        if name in sys.stdlib_module_names or name in local or name == "__future__":
            continue
        distributions = {_normal(d) for d in providers.get(name, [name])}
        if not distributions & declared:
            missing[name] = str(where.relative_to(ROOT))
    assert missing == {}, f"imported but not in [project] dependencies: {missing}"


_caches = shutil.ignore_patterns("__pycache__", "*.pyc")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with Lockstep installed from a wheel built from this tree."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # built from a copy: a build leaves build/ and egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "pipeline", "models", "config"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=_caches)
        else:
            shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(work),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = work.glob("lockstep-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    install = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    return env_dir


def _run(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(env_dir / "bin" / "lockstep"), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_wheel_runs_from_a_directory_outside_the_repository(
    installed: Path, tmp_path: Path
) -> None:
    where = subprocess.run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import pipeline, lockstep_config as c;print(pipeline.__file__); print(c.__file__)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where

    shown = _run(installed, tmp_path, "config")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["enforcement"]["policy"] == "policy.yaml"

    simulated = _run(
        installed,
        tmp_path,
        "simulate",
        "--minutes",
        "90",
        "--seed",
        "3",
        "--out",
        "events.jsonl",
        "--labels",
        "labels.json",
    )
    assert simulated.returncode == 0, simulated.stderr
    replayed = _run(installed, tmp_path, "replay", "events.jsonl", "--out", "out")
    assert replayed.returncode == 0, replayed.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["events"] > 10_000
    assert summary["findings"] > 0 and summary["actions"] > 0  # the shipped policy decided
    assert (tmp_path / "out" / "audit.sqlite").exists()
