"""The audit's headline numbers in one short file: the only metrics that DVC lists.

python stages/headline.py --run main --out results/headline.json

`dvc metrics show` and `dvc exp show` list every key of every declared metrics file; the stages'
own metrics files hold dozens of keys with names such as `spearman.measured` that lose the file
they came from. This file holds one number per question, each named `<file>.<name>` after the
file it was read from (`toy.spearman` from results/toy/metrics.json, `stability.seeds` from
results/stability/metrics.json), so a laptop terminal shows the whole audit in a line.
The stages' metrics files stay outputs beside it, and MLflow logs all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vogflow.common.atomic import read_json, write_json
from vogflow.pipeline.stage import parser, stage

# Name in the headline -> (file, key path in it). ``{run}`` is the audited run.
HEADLINES: dict[str, tuple[str, tuple[str, ...]]] = {
    # The audited model's test accuracy.
    "train.test_acc": ("runs/{run}/train.json", ("test_accuracy",)),
    # Spearman of test error against VoG decile: the paper's claim (positive).
    "score.trend": ("runs/{run}/score.json", ("test", "trend", "measured")),
    # Spearman of VoG against the distance to the decision boundary (negative).
    "toy.spearman": ("results/toy/metrics.json", ("spearman", "measured")),
    # Mean pairwise Spearman of the rankings across seeds, and across batch sizes.
    "stability.seeds": ("results/stability/metrics.json", ("seed", "spearman", "measured")),
    "stability.batches": ("results/stability/metrics.json", ("batch_size", "spearman", "measured")),
    # How well the score the audit ranks by agrees with an independent redo.
    "scorecard.reliability": ("results/scorecard/metrics.json", ("chosen", "reliability")),
    # AUROC of VoG for the shuffled labels, and for corrupted (OoD) inputs.
    "memorization.auroc": ("results/memorization/metrics.json", ("auroc", "measured")),
    "ood.auroc_vog": ("results/ood/metrics.json", ("auroc_vog",)),
}


def _lookup(data: Any, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if isinstance(data, int | float) and not isinstance(data, bool) else None


def headline(root: Path, run: str) -> dict[str, dict[str, float]]:
    """``{file: {name: value}}`` (DVC shows ``file.name``); a number its stage did not write
    (no test split, say) is left out rather than shown as a fake 0."""
    out: dict[str, dict[str, float]] = {}
    cache: dict[str, Any] = {}
    for name, (template, keys) in HEADLINES.items():
        path = template.format(run=run)
        if path not in cache:
            cache[path] = read_json(root / path) if (root / path).exists() else {}
        value = _lookup(cache[path], keys)
        if value is not None:
            prefix, _, short = name.partition(".")
            out.setdefault(prefix, {})[short] = value
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True, help="the audited run (tracking.register_run)")
    p.add_argument("--out", required=True, help="the headline metrics JSON")
    args = p.parse_args()
    with stage("headline", params_path=args.params) as ctx:
        write_json(args.out, headline(ctx.root, args.run))


if __name__ == "__main__":
    main()
