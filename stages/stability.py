"""Stability of VoG across seeds and across batch sizes (paper Fig. 6 and section 3.3).

    python stages/stability.py --runs runs --metrics results/stability/metrics.json \
        --plots results/stability/plots
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vogflow.config import section_dict
from vogflow.io import write_json
from vogflow.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--runs", required=True, help="folder holding runs/<run>/rankings")
    p.add_argument("--metrics", required=True, help="metrics JSON")
    p.add_argument("--plots", required=True, help="folder for the per-run error curves")
    args = p.parse_args()

    with stage("stability", params_path=args.params) as ctx:
        import pandas as pd

        from vogflow.analysis.stability import stability_report
        from vogflow.io import write_text
        from vogflow.rankings import read

        prm, cfg = ctx.params, ctx.params.stability
        ctx.track.params({"stability": section_dict(cfg), "vog.bins": prm.vog.bins})
        column = f"vog_{cfg.window}_label"
        metrics = {}
        for kind, runs in (("seed", cfg.seed_runs), ("batch_size", cfg.batch_runs)):
            tables = {
                r: read(Path(args.runs) / r / "rankings" / f"{cfg.split}.parquet") for r in runs
            }
            _check_aligned(tables)
            report = stability_report(
                {r: t[column].to_numpy() for r, t in tables.items()},
                {r: t["correct"].to_numpy() for r, t in tables.items()},
                top_fraction=cfg.top_fraction,
                bins=prm.vog.bins,
                n_boot=prm.vog.bootstrap,
                confidence=prm.vog.confidence,
                rng=np.random.default_rng(prm.vog.seed),
                kind=kind,
            )
            metrics[kind] = report
            curves = pd.DataFrame({"bucket": np.arange(prm.vog.bins)})
            for run, curve in report["curves"].items():
                curves[run] = curve["error"]
            write_text(
                Path(args.plots) / f"{kind}.csv", curves.to_csv(index=False, float_format="%.6g")
            )
        metrics["score"] = column
        metrics["split"] = cfg.split
        write_json(args.metrics, metrics)
        ctx.track.metrics(metrics)
        ctx.track.artifact(args.metrics, "metrics")
        ctx.track.artifact(args.plots, "plots")
        ctx.track.metrics(
            {
                "stability_spearman_seed": metrics["seed"]["spearman"]["mean"],
                "stability_spearman_batch": metrics["batch_size"]["spearman"]["mean"],
            },
            parent=True,
        )


def _check_aligned(tables: dict) -> None:
    """Runs must score the same examples with the same labels, or the comparison is meaningless."""
    first_name, first = next(iter(tables.items()))
    for name, table in tables.items():
        if len(table) != len(first) or not np.array_equal(table["true_label"], first["true_label"]):
            raise SystemExit(f"stability: runs {first_name} and {name} scored different examples")


if __name__ == "__main__":
    main()
