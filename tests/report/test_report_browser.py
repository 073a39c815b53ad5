"""The audit report in a real browser: headless Chromium from the OS packages, driven by
Playwright, with the network off.

Every request that is not the page's own file is blocked and recorded: the page must make none,
log no console error, and show, section by section, what its files say. A screenshot of the
first screen (laptop 1366x768, and a 400 px window) is kept in ``test-artifacts/`` at the
project root (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from report_tables import npz_images, rankings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"  # the OS package (.ci/run installs it)
VIEWPORTS = {"laptop": (1366, 768), "narrow": (400, 860)}


def env() -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VOGFLOW_"))}
    out["PYTHONPATH"] = str(ROOT)
    return out


def run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_offline(browser, html: Path, name: str) -> dict:
    """Load ``html`` with every non-file request blocked; screenshots of the first screen; the
    page's sections as the browser sees them."""
    blocked, errors = [], []
    found: dict = {"blocked": blocked, "errors": errors}
    ARTIFACTS.mkdir(exist_ok=True)
    for view, (width, height) in VIEWPORTS.items():
        page = browser.new_page(viewport={"width": width, "height": height})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def guard(route):
            if route.request.url.startswith("file://"):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", guard)
        page.goto(html.as_uri(), wait_until="load")
        page.screenshot(path=str(ARTIFACTS / f"report_{name}_{view}.png"))
        # Nothing wider than the window: the page reads without scrolling sideways.
        found[f"overflow_{view}"] = page.evaluate(
            "document.documentElement.scrollWidth - window.innerWidth"
        )
        if view == "laptop":
            # Per split: [index, given, suggested, picture width] of each label-issue card.
            found["issues"] = dict(
                page.eval_on_selector_all(
                    "section.split",
                    "secs => secs.map(s => [s.dataset.split, [...s.querySelectorAll('li.issue')]"
                    ".map(e => [+e.dataset.index, +e.dataset.given, +e.dataset.suggested,"
                    " e.querySelector('img') ? e.querySelector('img').naturalWidth : 0])])",
                )
            )
            found["hardest"] = page.eval_on_selector_all(
                "ul.hardest",
                "uls => uls.map(u => [...u.querySelectorAll('li')].map(li => +li.dataset.index))",
            )
            found["claims"] = page.eval_on_selector_all(
                "tr.claim", "rows => rows.map(r => [r.dataset.claim, r.lastElementChild.innerText])"
            )
            found["text"] = page.inner_text("body")
            found["images_loaded"] = page.evaluate(
                "[...document.images].every(i => i.complete && i.naturalWidth > 0)"
            )
        page.close()
    return found


def issue_rows(flagged: pd.DataFrame) -> list[list[int]]:
    return [
        [int(i), int(g), int(s)]
        for i, g, s in zip(
            flagged["index"], flagged["label"], flagged["suggested_label"], strict=True
        )
    ]


def assert_clean(found: dict) -> None:
    assert found["blocked"] == [], f"the page requested {found['blocked']}"
    assert found["errors"] == [], f"console errors: {found['errors']}"
    assert found["overflow_laptop"] <= 0 and found["overflow_narrow"] <= 0
    assert found["images_loaded"]


def test_vogflow_report_of_an_audit_table(browser, tmp_path):
    table = rankings(n=60)
    table.to_parquet(tmp_path / "test.parquet", index=False)
    npz_images(tmp_path / "data.npz", n_test=60)
    out = tmp_path / "report.html"
    run(
        [sys.executable, "-m", "vogflow.cli", "report", "test.parquet", "--data",
         "npz:data.npz", "-k", "8", "--out", str(out)],
        tmp_path,
    )  # fmt: skip
    found = open_offline(browser, out, "audit")
    assert_clean(found)
    flagged = table[table["label_issue"]].sort_values("label_prob")
    assert [row[:3] for row in found["issues"]["test"]] == issue_rows(flagged)
    assert all(row[3] == 8 for row in found["issues"]["test"])  # each with its 8x8 picture
    assert found["hardest"] == [table.nlargest(8, "vog_late_label")["index"].tolist()]
    assert found["claims"] == []  # a single audit tests none, and says why
    assert "no claim of the paper is tested here" in found["text"]


def pipeline_workspace(folder: Path) -> dict:
    """What the stages before `report` leave, for the digits dataset the params name."""
    from vogflow.config.schema import DataConfig
    from vogflow.data import load_dataset

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    digits = load_dataset(DataConfig())
    for split, part in (("train", digits.train), ("test", digits.test)):
        table = rankings(n=len(part), classes=10, seed=len(part), ranked=True)
        table["label"] = table["true_label"] = part.y
        table["pred"] = np.where(table["correct"], part.y, (part.y + 1) % 10)
        table["suggested_label"] = np.where(table["label_issue"], (part.y + 3) % 10, part.y)
        (folder / "results" / "ranking").mkdir(parents=True, exist_ok=True)
        table.to_parquet(folder / "results" / "ranking" / f"{split}.parquet", index=False)
    write = lambda rel, obj: (  # noqa: E731
        (folder / rel).parent.mkdir(parents=True, exist_ok=True),
        (folder / rel).write_text(json.dumps(obj)),
    )
    claim = {"expected": "positive", "measured": 0.3, "lo": 0.1, "hi": 0.5}
    write(
        "results/stability/metrics.json", {"seed": {"spearman": {**claim, "verdict": "supported"}}}
    )
    write("results/toy/metrics.json", {"spearman": {**claim, "verdict": "contradicted"}})
    write("runs/main/score.json", {"test": {"trend": {**claim, "verdict": "inconclusive"}}})
    write("runs/main/train.json", {"test_accuracy": 0.97})
    write(
        "results/scorecard/report.json",
        {
            "rank_by": {"configured": "auto", "score": "hard_loss_seedmean", "reason": "auto: x"},
            "choices": {"any": {"score": "hard_loss_seedmean"}, "vog": {"score": "vog_late_pred"}},
        },
    )
    flag = {"flagged": 40, "wrong": 50, "precision": 0.95, "recall": 0.76, "f1": 0.84}
    scorecard = {"rank_by": {"score": "hard_loss_seedmean", "reliability": 0.9}}
    write("results/scorecard/metrics.json", {**scorecard, "label_issues": flag})
    stats = {f"{k}_{s}": 50.0 for k in ("auroc", "aupr_in", "aupr_out") for s in ("mean", "std")}
    (folder / "results" / "ood").mkdir(parents=True)
    pd.DataFrame([{"method": "vog", **stats, "n_corruptions": 2}]).to_csv(
        folder / "results" / "ood" / "table.csv", index=False
    )
    return params


def test_the_report_stage_in_a_real_browser(browser, tmp_path):
    pipeline_workspace(tmp_path)
    run([sys.executable, str(ROOT / "stages" / "report.py"), "--out", "results/report/index.html"],
        tmp_path)  # fmt: skip
    found = open_offline(browser, tmp_path / "results" / "report" / "index.html", "pipeline")
    assert_clean(found)
    assert sorted(found["claims"]) == [
        ["deciles.test.trend", "inconclusive"],
        ["stability.seed.spearman", "supported"],
        ["toy.spearman", "contradicted"],
    ]
    assert "hard_loss_seedmean" in found["text"] and "Out-of-distribution" in found["text"]
    assert "flagged 40 training labels for 50 that were changed" in found["text"]
    assert "precision 0.95, recall 0.76, F1 0.84" in found["text"]
    assert sorted(found["issues"]) == ["test", "train"]
    for split, hardest in zip(("train", "test"), found["hardest"], strict=True):
        table = pd.read_parquet(tmp_path / "results" / "ranking" / f"{split}.parquet")
        # The 60 most doubtful of the split's label issues, with their 8x8 digit pictures.
        flagged = table[table["label_issue"]].sort_values("label_prob").head(60)
        assert [row[:3] for row in found["issues"][split]] == issue_rows(flagged)
        assert all(row[3] == 8 for row in found["issues"][split])
        assert hardest == table.nsmallest(12, "rank")["index"].tolist()


def test_the_track_stage_logs_the_report_to_the_audit_run(tmp_path):
    from audit_workspace import log, workspace
    from mlflow.tracking import MlflowClient

    folder = workspace(tmp_path / "project")
    (folder / "results" / "report").mkdir(parents=True)
    (folder / "results" / "report" / "index.html").write_text("<!DOCTYPE html><title>r</title>")
    uri = f"sqlite:///{tmp_path}/project/mlflow.db"
    run_id, _ = log(folder, uri)
    client = MlflowClient(tracking_uri=uri)
    assert [a.path for a in client.list_artifacts(run_id, "report")] == ["report/index.html"]
