"""Stability of VoG across seeds and across batch sizes (paper Fig. 6 and section 3.3).

    python stages/stability.py --runs runs --metrics results/stability/metrics.json \
        --report results/stability/report.json --plots results/stability/plots
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vogflow.common.atomic import write_json
from vogflow.pipeline.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--runs", required=True, help="folder holding runs/<run>/rankings")
    p.add_argument("--metrics", required=True, help="headline metrics JSON")
    p.add_argument("--report", required=True, help="JSON of the whole analysis")
    p.add_argument("--plots", required=True, help="folder for the per-run error curves")
    args = p.parse_args()

    with stage("stability", params_path=args.params) as ctx:
        import pandas as pd

        from vogflow.common.atomic import write_text
        from vogflow.paper.stability import stability_report
        from vogflow.rankings.table import check_aligned, read

        prm, cfg = ctx.params, ctx.params.stability
        column = f"vog_{cfg.window}_label"
        metrics = {}
        for kind, runs in (("seed", cfg.seed_runs), ("batch_size", cfg.batch_runs)):
            tables = {
                r: read(Path(args.runs) / r / "rankings" / f"{cfg.split}.parquet") for r in runs
            }
            check_aligned(tables)
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
            # Run names stay out of the plot's columns: the spread across runs, per bucket.
            errors = np.array([c["error"] for c in report["curves"].values()], dtype=float)
            curves = pd.DataFrame(
                {
                    "bucket": np.arange(prm.vog.bins),
                    "error_mean": errors.mean(0),
                    "error_min": errors.min(0),
                    "error_max": errors.max(0),
                }
            )
            write_text(
                Path(args.plots) / f"{kind}.csv", curves.to_csv(index=False, float_format="%.6g")
            )
        metrics["score"] = column
        metrics["split"] = cfg.split
        write_json(args.report, metrics)
        write_json(args.metrics, {k: _headline(metrics[k]) for k in ("seed", "batch_size")})


def _headline(report: dict) -> dict:
    """Scalars for `dvc metrics show`: mean pairwise agreement, its interval and verdict."""
    from vogflow.analysis.reports import headline

    return {
        "spearman": headline(report["spearman"]["claim"]),
        "top_overlap": headline(report["top_overlap"]["claim"]),
        "top_overlap_chance": report["top_overlap"]["chance"],
    }


if __name__ == "__main__":
    main()
