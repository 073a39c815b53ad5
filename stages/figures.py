"""Every figure of the paper's kinds for the audited run (PNGs, DVC plots, MLflow artifacts).

    python stages/figures.py --run main --rankings runs/main/rankings \
        --deciles runs/main/deciles.json \
        --stability results/stability/report.json \
        --memorization results/memorization/scores.parquet --ood results/ood/table.csv \
        --out results/figures
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vogflow.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--rankings", required=True, help="rankings folder of the run")
    p.add_argument("--deciles", required=True, help="decile report JSON of the score stage")
    p.add_argument("--stability", required=True, help="stability report JSON")
    p.add_argument("--memorization", required=True, help="memorization scores parquet")
    p.add_argument("--ood", required=True, help="OoD summary table CSV")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    args = p.parse_args()

    with stage("figures", params_path=args.params, run=args.run) as ctx:
        import pandas as pd

        from vogflow import figures
        from vogflow.analysis.ood import paper_table1
        from vogflow.data import load_dataset
        from vogflow.io import read_json
        from vogflow.rankings import read

        prm, fig_cfg = ctx.params, ctx.params.figures
        out = Path(args.out)
        dataset = load_dataset(prm.data, ctx.root)
        k = fig_cfg.grid**2

        def save(fig, name: str) -> None:
            figures.save(fig, out / f"{name}.png", dpi=fig_cfg.dpi)

        def show(split: str, x: np.ndarray) -> np.ndarray:
            return dataset.denormalise(x) if x.ndim == 4 else x

        for split in ("train", "test"):
            path = Path(args.rankings) / f"{split}.parquet"
            if not path.exists() or len(dataset.input_shape) != 3:
                continue
            table = read(path)
            images = show(split, dataset.split(split).x)
            for window in ("early", "late"):
                for mode in ("label", "pred"):
                    col = f"vog_{window}_{mode}"
                    classes = table["label" if mode == "label" else "pred"].to_numpy()
                    save(
                        figures.lowest_highest(
                            images,
                            table[col].to_numpy(),
                            k=k,
                            labels=classes,
                            class_names=dataset.classes,
                            title=f"{split}: lowest and highest VoG ({window} window, {mode} mode)",
                        ),
                        f"grid_{split}_{window}_{mode}",
                    )
                save(
                    figures.per_class_lowest_highest(
                        images,
                        table[f"vog_{window}_label"].to_numpy(),
                        table["label"].to_numpy(),
                        class_ids=list(range(min(fig_cfg.classes, dataset.num_classes))),
                        class_names=dataset.classes,
                        k=k,
                        title=f"{split}: per class, {window} window",
                    ),
                    f"per_class_{split}_{window}",
                )

        curves = read_json(args.deciles)["curves"]
        if curves:  # empty when the score stage had no test split

            def curve(key: str) -> dict:
                c = curves[key]
                lo, hi = np.asarray(c["error_interval"], dtype=float).T
                return {"error": np.asarray(c["error"], dtype=float), "lo": lo, "hi": hi}

            save(
                figures.error_curves(
                    {
                        f"{w}, {m}": curve(f"{w}_{m}")
                        for w in ("all", "late")
                        for m in ("label", "pred")
                    },
                    title="test error per VoG decile (final model)",
                ),
                "deciles_test",
            )
            save(
                figures.early_late(
                    {m: curve(f"early_{m}") for m in ("label", "pred")},
                    {m: curve(f"late_{m}") for m in ("label", "pred")},
                    title="early vs late window: test error per VoG decile",
                ),
                "early_late_test",
            )

        stability = read_json(args.stability)
        for kind in ("seed", "batch_size"):
            save(
                figures.error_curves(
                    {
                        run: {
                            "error": np.asarray(c["error"], dtype=float),
                            "lo": np.asarray(c["error_interval"], dtype=float)[:, 0],
                            "hi": np.asarray(c["error_interval"], dtype=float)[:, 1],
                        }
                        for run, c in stability[kind]["curves"].items()
                    },
                    title=f"stability across {kind.replace('_', ' ')}s "
                    f"(mean Spearman {stability[kind]['spearman']['mean']:.2f})",
                ),
                f"stability_{kind}",
            )

        mem = pd.read_parquet(args.memorization)
        noisy = mem.pop("noisy").to_numpy()
        mem.pop("index")
        save(
            figures.histograms(
                {c: mem[c].to_numpy() for c in mem.columns},
                noisy,
                title="memorization: clean vs shuffled labels",
            ),
            "memorization",
        )

        ood = pd.read_csv(args.ood, index_col=0)
        published = paper_table1()
        save(
            figures.bars_with_errors(
                {m: (r["auroc_mean"], r["auroc_std"]) for m, r in ood.iterrows()},
                reference={m: v["auroc_mean"] for m, v in published.items() if "auroc_mean" in v},
                title="OoD detection over corruptions (marks: published)",
            ),
            "ood_auroc",
        )
        print(f"figures: {len(list(out.glob('*.png')))} PNGs in {out}", flush=True)


if __name__ == "__main__":
    main()
