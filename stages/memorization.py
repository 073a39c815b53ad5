"""Do memorised (shuffled-label) examples get higher VoG? Welch t-test and AUROC (section 4.1).

    python stages/memorization.py --run shuffled --gradients runs/shuffled/gradients \
        --rankings runs/shuffled/rankings --checkpoints runs/shuffled/checkpoints \
        --metrics results/memorization/metrics.json --report results/memorization/report.json \
        --out results/memorization/scores.parquet
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vogflow.common.atomic import write_json
from vogflow.pipeline.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--gradients", required=True, help="gradients folder of the run")
    p.add_argument("--rankings", required=True, help="rankings folder of the run")
    p.add_argument("--checkpoints", required=True, help="checkpoint folder of the run")
    p.add_argument("--metrics", required=True, help="headline metrics JSON")
    p.add_argument("--report", required=True, help="JSON of the whole analysis")
    p.add_argument("--out", required=True, help="parquet of every compared score per example")
    args = p.parse_args()

    with stage("memorization", params_path=args.params, run=args.run) as ctx:
        import pandas as pd

        from vogflow.analysis.hardness import baseline_scores
        from vogflow.analysis.reports import headline, score_variants
        from vogflow.errors import DataError
        from vogflow.paper.memorization import memorization_regime, memorization_report
        from vogflow.rankings.table import read, write_parquet
        from vogflow.scoring.results import load_extraction

        prm, cfg = ctx.params, ctx.params.memorization
        table = read(Path(args.rankings) / "train.parquet")
        extraction, extra = load_extraction(Path(args.gradients) / "train.npz")
        noisy = extra["noisy"]
        if not noisy.any():
            raise DataError(
                f"run {args.run!r} has no shuffled labels; give it label_noise > 0 in params.yaml "
                "(runs.<name>.label_noise)"
            )
        scores = {
            f"vog_{k}": v
            for k, v in score_variants(table, windows=[cfg.window], modes=["label"]).items()
        }
        scores.update(baseline_scores(extraction.stats, extraction.label))
        report = memorization_report(
            scores,
            noisy,
            n_boot=prm.vog.bootstrap,
            confidence=prm.vog.confidence,
            rng=np.random.default_rng(prm.vog.seed),
        )
        manifest = json.loads((Path(args.checkpoints) / "manifest.json").read_text())
        report["regime"] = memorization_regime(
            extraction.stats["pred"][-1], extraction.label, noisy
        )
        report["regime"]["lr_window"] = [
            manifest["checkpoints"][i]["lr"] for i in extraction.windows[cfg.window]
        ]
        write_json(args.report, report)
        write_parquet(pd.DataFrame({"index": table["index"], "noisy": noisy, **scores}), args.out)
        main_score = report["scores"][f"vog_{cfg.window}_label"]
        welch = main_score["welch"]
        write_json(
            args.metrics,
            {
                "auroc": headline(main_score["auroc"]),
                # The claim is one-sided (shuffled labels get HIGHER VoG): its p beside the
                # two-sided one, and the signed effect, so a reverse effect never reads as a pass.
                "mean_difference": welch["mean_difference"],
                "hedges_g": welch["hedges_g"],
                "p_one_sided": welch["p_one_sided"],
                "p_two_sided": welch["p_two_sided"],
                "expected": welch["claim"]["expected"],
                "verdict": headline(welch["claim"])["verdict"],
                "noisy_fit": report["regime"]["noisy_fit"],
            },
        )


if __name__ == "__main__":
    main()
