"""README's "Audit the model you are already training" examples run as written.

Each ``<!-- readme-test: NAME -->`` python block of the section runs after the ``setup`` block,
in a fresh folder with its own MLflow store, on the real frameworks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Audit the model you are already training"
EXAMPLES = ("plain", "lightning", "hf", "mlflow")


def blocks() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    section = readme[start : readme.index("\n## ", start)]
    found = re.findall(r"<!-- readme-test: (\w+) -->\n```python\n(.*?)```", section, re.S)
    return dict(found)


def test_every_example_of_the_section_is_tested():
    assert sorted(blocks()) == sorted(("setup", *EXAMPLES))


@pytest.mark.integration
@pytest.mark.parametrize("name", EXAMPLES)
def test_readme_training_example_runs(name, tmp_path, monkeypatch):
    code = blocks()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    namespace: dict = {"__name__": "readme"}
    for part in ("setup", name):
        exec(compile(code[part], f"README.md ({part})", "exec"), namespace)
    table = namespace["table"]
    assert len(table) == 240 and table["vog_all_label"].notna().all()


def test_each_extra_installs_what_its_example_needs():
    """`pip install "vogflow[<extra>]"`, as the README says before each example, is enough."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    readme = (ROOT / "README.md").read_text()
    code = blocks()
    # What each example needs beyond vogflow's own dependencies: the framework it imports, and
    # for the Hugging Face Trainer, accelerate (Trainer refuses to start without it).
    needs = {"lightning": {"lightning"}, "hf": {"transformers", "accelerate"}}
    for example, packages in needs.items():
        assert f'pip install "vogflow[{example}]"' in readme
        names = {re.split(r"[<>=\[ ]", req)[0] for req in extras[example]}
        assert packages <= names, (example, packages - names)
        assert any(f"import {p}" in code[example] or f"from {p}" in code[example] for p in names)
