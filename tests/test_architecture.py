"""The import rules of docs/architecture.md, checked: each package of `pipeline/` (and
`models/`) imports only the Lockstep packages its paragraph there names, so the map stays
true as the code grows. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")

# What each package may import of Lockstep (a module counts as the package it is in).
ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "pipeline.contract": set(),
    "pipeline.core": {"models", "pipeline.contract"},
    "pipeline.detectors": {"models", "pipeline.contract", "pipeline.core"},
    "pipeline.enforcement": {"models", "pipeline.contract", "pipeline.core", "pipeline.detectors"},
    "pipeline.outputs": {
        "pipeline.contract",
        "pipeline.core",
        "pipeline.enforcement",
        "pipeline.distributed.topics",
    },
    "pipeline.serve": {
        "pipeline.contract",
        "pipeline.core",
        "pipeline.enforcement",
        "pipeline.outputs",
        "pipeline.distributed.topics",
    },
    "pipeline.console": {
        "pipeline.contract",
        "pipeline.core",
        "pipeline.enforcement",
        "pipeline.serve",
    },
    "pipeline.topology": {"pipeline.core", "pipeline.detectors", "pipeline.enforcement"},
    "pipeline.embedded": {
        "models",
        "pipeline.contract",
        "pipeline.core",
        "pipeline.detectors",
        "pipeline.enforcement",
        "pipeline.outputs",
        "pipeline.topology",
    },
    "pipeline.distributed": {
        "models",
        "pipeline.contract",
        "pipeline.core",
        "pipeline.detectors",
        "pipeline.enforcement",
        "pipeline.outputs",
        "pipeline.topology",
    },
    "pipeline.lab": {"models", "pipeline.contract"},
}


# Named exceptions, each with its reason (and said in docs/architecture.md).
EXCEPTIONS: dict[str, set[str]] = {
    # Loading settings decodes the `detectors:` block with the schema the detectors'
    # registry declares: imported inside `load_settings`, as the detectors import settings.
    "pipeline.core.settings": {"pipeline.detectors"},
}


def _package_of(module: str) -> str:
    """`pipeline.core.gate` -> `pipeline.core`; `models.churn` -> `models`."""
    parts = module.split(".")
    return "models" if parts[0] == "models" else ".".join(parts[:2])


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in modules if m.split(".")[0] in ("pipeline", "models")}


def _allowed(module: str, imported: str) -> bool:
    package = _package_of(module)
    if _package_of(imported) == package or imported in ("pipeline", "models"):
        return True
    allowed = ALLOWED[package] | EXCEPTIONS.get(module, set())
    return any(imported == a or imported.startswith(a + ".") for a in allowed)


def _modules() -> list[tuple[str, Path]]:
    found = []
    for folder in ("pipeline", "models"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((module.removesuffix(".__init__"), path))
    return found


def test_every_package_has_a_rule_and_a_paragraph() -> None:
    packages = {_package_of(m) for m, _ in _modules()} - {"pipeline", "pipeline.cli"}
    assert packages == set(ALLOWED)
    for package in [*ALLOWED, "pipeline.cli"]:
        heading = (
            "`" + package.replace(".", "/") + ("/`" if package != "pipeline.topology" else ".py`")
        )
        assert heading in ARCHITECTURE, f"docs/architecture.md has no paragraph for {package}"


@pytest.mark.parametrize("module,path", _modules(), ids=[m for m, _ in _modules()])
def test_a_module_imports_only_what_its_package_may(module: str, path: Path) -> None:
    package = _package_of(module)
    if package in ("pipeline", "pipeline.cli"):
        return  # the root package and the command line may import everything
    wrong = sorted(i for i in _imports(path) if not _allowed(module, i))
    assert wrong == [], f"{module} ({package}) may not import {wrong}: see docs/architecture.md"
