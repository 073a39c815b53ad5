"""DVC's promise: every stage depends on exactly what shapes its outputs.

Each stage's `deps` must equal its script plus the closure of the `vogflow` modules the script
imports (at any depth, lazy imports included), so that editing any of them marks the stage stale.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


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
REGISTRIES = ("vogflow/data/__init__.py",)


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


def declared(deps: list[str]) -> set[Path]:
    """Declared code deps as files (a folder stands for every .py file under it)."""
    out = set()
    for dep in deps:
        path = ROOT / dep
        if path.is_dir() and (dep.startswith(("vogflow", "stages"))):
            out.update(p.relative_to(ROOT) for p in path.rglob("*.py"))
        elif dep.endswith(".py"):
            out.add(Path(dep))
    return out


def stages() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in spec.items()}


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_the_import_closure_of_its_script(name):
    body = stages()[name]
    script = ROOT / body["cmd"].split()[1]
    want = closure(script)
    have = declared(body["deps"])
    assert have == want, (
        f"{name}: missing from deps: {sorted(map(str, want - have))}; "
        f"not imported: {sorted(map(str, have - want))}"
    )


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
