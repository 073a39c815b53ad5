"""What a DVC user reads: `dvc metrics show`, the README's `dvc exp show`, `dvc plots show`, and
`dvc status` after the data changed. The real `dvc` on a copy of the project."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "stages"))
from headline import HEADLINES  # noqa: E402

ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VOGFLOW_"))},
    "DVC_NO_ANALYTICS": "1",
    "VOGFLOW_TRACKING": "off",
}
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def sh(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def copy_project(dest: Path) -> Path:
    """The project's files as a clone has them (tracked and not ignored), in a new git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    sh(["git", "init", "-q"], dest)
    sh([*GIT, "add", "-A"], dest)
    sh([*GIT, "commit", "-qm", "copy"], dest)
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"))


def readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix`` (its comment dropped)."""
    readme = (ROOT / "README.md").read_text()
    line = re.search(rf"^{re.escape(prefix)}.*$", readme, re.M).group(0)
    return shlex.split(line, comments=True)


def test_metrics_show_lists_one_short_name_per_headline(project):
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], project))
    files = shown[""]["data"]  # "": the workspace
    assert list(files) == ["results/headline.json"]  # the stages' files are outputs, not metrics
    flat = {
        f"{section}.{name}"
        for section, values in files["results/headline.json"]["data"].items()
        for name in values
    }
    assert flat == set(HEADLINES)
    stages = set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    for name in flat:  # each name keeps the file, and so the stage, it came from
        assert name.split(".")[0] in stages, name
        assert name.split(".")[0] in HEADLINES[name][0], name
    table = sh(["dvc", "metrics", "show"], project)
    # The issue measured 81 columns in lines 1,684 characters wide.
    assert len(table.splitlines()[0].split()) == 1 + len(HEADLINES)
    assert max(map(len, table.splitlines())) < 180


def test_the_readmes_exp_show_has_the_headlines_and_the_params_that_differ(project):
    command = readme_command("dvc exp show")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("  lr: 0.05 ", "  lr: 0.04 ", 1))
    headline = project / "results" / "headline.json"
    values = json.loads(headline.read_text())
    values["toy"]["spearman"] = -0.5
    headline.write_text(json.dumps(values))
    try:  # the workspace is an audit with another lr beside the committed one
        shown = sh([*command, "--no-pager", "--csv"], project)
    finally:
        sh(["git", "checkout", "--", "params.yaml", "results/headline.json"], project)
    header, *rows = list(csv.reader(io.StringIO(shown)))
    # The issue counted 345 columns: every cell "...".
    shown_columns = [c for c in header if c not in ("Experiment", "rev", "typ")]
    assert shown_columns == [*sorted(HEADLINES), "train.lr"]
    assert len(rows) == 2
    toy = header.index("toy.spearman")
    assert -0.5 in [float(row[toy]) for row in rows]


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.refs += [(tag, v) for k, v in attrs if k in ("src", "href") and v]
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def test_plots_show_draws_every_plot_as_an_image_and_fetches_nothing(project, tmp_path):
    out = tmp_path / "plots"
    sh(["dvc", "plots", "show", "-o", str(out)], project)
    page = (out / "index.html").read_text()
    refs = _Refs()
    refs.feed(page)
    assert "vogflow" in refs.title
    assert "<script" not in page  # DVC's own template loads vega from a CDN
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["plots"]
    images = [v for tag, v in refs.refs if tag == "img"]
    assert len(images) == len(declared) == len(refs.refs)
    for src in images:
        assert not re.match(r"[a-z]+:", src), src  # relative: no http(s), no file://
        assert (out / src).stat().st_size > 1000, src


def test_dvc_plots_is_git_ignored(project):
    (project / "dvc_plots").mkdir(exist_ok=True)
    (project / "dvc_plots" / "index.html").write_text("x")
    assert "dvc_plots" not in sh(["git", "status", "--porcelain"], project)


# --- every input is a dependency ----------------------------------------------------------------


def tiny_data_params(project: Path, name: str, path: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(name=name, path=path, stream=False, workers=0)
    params["model"]["name"] = "mlp"
    params["train"].update(epochs=7, milestones=[5], batch_size=8)
    params["checkpoints"].update(early=3, every=2, late=3)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def status(project: Path, stage: str) -> str:
    return sh(["dvc", "status", stage], project)


@pytest.mark.slow
def test_editing_labels_in_an_npz_marks_the_stages_that_read_it_stale(tmp_path):
    project = copy_project(tmp_path)
    rng = np.random.default_rng(0)
    y_train, y_test = np.repeat([0, 1], 40), np.repeat([0, 1], 10)
    # Two classes a model tells apart at once: dark and bright noise.
    x_train = (rng.integers(0, 100, (80, 8, 8)) + 150 * y_train[:, None, None]).astype(np.uint8)
    x_test = (rng.integers(0, 100, (20, 8, 8)) + 150 * y_test[:, None, None]).astype(np.uint8)
    np.savez(project / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    tiny_data_params(project, "npz", "data.npz")
    sh(["dvc", "repro", "train@main"], project)
    assert "up to date" in status(project, "train@main")

    y_train[0] = 1  # one label edited inside the archive
    np.savez(project / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    stale = status(project, "train@main")
    assert re.search(r"train@main:\s+changed deps:\s+modified:\s+data\.npz", stale), stale
    for stage in ("gradients@main", "ood", "figures"):
        deps = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage.split("@")[0]]
        assert "${data.path}" in deps.get("do", deps)["deps"], stage


@pytest.mark.slow
def test_moving_an_image_to_another_class_folder_marks_training_stale(tmp_path):
    from PIL import Image

    project = copy_project(tmp_path)
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        for label, name in enumerate(("dark", "bright")):
            folder = project / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 100, (8, 8)) + 150 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.png")
    tiny_data_params(project, "imagefolder", "images")
    sh(["dvc", "repro", "train@main"], project)
    assert "up to date" in status(project, "train@main")

    # A relabelled image: moved to the other class's folder.
    (project / "images/train/dark/000.png").rename(project / "images/train/bright/999.png")
    stale = status(project, "train@main")
    assert re.search(r"train@main:\s+changed deps:\s+modified:\s+images", stale), stale


def test_the_builtin_datasets_depend_on_the_committed_placeholder(project):
    from vogflow.config.schema import BUILTIN_DATA_PATH

    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["data"]["path"] == BUILTIN_DATA_PATH
    assert (project / BUILTIN_DATA_PATH).is_file()  # committed, so a fresh clone has it
    # DVC resolves ${data.path} to it for every stage that reads data and finds it.
    stale = sh(["dvc", "status", "train@main"], project)
    assert not re.search(r"deleted:\s+\.vogflow/builtin-data", stale), stale


def test_the_readmes_forced_track_reruns_track_alone(project):
    readme = (ROOT / "README.md").read_text()
    assert "dvc repro -f track" not in readme  # reruns every stage before it too
    assert readme.count("dvc repro -f -s track") >= 2
    planned = sh(["dvc", "repro", "--dry", "-f", "-s", "track"], project)
    assert re.findall(r"Running stage '([^']+)'", planned) == ["track"]


def test_dash_S_adds_a_new_key_only_with_a_plus_as_the_readme_says(project):
    assert "dvc exp run -S '+runs.bs32.lr=0.025'" in (ROOT / "README.md").read_text()
    bare = subprocess.run(
        ["dvc", "exp", "run", "--dry", "-S", "runs.bs32.lr=0.025"],
        cwd=project,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bare.returncode != 0 and "use +runs.bs32.lr=0.025" in bare.stdout + bare.stderr
    plus = subprocess.run(
        ["dvc", "exp", "run", "--dry", "-S", "+runs.bs32.lr=0.025"],
        cwd=project,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Accepted: DVC goes on to reproduce (what a dry run in a copy without outputs then does
    # is beside the point).
    assert "not in struct" not in plus.stdout + plus.stderr
    assert "Reproducing experiment" in plus.stdout, plus.stdout[-2000:] + plus.stderr[-2000:]


def test_mlflow_still_logs_every_stages_own_metrics_file():
    """The stages' metrics files left DVC's metrics for plain outputs marked `type: metrics`;
    the tracking record still finds each, so every child run logs them."""
    from vogflow.tracking.record import _declared

    declared = _declared(yaml.safe_load((ROOT / "dvc.yaml").read_text()), "metrics")
    assert declared["train"] == ["runs/${key}/train.json"]
    assert declared["score"] == ["runs/${key}/score.json"]
    for stage in ("toy", "stability", "scorecard", "memorization", "ood"):
        assert declared[stage] == [f"results/{stage}/metrics.json"], stage
    assert declared["headline"] == ["results/headline.json"]
