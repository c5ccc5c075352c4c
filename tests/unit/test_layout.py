"""The package layout's rules (DESIGN.md "Layout"), checked on every import of every module,
function-level ones included: which process a module belongs to, and what it may touch,
shows in the tree, and imports point down only."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "webhook"

# What each package may import of ours. `model` is the bottom; the three programs (serving,
# controller, cli) are built from the layers below them and never from each other, except
# that the CLI runs every program.
ALLOWED: dict[str, set[str]] = {
    "model": {"model"},
    "registry": {"model", "registry"},
    "kube": {"model", "kube"},
    "tls": {"model", "kube", "tls"},
    "mirror": {"model", "registry", "kube", "mirror"},
    "serving": {"model", "kube", "tls", "serving"},
    "controller": {"model", "registry", "kube", "mirror", "controller"},
    "cli": {"model", "registry", "kube", "tls", "mirror", "serving", "controller", "cli"},
}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) == 1:
            if path.name != "__init__.py":
                raise AssertionError(f"{path}: every module belongs in a package of a concern")
            continue
        yield parts[0], path


def imports(path: Path) -> Iterator[str]:
    """Every module name `path` imports, at any depth of its code."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "webhook":
                yield from (f"webhook.{alias.name}" for alias in node.names)
            else:
                yield node.module


MODULES = list(modules())
IDS = [str(path.relative_to(PACKAGE)) for _, path in MODULES]


def test_the_packages_are_the_documented_ones() -> None:
    assert {package for package, _ in MODULES} == set(ALLOWED)


@pytest.mark.parametrize(("package", "path"), MODULES, ids=IDS)
def test_imports_point_down(package: str, path: Path) -> None:
    ours = {name.split(".")[1] for name in imports(path) if name.startswith("webhook.")}
    assert ours <= ALLOWED[package], f"{package} may not import webhook.{ours - ALLOWED[package]}"


@pytest.mark.parametrize(("package", "path"), MODULES, ids=IDS)
def test_only_kube_imports_the_kubernetes_client(package: str, path: Path) -> None:
    if package != "kube":
        client = [name for name in imports(path) if name.split(".")[0] == "kubernetes"]
        assert not client, f"only webhook.kube may import the kubernetes client: {client}"


@pytest.mark.parametrize("path", [p for pkg, p in MODULES if pkg == "model"], ids=lambda p: p.name)
def test_the_model_is_standard_library_only(path: Path) -> None:
    foreign = {
        name
        for name in imports(path)
        if name.split(".")[0] not in sys.stdlib_module_names
        and not name.startswith("webhook.model")
        and name != "__future__"
    }
    assert not foreign, f"model modules use the standard library only: {foreign}"
