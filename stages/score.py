"""Class-normalise one run's raw VoG into rankings tables, and measure error by VoG decile.

    python stages/score.py --run main --gradients runs/main/gradients --out runs/main/rankings \
        --metrics runs/main/score.json --plots runs/main/plots --report runs/main/deciles.json
"""

from __future__ import annotations

from pathlib import Path

from vogflow.common.atomic import write_json
from vogflow.pipeline.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument(
        "--gradients", required=True, help="folder of <split>.npz from the gradients stage"
    )
    p.add_argument("--out", required=True, help="folder for <split>.parquet and <split>_top.csv")
    p.add_argument("--metrics", required=True, help="metrics JSON")
    p.add_argument("--plots", required=True, help="folder for the error-per-decile CSVs")
    p.add_argument("--report", required=True, help="JSON of the test split's decile curves")
    args = p.parse_args()

    with stage(f"score@{args.run}", params_path=args.params, run=args.run) as ctx:
        from vogflow.analysis.reports import (
            decile_analysis,
            headline,
            run_score,
            write_curves,
        )
        from vogflow.rankings.choice import SEEDMEAN, canonical, resolve, scores
        from vogflow.rankings.table import build, top_bottom, write_csv, write_parquet
        from vogflow.scoring.results import load_extraction

        prm = ctx.params
        key = run_score(prm.vog.rank_by)
        # The hardest/easiest CSV shows what `vogflow top` shows for this table: vog.rank_by
        # where one run can compute it, else the single-run default.
        named = prm.vog.rank_by
        own = None if named == "auto" or named.endswith(SEEDMEAN) else named
        out, metrics = Path(args.out), {}
        report = {"curves": {}}  # stays empty when the test split is not scored
        for npz in sorted(Path(args.gradients).glob("*.npz")):
            split = npz.stem
            extraction, extra = load_extraction(npz)
            table = build(
                extraction,
                true_label=extra["true_label"],
                noisy=extra["noisy"],
                path=extra.get("path"),
                normalise=prm.vog.normalise,
            )
            write_parquet(table, out / f"{split}.parquet")
            # A name this table lacks is the scorecard stage's to refuse, with its own message.
            mine = own if own and canonical(own, scores(table)) in scores(table) else None
            ranking = resolve(table, mine, where=f"run {args.run}")
            top = top_bottom(ranking.ranked(table), ranking.name, prm.vog.top_k)
            write_csv(top, out / f"{split}_top.csv")
            # Not "error": `dvc metrics show` reports any key named so as a failure to load.
            metrics[split] = {"error_rate": float(1 - table["correct"].mean())}
            if split == "test":
                # The paper's curves are of held-out error: on the training split the final
                # model's error is mostly 0 and the curve says nothing.
                report = decile_analysis(table, prm.vog)
                write_curves(report, key, Path(args.plots) / "error_by_decile.csv")
                # Scalars only (`dvc metrics show` reads them); every variant's claim with its
                # interval is in the report.
                metrics[split]["trend"] = headline(report["claims"][key])
        # The whole report (curves with intervals) for the figures stage, so it draws these
        # numbers instead of computing them again.
        write_json(args.report, report)
        write_json(args.metrics, metrics)


if __name__ == "__main__":
    main()
