"""Streaming input gradients of one run: raw VoG per window and label mode, per-checkpoint stats.

    python stages/gradients.py --run main --checkpoints runs/main/checkpoints \
        --out runs/main/gradients --metrics runs/main/gradients.json
"""

from __future__ import annotations

import time
from pathlib import Path

from vogflow.io import write_json, write_npz
from vogflow.stage import parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoints", required=True, help="checkpoint folder of the run")
    p.add_argument("--out", required=True, help="folder for <split>.npz")
    p.add_argument("--metrics", required=True, help="metrics JSON")
    args = p.parse_args()

    with stage(f"gradients@{args.run}", params_path=args.params, run=args.run) as ctx:
        from vogflow.api import run_extraction
        from vogflow.checkpoints import load_run_models
        from vogflow.pipeline import load_run_data

        prm = ctx.params
        models, manifest = load_run_models(args.checkpoints)
        data = load_run_data(prm.data, ctx.root, args.checkpoints, manifest)
        metrics = {"checkpoints": len(models), "splits": {}}
        for split in prm.gradients.splits:
            x, labels = data[split]
            t0 = time.perf_counter()
            extraction = run_extraction(
                models,
                (x, labels["label"]),
                window_size=prm.vog.window_size,
                label_modes=prm.gradients.label_modes,
                batch_size=prm.gradients.batch_size,
                device=prm.gradients.device,
                precision=prm.gradients.precision,
            )
            seconds = time.perf_counter() - t0
            write_npz(
                Path(args.out) / f"{split}.npz",
                **extraction.arrays(),
                true_label=labels["true_label"],
                noisy=labels["noisy"],
            )
            per_ckpt = manifest["checkpoints"]
            # Timings go to MLflow only: a DVC output must be the same bits on every rerun.
            ctx.timings[f"{split}.seconds"] = seconds
            ctx.timings[f"{split}.images_per_second"] = len(x) / seconds
            metrics["splits"][split] = {"examples": len(x)}
            # The regime behind each window: its epochs and learning rates (the same for every
            # split), as scalars and strings so `dvc metrics show` reads them.
            metrics["windows"] = {
                w: {
                    "epochs": " ".join(str(per_ckpt[i]["epoch"]) for i in idx),
                    "lr_first": per_ckpt[idx[0]]["lr"],
                    "lr_last": per_ckpt[idx[-1]]["lr"],
                }
                for w, idx in extraction.windows.items()
            }
            print(
                f"{split}: {len(x)} examples x {len(models)} checkpoints in {seconds:.1f}s "
                f"({len(x) / seconds:.0f} images/s)",
                flush=True,
            )
        write_json(args.metrics, metrics)


if __name__ == "__main__":
    main()
