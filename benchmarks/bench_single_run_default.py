"""Which score a single-run audit should rank by: measured on audits that can measure it.

    python benchmarks/bench_single_run_default.py [--datasets digits breast_cancer wine]

A `vogflow audit` of a user's checkpoints is one run: no seed runs to measure how reliable a
ranking is, no planted noise to check that it finds wrong labels. Its default score is therefore
chosen here, on audits where both are measured: the pipeline's scorecard (stages/scorecard.py) of
the default digits audit (LeNet) and of scikit-learn's bundled tabular sets (breast cancer, wine;
an MLP, written as an .npz for ``data.name: npz``), each with 5 seed runs and a run with 20% of
its training labels shuffled. Only single-run scores count (no ``_seedmean``): per dataset, each
score's reliability (Spearman with a seed rerun, test split), planted-noise AUROC (the shuffled
run's training split) and decile trend (test error rising with the score), and the scorecard's
own single-run choice. The default is the score that is never excluded (noise AUROC > 0.5 and a
rising trend on every dataset where one is measured: a test split without errors has none) with
the highest mean reliability.

Each dataset's audit runs the real stages (train, gradients, score, scorecard) as subprocesses
in a scratch folder; ``digits`` reads this project's own scorecard
(``results/scorecard/report.json``, from ``dvc repro``) when it is there, else trains its runs too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("main", "seed1", "seed2", "seed3", "seed4", "shuffled")


def write_npz(name: str, folder: Path) -> Path:
    """A scikit-learn bundled tabular set as the four arrays ``data.name: npz`` reads, split
    80/20 stratified with seed 0 like the digits default."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
    x, y = loader(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.2, stratify=y, random_state=0
    )
    path = folder / f"{name}.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


def params_for(name: str, folder: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runs"] = {r: params["runs"][r] for r in (*RUNS, "bs32")}
    params["stability"]["batch_runs"] = ["main", "bs32"]
    if name != "digits":
        params["data"] = {**params["data"], "name": "npz", "path": str(write_npz(name, folder))}
        params["model"] = {"name": "mlp", "hidden": 64}
    return params


def stage(folder: Path, script: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "VOGFLOW_TRACKING": "off", "PYTHONPATH": str(ROOT)},
    )
    if done.returncode:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def audit(name: str, folder: Path) -> dict:
    """The scorecard report of one dataset's audit."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params_for(name, folder)))
    own = ROOT / "results" / "scorecard" / "report.json"
    if name == "digits" and own.exists():  # the pipeline's own scorecard of this audit
        return json.loads(own.read_text())
    runs = folder / "runs"
    for run in RUNS:
        base = f"runs/{run}"
        stage(
            folder,
            "train.py",
            "--run",
            run,
            "--out",
            f"{base}/checkpoints",
            "--metrics",
            f"{base}/train.json",
        )
        stage(
            folder,
            "gradients.py",
            "--run",
            run,
            "--checkpoints",
            f"{base}/checkpoints",
            "--out",
            f"{base}/gradients",
            "--metrics",
            f"{base}/gradients.json",
        )
        stage(
            folder,
            "score.py",
            "--run",
            run,
            "--gradients",
            f"{base}/gradients",
            "--out",
            f"{base}/rankings",
            "--metrics",
            f"{base}/score.json",
            "--plots",
            f"{base}/plots",
            "--report",
            f"{base}/deciles.json",
        )
        print(f"  {name}: run {run} done", flush=True)
    out = folder / "scorecard"
    stage(
        folder,
        "scorecard.py",
        "--runs",
        str(runs),
        "--metrics",
        str(out / "metrics.json"),
        "--table",
        str(out / "scorecard.csv"),
        "--report",
        str(out / "report.json"),
        "--figure",
        str(out / "scorecard.png"),
        "--ranking",
        str(out / "ranking"),
    )
    return json.loads((out / "report.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer", "wine"])
    p.add_argument("--keep", default=None, help="scratch folder to keep (default: a temporary one)")
    args = p.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep or tmp)
        reports = {name: audit(name, base / name) for name in args.datasets}

    def value(row: dict, key: str) -> float:
        # NaN is written as null: a score constant on a split, or a test split without errors.
        return float("nan") if row[key] is None else float(row[key])

    def mean_reliability(per: dict) -> float:
        return float(np.nanmean([value(r, "reliability") for r in per.values()]))

    rows: dict[str, dict[str, dict]] = {}
    for name, report in reports.items():
        for score, row in report["scores"].items():
            if row["kind"] == "run":
                rows.setdefault(score, {})[name] = row
    kept = {
        s: per
        for s, per in rows.items()
        if len(per) == len(reports) and all(r["excluded"] is None for r in per.values())
    }
    order = sorted(kept, key=lambda s: -mean_reliability(kept[s]))
    head = " | ".join(f"{d}: reliability / noise AUROC / trend" for d in reports)
    print(f"\n| score | mean reliability | {head} |")
    print("|---|---:|" + "---|" * len(reports))
    for s in order:
        cells = " | ".join(
            " / ".join(
                f"{value(kept[s][d], k):.3f}"
                for k in ("reliability", "noise_auroc", "decile_trend")
            )
            for d in reports
        )
        print(f"| {s} | {mean_reliability(kept[s]):.3f} | {cells} |")
    print("\nthe scorecard's single-run choice per dataset:")
    for name, report in reports.items():
        print(f"  {name}: {report['choices']['single_run']['score']}")
    print(
        f"\nsingle-run default: {order[0] if order else 'none'} "
        f"(never excluded, highest mean reliability); wall time {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
