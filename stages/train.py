"""Train one named run with its checkpoint schedule.

python stages/train.py --run main --out runs/main/checkpoints --metrics runs/main/train.json
"""

from __future__ import annotations

from vogflow.io import write_json
from vogflow.stagekit import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--metrics", required=True, help="metrics JSON")
    args = p.parse_args()

    with stage(f"train@{args.run}", params_path=args.params, run=args.run) as ctx:
        from vogflow.data import load_dataset
        from vogflow.train import train_run

        prm = ctx.params
        cfg = prm.run_train(args.run)
        dataset = load_dataset(prm.data, ctx.root)
        history = ctx.timings.setdefault("history", [])
        manifest = train_run(
            dataset,
            prm.model,
            cfg,
            prm.checkpoints,
            args.out,
            log=lambda metrics, epoch: history.append({"epoch": epoch, **metrics}),
        )
        write_json(
            args.metrics,
            {
                "test_accuracy": manifest["final"]["test_accuracy"],
                "train_accuracy": manifest["final"]["train_accuracy"],
                "train_accuracy_clean": manifest["final"]["train_accuracy_clean"],
                "checkpoints": len(manifest["checkpoints"]),
            },
        )


if __name__ == "__main__":
    main()
