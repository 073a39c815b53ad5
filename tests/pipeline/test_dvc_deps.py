"""DVC's promise: every stage depends on what shapes its outputs, package by package.

Each stage's code `deps` must equal its script plus the packages (``vogflow/<package>``; the
top-level modules by file) holding the closure of the `vogflow` modules the script imports (at any
depth, lazy imports included), so that editing any of them marks the stage stale. A package is
the unit of rerun: the layout keeps packages cohesive so a stage never depends on one it does
not use (``test_training_never_depends_on_scoring_or_reporting``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def module_file(name: str) -> Path | None:
    """The file of a ``vogflow`` module (``vogflow.a.b``), or None if it is not one of ours."""
    if name != "vogflow" and not name.startswith("vogflow."):
        return None
    base = ROOT.joinpath(*name.split("."))
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


# Packages that load their modules by name (a registry): importing one imports all of them.
REGISTRIES = ("vogflow/data/registry.py",)


def _nodes(tree: ast.AST):
    """Every node, except inside a module-level ``__getattr__``: a package's lazy attributes run
    only when used, not when a submodule is imported."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            continue
        yield node
        yield from _nodes(node)


def imported_modules(path: Path) -> set[str]:
    names = set()
    if str(path.relative_to(ROOT)) in REGISTRIES:
        names.update(f"vogflow.data.{p.stem}" for p in path.parent.glob("*.py"))
    for node in _nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from vogflow import figures` imports the submodule.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def closure(script: Path) -> set[Path]:
    """The script and every vogflow file it imports, transitively (packages' __init__ too)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            parts = name.split(".")
            # Importing a.b.c runs a/__init__ and a/b/__init__ first.
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]))
                if found is not None:
                    todo.append(found)
    return {p.relative_to(ROOT) for p in seen}


def unit(path: Path) -> str:
    """What a file is declared as: its package under ``vogflow/``, else the file itself."""
    parts = path.parts
    if parts[0] == "vogflow" and len(parts) > 2:
        return "/".join(parts[:2])
    return path.as_posix()


def units(script: Path) -> set[str]:
    return {unit(p) for p in closure(script)}


def declared(deps: list[str]) -> set[str]:
    """Declared code deps: packages and files under vogflow/ and stages/."""
    return {dep for dep in deps if dep.startswith(("vogflow", "stages"))}


def stages() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in spec.items()}


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_the_import_closure_of_its_script(name):
    body = stages()[name]
    script = ROOT / body["cmd"].split()[1]
    want = units(script)
    have = declared(body["deps"])
    assert have == want, (
        f"{name}: missing from deps: {sorted(want - have)}; not imported: {sorted(have - want)}"
    )


def test_training_never_depends_on_scoring_or_reporting():
    """Editing the VoG math, an analysis, tracking or a figure must never retrain a model."""
    spec = stages()["train"]
    later = {"scoring", "analysis", "rankings", "tracking", "report", "figures", "paper", "cli"}
    touched = {dep.split("/")[1] for dep in declared(spec["deps"]) if dep.startswith("vogflow/")}
    assert not touched & later, sorted(touched & later)


def test_the_closure_sees_imports_inside_functions():
    """The closure finds a module that a stage imports only inside a function."""
    script = ROOT / "tests" / "_closure_probe.py"
    script.write_text("def main():\n    from vogflow.analysis.stats import auroc\n")
    try:
        found = {str(p) for p in closure(script)}
    finally:
        script.unlink()
    assert "vogflow/analysis/stats.py" in found
    assert "vogflow/analysis/__init__.py" in found
    assert "vogflow/__init__.py" in found
