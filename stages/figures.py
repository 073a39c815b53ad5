"""Every figure of the paper's kinds for the audited run (PNGs, DVC plots, MLflow artifacts).

    python stages/figures.py --run main --rankings runs/main/rankings \
        --ranking results/ranking --deciles runs/main/deciles.json \
        --stability results/stability/report.json \
        --memorization results/memorization/scores.parquet --ood results/ood/table.csv \
        --out results/figures
"""

from __future__ import annotations

from pathlib import Path

from vogflow.pipeline.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--rankings", required=True, help="rankings folder of the run")
    p.add_argument(
        "--ranking",
        required=True,
        help="the audit's ranking folder (results/ranking); a split without one is shown by the "
        "single-run default",
    )
    p.add_argument("--deciles", required=True, help="decile report JSON of the score stage")
    p.add_argument("--stability", required=True, help="stability report JSON")
    p.add_argument("--memorization", required=True, help="memorization scores parquet")
    p.add_argument("--ood", required=True, help="OoD summary table CSV")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    args = p.parse_args()

    with stage("figures", params_path=args.params, run=args.run) as ctx:
        import pandas as pd

        from vogflow.common.atomic import read_json
        from vogflow.data import load_dataset
        from vogflow.figures import save
        from vogflow.paper.figures import audit_figures
        from vogflow.paper.ood_table import paper_table1
        from vogflow.rankings.choice import resolve
        from vogflow.rankings.table import read

        fig_cfg = ctx.params.figures
        out = Path(args.out)
        paths = {split: Path(args.rankings) / f"{split}.parquet" for split in ("train", "test")}
        tables = {split: read(path) for split, path in paths.items() if path.exists()}
        rankings = {}
        for split, table in tables.items():
            # The audit's ranking of the split (the same rows with rank columns), else the run's.
            ranked = Path(args.ranking) / f"{split}.parquet"
            rankings[split] = resolve(read(ranked) if ranked.exists() else table)
        figures = audit_figures(
            load_dataset(ctx.params.data, ctx.root),
            tables,
            read_json(args.deciles),
            read_json(args.stability),
            pd.read_parquet(args.memorization),
            pd.read_csv(args.ood, index_col=0),
            paper_table1(),
            grid=fig_cfg.grid,
            classes=fig_cfg.classes,
            rankings=rankings,
        )
        for name, fig in figures:
            save(fig, out / f"{name}.png", dpi=fig_cfg.dpi)
        print(f"figures: {len(list(out.glob('*.png')))} PNGs in {out}", flush=True)


if __name__ == "__main__":
    main()
