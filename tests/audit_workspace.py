"""A planted audited workspace (params, dvc.lock, run outputs) and logging it to a store: what
the tracking, team-backend, audit and report-browser tests log without running the pipeline."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import yaml

from vogflow import tracking
from vogflow.store.connection import git_state
from vogflow.tracking.record import compose, outputs


def workspace(folder: Path, accuracy: float = 0.9) -> Path:
    """A pipeline workspace as DVC leaves it: dvc.yaml, dvc.lock, metrics, rankings, timings."""
    import numpy as np
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(
        "data: {name: digits}\nmodel: {name: lenet}\nvog: {rank_by: all_label, top_k: 3}\n"
        "tracking: {register_run: main}\n"
    )
    (folder / "dvc.yaml").write_text(
        textwrap.dedent("""
        stages:
          train:
            foreach: [main]
            do:
              cmd: python stages/train.py --run ${key}
              metrics:
                - runs/${key}/train.json:
                    cache: false
          score:
            foreach: [main]
            do:
              cmd: python stages/score.py --run ${key}
              outs:
                - runs/${key}/rankings
              metrics:
                - runs/${key}/score.json:
                    cache: false
    """)
    )
    run = folder / "runs" / "main"
    (run / "rankings").mkdir(parents=True, exist_ok=True)
    (run / "train.json").write_text(json.dumps({"test_accuracy": accuracy}))
    (run / "score.json").write_text(
        json.dumps(
            {
                "test": {
                    "error": 0.1,
                    "trend": {"measured": 0.5, "lo": 0.2, "hi": 0.8, "verdict": "supported"},
                }
            }
        )
    )
    n = 12
    pd.DataFrame(
        {
            "index": np.arange(n),
            "label": np.arange(n) % 3,
            "true_label": np.arange(n) % 3,
            "noisy": False,
            "pred": np.arange(n) % 3,
            "correct": True,
            "vog_all_label": np.linspace(0, 1, n),
        }
    ).to_parquet(run / "rankings" / "test.parquet")
    lock = {
        "schema": "2.0",
        "stages": {
            "train@main": {
                "cmd": "x",
                "params": {"params.yaml": {"train": {"epochs": 3}}},
                "outs": [{"path": "runs/main/train.json", "md5": str(accuracy)}],
            },
            "score@main": {
                "cmd": "y",
                "params": {"params.yaml": {"vog": {"normalise": "z"}}},
                "outs": [
                    {"path": "runs/main/rankings", "md5": "r"},
                    {"path": "runs/main/score.json", "md5": "s"},
                ],
            },
        },
    }
    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))
    timings = folder / ".vogflow" / "timings"
    timings.mkdir(parents=True, exist_ok=True)
    now = time.time()
    (timings / "train@main.json").write_text(
        json.dumps(
            {
                "stage": "train@main",
                "start": now - 10,
                "body_start": now - 9,
                "end": now - 2.1,
                "history": [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.0}],
            }
        )
    )
    return folder


def log(folder: Path, uri: str, **kw):
    params = yaml.safe_load((folder / "params.yaml").read_text())
    lock = yaml.safe_load((folder / "dvc.lock").read_text())
    record = compose(folder, params=params, git=git_state(folder, generated=outputs(lock)), **kw)
    return tracking.log_pipeline_audit(
        record, experiment="t", model_name="m", model_dir=None, uri=uri
    )
