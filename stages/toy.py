"""The paper's toy problem (Fig. 1): does VoG rank points near the decision boundary highest?

python stages/toy.py --out results/toy
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vogflow.common.atomic import write_json
from vogflow.pipeline.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="folder for metrics.json and toy.png")
    args = p.parse_args()

    with stage("toy", params_path=args.params) as ctx:
        from vogflow.analysis.reports import headline
        from vogflow.figures import save
        from vogflow.paper.figures import toy as toy_figure
        from vogflow.paper.toy import toy_report
        from vogflow.paper.toy_run import run_toy

        prm = ctx.params
        toy = run_toy(prm.toy)
        finite = np.isfinite(toy["distance"])
        report = {}
        for name in ("vog", "vog_raw"):
            report[name] = toy_report(
                toy[name][finite],
                toy["distance"][finite],
                n_boot=prm.vog.bootstrap,
                confidence=prm.vog.confidence,
                rng=np.random.default_rng(prm.vog.seed),
            )
        report["test_accuracy"] = toy["test_accuracy"]
        report["points_without_boundary"] = int((~finite).sum())
        out = Path(args.out)
        write_json(out / "report.json", report)
        headlines = {
            "spearman": headline(report["vog"]["claim"]),
            "spearman_raw": headline(report["vog_raw"]["claim"]),
            "test_accuracy": report["test_accuracy"],
        }
        write_json(out / "metrics.json", headlines)
        fig = toy_figure(
            toy["points"],
            toy["labels"],
            toy["vog"],
            toy["grid_x"],
            toy["grid_y"],
            toy["grid_margin"],
            toy["distance"],
            title=f"toy: Spearman(VoG, distance) = {report['vog']['spearman']:.2f}",
        )
        save(fig, out / "toy.png", dpi=prm.figures.dpi)
        print(
            f"toy: Spearman(VoG, distance to boundary) = {report['vog']['spearman']:.3f} "
            f"(expected negative)",
            flush=True,
        )


if __name__ == "__main__":
    main()
