"""The rules of the code base, checked on the source: layers point down, modules stay small,
plugins use only the public API, and Optax is never imported by package code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "optcore"
PLUGIN_SOURCES = sorted(ROOT.glob("plugins/*/src"))

# Lower numbers are lower layers; a module may import only modules of its own layer or below.
LAYERS = {
    "optcore._version": 0,
    "optcore.base": 0,
    "optcore.numerics": 0,
    "optcore.validate": 0,
    "optcore.updates": 0,
    "optcore.hookspecs": 0,
    "optcore.kit": 0,  # the author's kit: only base and validate below it, so the transforms use it too
    "optcore.linalg": 1,
    "optcore.tree_utils": 1,
    "optcore.tree": 1,
    "optcore.projections": 1,
    "optcore.schedules": 2,
    "optcore.microbatching": 2,
    "optcore.sharding": 2,
    "optcore.transforms": 3,
    "optcore.optimizers": 4,
    "optcore.wrappers": 4,
    "optcore.plugins": 5,
    "optcore.demo": 6,
    "optcore.plot": 6,
    "optcore.cli": 7,
    "optcore.__main__": 7,
    "optcore": 8,
}


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    assert best is not None, f"{module} has no layer in LAYERS"
    return best[1]


def imports_of(path: Path, module: str) -> list[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    names = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.append(prefix)
            names += [f"{prefix}.{alias.name}" for alias in node.names]
    return names


CORE_FILES = sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_point_down(path):
    module = module_name(path, ROOT)
    own = layer_of(module)
    for imported in imports_of(path, module):
        if not imported.startswith("optcore"):
            continue
        if imported == "optcore" and module != "optcore":
            # `from optcore import base` resolves to the submodule, checked by its own name.
            continue
        target = imported
        # `from optcore import base` is recorded as "optcore" and "optcore.base": check the longest real one.
        if layer_of(target) > own and target.count(".") >= 1:
            raise AssertionError(f"{module} (layer {own}) imports {target} (layer {layer_of(target)})")


@pytest.mark.parametrize("path", CORE_FILES + sorted(p for s in PLUGIN_SOURCES for p in s.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_800_lines(path):
    assert len(path.read_text().splitlines()) <= 800


@pytest.mark.parametrize("source", PLUGIN_SOURCES, ids=lambda p: p.parent.name)
def test_plugins_use_only_the_public_core_api(source):
    for path in source.rglob("*.py"):
        module = module_name(path, source)
        for imported in imports_of(path, module):
            if imported.startswith("optcore.") and not imported.startswith("optcore_"):
                private = [part for part in imported.split(".")[1:] if part.startswith("_")]
                assert not private, f"{path.relative_to(ROOT)} imports private {imported}"


def test_package_code_never_imports_optax():
    for path in CORE_FILES + [p for s in PLUGIN_SOURCES for p in s.rglob("*.py")]:
        module = module_name(path, ROOT)
        for imported in imports_of(path, module):
            assert not (imported == "optax" or imported.startswith("optax.")), f"{path} imports {imported}"
