"""How readable the package's layout is, in numbers: files, lines, the largest module and
function, import circles, error classes.

    python benchmarks/layout.py [ROOT]      # ROOT: a checkout (default: this one)

Circles are strongly connected components of the module import graph (imports inside functions
included; the root package's lazy attributes excluded), as tests/test_layers.py counts them.
Complexity is ruff's mccabe (C901). Error classes are the classes deriving from VogflowError.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path


def error_classes(package: Path) -> list[str]:
    bases: dict[str, list[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names = [
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                ]
                bases[node.name] = names
    derived, grew = {"VogflowError"}, True
    while grew:
        grew = False
        for name, parents in bases.items():
            if name not in derived and derived & set(parents):
                derived.add(name)
                grew = True
    return sorted(derived - {"VogflowError"})


def complexities(root: Path) -> list[tuple[int, str]]:
    out = subprocess.run(
        [
            "ruff",
            "check",
            "--isolated",
            "--select",
            "C901",
            "--config",
            "lint.mccabe.max-complexity=0",
            "--output-format",
            "concise",
            "vogflow",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout
    found = []
    for line in out.splitlines():
        m = re.match(r"(\S+?):\d+:\d+: C901 `(\w+)` is too complex \((\d+) > 0\)", line)
        if m:
            found.append((int(m.group(3)), f"{m.group(1)}:{m.group(2)}"))
    return sorted(found, reverse=True)


def circles(root: Path) -> list[list[str]]:
    sys.path[:0] = [str(root), str(Path(__file__).resolve().parents[1] / "tests")]
    import grimp
    from test_layers import _cycles

    return _cycles(grimp.build_graph("vogflow"))


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    package = root / "vogflow"
    sizes = sorted(
        (
            (len(p.read_text().splitlines()), p.relative_to(root).as_posix())
            for p in package.rglob("*.py")
        ),
        reverse=True,
    )
    flat = [p for p in package.glob("*.py")]
    worst = complexities(root)
    report = {
        "files": len(sizes),
        "lines": sum(n for n, _ in sizes),
        "top_level_modules": len(flat),
        "largest_modules": sizes[:3],
        "modules_over_500": sum(n > 500 for n, _ in sizes),
        "most_complex_functions": worst[:3],
        "functions_over_15": sum(c > 15 for c, _ in worst),
        "error_classes": error_classes(package),
    }
    report["circles"] = circles(root)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
