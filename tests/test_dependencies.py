"""Each distribution declares exactly the dependencies its code imports.

For the core (``pyproject.toml``, ``optcore/``), every first-party plugin
(``plugins/*/``) and the example plugin, the imports of its source are read
with :mod:`ast` and compared with its ``pyproject.toml``:

* a module imported at module level (outside a function and outside a
  ``try``) is the standard library, the distribution itself, or one of its
  ``dependencies``: installing the distribution must be enough to import it;
* an import inside a function or a ``try`` (an optional feature: plotting,
  the pytest helpers) is declared at least among the optional dependencies;
* every declared dependency is imported somewhere, except the few listed in
  ``IMPORTED_BY_ANOTHER_NAME`` with the reason.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DISTRIBUTIONS = {
    "optcore": (ROOT, ROOT / "optcore"),
    **{path.name: (path, path / "src") for path in sorted((ROOT / "plugins").iterdir()) if (path / "src").is_dir()},
    "optcore-plugin-example": (ROOT / "examples/optcore-plugin-example", ROOT / "examples/optcore-plugin-example/src"),
}
# Declared but never imported under their own name, with why they are needed.
IMPORTED_BY_ANOTHER_NAME = {
    "jaxlib": "jax's compiled backend: `import jax` loads it; the core pins its version range",
}
# Distribution name -> import name, where they differ.
IMPORT_NAME = {"optcore-losses": "optcore_losses", "optcore-stochastic": "optcore_stochastic",
               "optcore-second-order": "optcore_second_order", "optcore-contrib": "optcore_contrib",
               "optcore-plugin-example": "optcore_plugin_example"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def _import_name(distribution: str) -> str:
    return IMPORT_NAME.get(distribution, distribution.replace("-", "_"))


def _imports(source_root: pathlib.Path):
    """``(top-level module, guarded, where)`` for every absolute import under ``source_root``."""
    out = []
    for path in sorted(source_root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        guarded_nodes = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Try)):
                guarded_nodes.update(id(child) for child in ast.walk(node) if child is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                out.append((name.split(".")[0], id(node) in guarded_nodes, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return out


def _declared(project_root: pathlib.Path):
    project = tomllib.loads((project_root / "pyproject.toml").read_text())["project"]
    required = {_requirement_name(r) for r in project.get("dependencies", [])}
    optional = {_requirement_name(r) for group in project.get("optional-dependencies", {}).values() for r in group}
    return project["name"], required, optional


@pytest.mark.parametrize("distribution", list(DISTRIBUTIONS))
def test_declared_dependencies_are_the_imported_ones(distribution):
    project_root, source_root = DISTRIBUTIONS[distribution]
    name, required, optional = _declared(project_root)
    assert name == distribution
    own = _import_name(name)
    required_imports = {_import_name(r): r for r in required}
    optional_imports = {_import_name(r): r for r in optional}
    imported = set()
    for module, guarded, where in _imports(source_root):
        if module in sys.stdlib_module_names or module == own or module == "__future__":
            continue
        imported.add(module)
        if guarded:
            assert module in required_imports or module in optional_imports, (
                f"{where} imports {module}, which {name} declares in neither dependencies nor optional-dependencies"
            )
        else:
            assert module in required_imports, f"{where} imports {module}, which {name} does not declare a dependency"
    unused = {dist for module, dist in required_imports.items() if module not in imported}
    unused -= set(IMPORTED_BY_ANOTHER_NAME)
    assert not unused, f"{name} declares {sorted(unused)} but its code imports none of them"


def test_the_check_reads_imports_and_guards():
    """The reader itself: a module-level import, a guarded one, a relative one (skipped)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (pathlib.Path(tmp) / "m.py").write_text(
            "import chex\nfrom . import x\ndef f():\n    import matplotlib.pyplot\ntry:\n    import scipy\nexcept ImportError:\n    pass\n"
        )
        global ROOT
        saved, ROOT = ROOT, pathlib.Path(tmp)
        try:
            found = sorted((module, guarded) for module, guarded, _ in _imports(pathlib.Path(tmp)))
        finally:
            ROOT = saved
    assert found == [("chex", False), ("matplotlib", True), ("scipy", True)]
