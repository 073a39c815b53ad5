"""Train one named run with its checkpoint schedule.

python stages/train.py --run main --out runs/main/checkpoints --metrics runs/main/train.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from vogflow.config import section_dict
from vogflow.io import write_json
from vogflow.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--metrics", required=True, help="metrics JSON")
    args = p.parse_args()

    with stage(f"train@{args.run}", params_path=args.params, run=args.run) as ctx:
        from vogflow.data import load_dataset
        from vogflow.train import data_fingerprint, train_run

        prm = ctx.params
        cfg = prm.run_train(args.run)
        dataset = load_dataset(prm.data, ctx.root)
        ctx.track.tags({"vogflow.data_hash": data_fingerprint(dataset)})
        ctx.track.params(
            {
                "data": section_dict(prm.data),
                "model": section_dict(prm.model),
                "train": section_dict(cfg),
                "checkpoints": section_dict(prm.checkpoints),
            }
        )
        manifest = train_run(
            dataset,
            prm.model,
            cfg,
            prm.checkpoints,
            args.out,
            log=lambda metrics, epoch: ctx.track.metrics(metrics, step=epoch),
        )
        metrics = {
            "test_accuracy": manifest["final"]["test_accuracy"],
            "train_accuracy": manifest["final"]["train_accuracy"],
            "train_accuracy_clean": manifest["final"]["train_accuracy_clean"],
            "checkpoints": len(manifest["checkpoints"]),
            "label_noise": manifest["label_noise"],
            "per_checkpoint": [
                {k: c[k] for k in ("epoch", "step", "lr", "test_accuracy")}
                for c in manifest["checkpoints"]
            ],
        }
        write_json(args.metrics, metrics)
        ctx.track.metrics({k: v for k, v in metrics.items() if k != "per_checkpoint"})
        ctx.track.artifact(Path(args.out) / "manifest.json", "checkpoints")
        if args.run == prm.tracking.register_run:
            ctx.track.metrics({"test_accuracy": metrics["test_accuracy"]}, parent=True)
            final = Path(args.out) / manifest["checkpoints"][-1]["file"]
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "model.pt").write_bytes(final.read_bytes())
                (Path(tmp) / "manifest.json").write_bytes(
                    (Path(args.out) / "manifest.json").read_bytes()
                )
                version = ctx.track.register_model(prm.tracking.model_name, tmp)
            if version:
                print(f"registered {prm.tracking.model_name} version {version}", flush=True)


if __name__ == "__main__":
    main()
