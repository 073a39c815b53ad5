"""What a newcomer meets first: the README's example runs, and a bad parameter fails at once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from numerics import assert_arrays_close
from processes import HUNG_AFTER_S

ROOT = Path(__file__).resolve().parents[2]


def test_readme_bring_your_own_model_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Bring your own model.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    table = namespace["table"]
    assert len(table) == 200 and "vog_all_label" in table.columns


def test_readme_text_example_runs_in_python_and_from_the_shell(tmp_path, monkeypatch, capsys):
    from vogflow.cli import main as cli
    from vogflow.rankings.table import read

    readme = (ROOT / "README.md").read_text()
    section = re.search(r"### Text and tabular inputs(.*?)\n### ", readme, re.S).group(1)
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    shell = re.search(r"```bash\n(vogflow audit .*?)\n```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[-1], "README.md (text)", "exec"), namespace)
    table = namespace["table"]
    assert list(table["text"]) == ["very good movie", "awful plot", "not bad", "great"]
    assert table["vog_late_label"].notna().all()
    assert cli.main(shell.split()[1:] + ["--quiet"]) == 0, capsys.readouterr().err
    from_shell = read(tmp_path / "dev.parquet")
    assert list(from_shell["text"]) == list(table["text"])
    assert_arrays_close(from_shell["vog_late_label"], table["vog_late_label"])


def test_readme_shows_the_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e . && dvc repro" in readme
    test_command = 'pip install -e ".[test]" && pytest && pytest -m integration && pytest -m slow'
    assert test_command in readme
    assert test_command in (ROOT / ".ci" / "run").read_text()


def train_stage(folder: Path, run: str) -> subprocess.CompletedProcess:
    """The train stage as DVC runs it, in ``folder`` (which holds the params), tracking off."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "train.py"),
            "--run",
            run,
            "--out",
            "ck",
            "--metrics",
            "m.json",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
        env={**os.environ, "VOGFLOW_TRACKING": "off"},
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("vog", "normalise", "zz"), "vog.normalise: 'zz' is not allowed; valid: z, none, abs"),
        (("train", "epochs", 0), "train.epochs: 0 is not allowed"),
        (("model", "name", "vgg"), "model.name: 'vgg' is not allowed; valid: mlp, lenet"),
        (("train", "colour", 1), "train.colour: unknown key"),
    ],
)
def test_a_stage_with_a_bad_param_fails_before_any_work(tmp_path, edit, message):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    section, key, value = edit
    params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = train_stage(tmp_path, "main")
    assert out.returncode != 0
    assert message in out.stderr
    assert not (tmp_path / "ck").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.integration
def test_a_stage_for_an_undefined_run_names_the_defined_ones(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = train_stage(tmp_path, "mian")
    assert out.returncode != 0
    assert "--run: 'mian' is not a run; defined runs: main, seed1" in out.stderr


@pytest.mark.integration
def test_a_user_error_inside_a_stage_is_one_line_with_exit_code_2(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "manifest.json").write_text("{not json")
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "stages" / "gradients.py"),
            "--run",
            "main",
            "--checkpoints",
            "ck",
            "--out",
            "g",
            "--metrics",
            "g.json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
        env={**os.environ, "VOGFLOW_TRACKING": "off"},
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("gradients@main: ") and "manifest.json" in line
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.json").exists()


@pytest.mark.integration
def test_a_bug_inside_a_stage_keeps_its_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    code = (
        "import sys; sys.argv = ['x']\nfrom vogflow.pipeline.stage import stage\n"
        "with stage('demo'):\n    raise KeyError('a bug')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert out.returncode == 1 and "Traceback" in out.stderr and "KeyError" in out.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    ("run_lr", "option"),
    [(None, "dvc exp run -S '+runs.bs32.lr=1.5'"), (3.0, "dvc exp run -S runs.bs32.lr=1.5")],
)
def test_a_run_that_stops_learning_fails_its_stage_naming_the_run_epoch_and_fix(
    tmp_path, run_lr, option
):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # lr 3 throws LeNet about from the first step: at chance, its loss above a uniform guess.
    params["train"].update(epochs=8, milestones=[6], lr=0.05 if run_lr else 3.0)
    params["checkpoints"] = {"early": 1, "every": 4, "late": 1}
    if run_lr:  # the key exists: DVC's -S sets it without the `+` that adds a key
        params["runs"]["bs32"]["lr"] = run_lr
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = train_stage(tmp_path, "bs32")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert re.match(r"train@bs32: run bs32: training stopped learning at epoch \d+: ", line)
    assert line.endswith(f"set runs.bs32.lr: 1.5 in params.yaml, or {option}")
    assert not (tmp_path / "m.json").exists()


def test_readme_states_timings_with_their_machine_and_load_and_a_cpu_only_install():
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start") : readme.index("## What each stage produces")]
    # Every duration beside the machine and load it was measured on, and what to expect loaded.
    assert re.search(r"177 s on an idle 2-core machine \(load average 1\.0", quick)
    assert re.search(r"9 min 49 s on the same kind of 2-core machine shared", quick)
    assert "`uptime`" in quick and "load average" in quick
    assert (
        "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu "
        "&& pip install -e ." in quick
    )
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    runs = yaml.safe_load((ROOT / "params.yaml").read_text())["runs"]
    count = sum(len(runs) if "foreach" in body else 1 for body in stages.values())
    assert f"offline, {count} stages" in quick


def test_readme_says_why_another_cpu_changes_the_results_and_both_ways_out():
    readme = " ".join((ROOT / "README.md").read_text().split())
    start = readme.index("**Why a rerun on another CPU changes the committed results.**")
    why = readme[start : start + 1500]
    assert "float kernels differ between CPUs" in why
    assert "**pull**" in why and "dvc pull" in why
    assert "**commit the rerun**" in why
