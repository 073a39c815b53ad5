"""The audit report: one self-contained HTML page (claims, the score to trust, label issues,
the hardest and easiest examples with their images, per class, OoD, how to reproduce).

    python stages/report.py --out results/report/index.html

Reads what the other stages wrote; the track stage logs the page to the MLflow audit run.
"""

from __future__ import annotations

from pathlib import Path

from vogflow.pipeline.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="the HTML page to write")
    args = p.parse_args()

    with stage("report", params_path=args.params) as ctx:
        from vogflow.data import load_dataset
        from vogflow.report import pipeline, write
        from vogflow.report.images import from_dataset
        from vogflow.store.connection import git_state

        prm = ctx.params
        dataset = load_dataset(prm.data, ctx.root)
        images = {
            split: from_dataset(dataset, split, prm.data.name) for split in prm.gradients.splits
        }
        report = pipeline.build(
            ctx.root,
            prm,
            params_text=Path(args.params).read_text(encoding="utf-8"),
            # Outputs and the lock are the audit's results, not edits of its code.
            git=git_state(ctx.root, generated=("results", "runs", "dvc.lock", ".vogflow")),
            images={s: i for s, i in images.items() if i is not None},
        )
        out = write(report, args.out, confidence=prm.vog.confidence)
        print(f"report: {out} ({out.stat().st_size / 1024:.0f} KiB)", flush=True)


if __name__ == "__main__":
    main()
