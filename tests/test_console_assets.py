"""The console's third-party assets come from the npm registry at set-up and are the pinned
ones: the Chart.js the console serves has the sha256 vendor.json pins (beside the npm
integrity of the tarball it was taken from), so a hand-edited or stale file fails here;
every set-up target installs it first (`make vendor`, deploy/vendor.py); the wheel carries
it; and deploy/vendor.py checks the tarball's integrity and each file's checksum, refusing
with one line, and writing nothing, when either differs or the registry cannot be reached."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.console.api import console_app, unfit_vendor_assets
from pipeline.core.settings import load_settings
from pipeline.enforcement.policy import load_policy
from tests.test_review_api import _serving

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "pipeline" / "console" / "static" / "vendor"
SCRIPT = ROOT / "deploy" / "vendor.py"
TOKEN = "assets-token"
PINNED = json.loads((VENDOR / "vendor.json").read_text(encoding="utf-8"))


def _served(tmp_path: Path, paths: list[str]) -> list[httpx.Response]:
    """GET each of `paths` from a console (over an empty run's outputs) on loopback."""
    out = tmp_path / "out"
    out.mkdir()
    application = console_app(out, str(out / "audit.sqlite"), load_settings(), load_policy(), TOKEN)

    async def fetch() -> list[httpx.Response]:
        async with _serving(application) as base, httpx.AsyncClient() as client:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            return [await client.get(base + path, headers=auth) for path in paths]

    return asyncio.run(fetch())


def test_the_served_chart_library_is_the_pinned_one(tmp_path: Path) -> None:
    record = PINNED["chart.js"]
    (answer,) = _served(tmp_path, [f"/static/vendor/{record['file']}"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/javascript")
    served = answer.content
    assert hashlib.sha256(served).hexdigest() == record["sha256"], (
        f"the served {record['file']} is not chart.js {record['version']} as vendor.json pins "
        "it (edited by hand, or stale): run `make vendor`"
    )
    assert re.search(rb"Chart\.js v" + re.escape(record["version"].encode()), served[:200])
    algo, digest = record["npm_integrity"].split("-", 1)  # the tarball's, as npm records it
    assert algo == "sha512" and len(base64.b64decode(digest, validate=True)) == 64
    assert record["package"] == f"chart.js@{record['version']} (npm)"
    assert unfit_vendor_assets() == []  # what `lockstep console` checks before it starts


def test_every_pinned_file_is_installed_with_its_checksum() -> None:
    for name, record in PINNED.items():
        for file, digest in (
            (record["file"], record["sha256"]),
            (record["licence_file"], record["licence_sha256"]),
        ):
            path = VENDOR / file
            assert path.is_file(), f"{name}: no {file}: run `make vendor`"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{name}: {file}"


def test_the_wheel_carries_the_pinned_files() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = pyproject["tool"]["setuptools"]
    assert "pipeline.console.static.vendor" in setuptools["packages"]
    patterns = setuptools["package-data"]["pipeline.console.static.vendor"]
    for record in PINNED.values():
        for file in ("vendor.json", record["file"], record["licence_file"]):
            assert any(fnmatch(file, pattern) for pattern in patterns), file


@pytest.mark.parametrize("target", ["demo", "test"])
def test_the_readme_commands_install_the_assets_before_the_project(target: str) -> None:
    """`make demo` and `make test` (what .ci/run runs) fetch the assets before pip installs
    the project (a dry run that takes every target as out of date: nothing is run)."""
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    plan = subprocess.run(
        ["make", "--dry-run", "--always-make", "-C", str(ROOT), target],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    fetch = next(i for i, line in enumerate(plan) if "deploy/vendor.py" in line)
    install = next(i for i, line in enumerate(plan) if "pip install" in line and "-e" in line)
    assert fetch < install, plan


# -- deploy/vendor.py against a registry of its own (file://), offline


def _package(files: dict[str, bytes]) -> bytes:
    """An npm package tarball holding `files` under package/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in files.items():
            entry = tarfile.TarInfo("package/" + name)
            entry.size = len(body)
            archive.addfile(entry, io.BytesIO(body))
    return buffer.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class Registry:
    """A registry in a folder (npm's tarball layout) with one package, its manifest pinning
    it, and an empty destination."""

    JS = b"/*! Chart.js v9.9.9 */ window.Chart = {};\n"
    LICENCE = b"The MIT License (MIT)\n\nPermission is hereby granted...\n"

    def __init__(self, tmp_path: Path) -> None:
        self.root, self.dest = tmp_path / "registry", tmp_path / "dest"
        self.dest.mkdir()
        self.tarball = _package({"dist/chart.umd.min.js": self.JS, "LICENSE.md": self.LICENCE})
        self.publish(self.tarball)
        self.record: dict[str, Any] = {
            "version": "9.9.9",
            "file": "chart.umd.min.js",
            "taken_from": "dist/chart.umd.min.js",
            "sha256": hashlib.sha256(self.JS).hexdigest(),
            "licence_file": "chart.js.LICENSE.md",
            "licence_taken_from": "LICENSE.md",
            "licence_sha256": hashlib.sha256(self.LICENCE).hexdigest(),
            "npm_integrity": _integrity(self.tarball),
        }
        self.manifest = tmp_path / "vendor.json"
        self.pin()

    def publish(self, tarball: bytes) -> None:
        folder = self.root / "chart.js" / "-"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "chart.js-9.9.9.tgz").write_bytes(tarball)

    def pin(self, **changes: str) -> None:
        self.manifest.write_text(json.dumps({"chart.js": {**self.record, **changes}}))

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), "--manifest", str(self.manifest), "--dest",
             str(self.dest), "--registry", self.root.as_uri(), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip

    def installed(self) -> dict[str, bytes]:
        return {path.name: path.read_bytes() for path in sorted(self.dest.iterdir())}


def _refused(run: subprocess.CompletedProcess[str], *words: str) -> None:
    assert run.returncode == 1, run
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vendor: "), run.stderr
    assert all(word in lines[0] for word in words), lines[0]


def test_vendor_installs_the_pinned_files_from_the_registry(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    first = registry.run()
    assert first.returncode == 0, first.stderr
    assert "installed from file:" in first.stdout and "integrity checked" in first.stdout
    assert registry.installed() == {
        "chart.js.LICENSE.md": Registry.LICENCE,
        "chart.umd.min.js": Registry.JS,
    }
    (registry.root / "chart.js" / "-" / "chart.js-9.9.9.tgz").unlink()  # offline now
    again = registry.run()
    assert again.returncode == 0 and "checksums match" in again.stdout, again
    (registry.dest / "chart.umd.min.js").write_bytes(b"/* edited by hand */")
    _refused(registry.run(), "could not download", "chart.js 9.9.9")  # must fetch: cannot
    registry.publish(registry.tarball)
    assert registry.run().returncode == 0
    assert registry.installed()["chart.umd.min.js"] == Registry.JS  # the edit is undone


def test_vendor_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.publish(_package({"dist/chart.umd.min.js": b"evil()", "LICENSE.md": b"MIT"}))
    _refused(
        registry.run(), "does not match its pinned integrity", registry.record["npm_integrity"]
    )
    assert registry.installed() == {}  # nothing written


def test_vendor_refuses_a_file_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.pin(sha256="0" * 64)  # the tarball is the pinned one; the file's pin is not
    _refused(registry.run(), "package/dist/chart.umd.min.js has sha256", "0" * 64)
    assert registry.installed() == {}


def test_vendor_says_in_one_line_when_the_registry_cannot_be_reached(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), "--manifest", str(registry.manifest), "--dest",
         str(registry.dest), "--registry", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    _refused(refused, "could not download chart.js 9.9.9 from http://127.0.0.1:9/chart.js/-/")
    assert registry.installed() == {}
