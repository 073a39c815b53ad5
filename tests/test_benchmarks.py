"""The GPU benchmark runs end to end at a toy size, so it works the day a GPU is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_benchmark_runs_small_and_reports_agreement(tmp_path):
    out = tmp_path / "rows.json"
    command = [sys.executable, str(ROOT / "benchmarks/bench_gpu.py"), "--n-train", "64"]
    command += ["--n-test", "32", "--train-examples", "64", "--epochs", "4", "--batch-size", "32"]
    done = subprocess.run(
        [*command, "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "goal (the 96-image, K=4 extraction under 60 s)" in done.stdout
    result = json.loads(out.read_text())
    assert result["k"] == 4 and result["images"] == 96
    rows = {(r["precision"], r["channels_last"]): r for r in result["rows"]}
    assert {("fp32", False), ("fp32", True)} <= set(rows)
    reference = rows["fp32", False]
    assert reference["spearman_min"] == 1.0 and reference["top10_jaccard_min"] == 1.0
    # Another memory layout sums in another order: the ranking is the same all but for ties.
    assert rows["fp32", True]["spearman_min"] > 0.999
    for row in result["rows"]:
        assert row["seconds"] > 0 and row["images_per_s"] > 0
