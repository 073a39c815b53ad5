"""Streaming input gradients of one run: raw VoG per window and label mode, per-checkpoint stats.

    python stages/gradients.py --run main --checkpoints runs/main/checkpoints \
        --out runs/main/gradients --metrics runs/main/gradients.json

Sharded over N processes (the same outputs, bit for bit where the ranks' batch boundaries fall
where one process's do):

    torchrun --nproc_per_node=N -- stages/gradients.py --run main ...

(the ``--`` keeps torchrun from reading ``--run`` as its own ``--run-path``), or with
``gradients.processes: N`` in params.yaml, which makes the stage start itself that way.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

from vogflow.common.atomic import write_json, write_npz
from vogflow.config.schema import Params, load_params
from vogflow.errors import VogflowError
from vogflow.parallel import launch as procgroup
from vogflow.pipeline.stage import parser, processes_param, project_root, stage
from vogflow.scoring import shards as distributed


def load(prm: Params, root: Path, args: Any) -> tuple[list, dict, dict]:
    """The run's models, its manifest and per split its inputs and labels."""
    from vogflow.checkpoints.files import load_run_models
    from vogflow.training.runs import load_run_data

    models, manifest = load_run_models(args.checkpoints)
    return models, manifest, load_run_data(prm.data, root, args.checkpoints, manifest)


def extraction_options(prm: Params) -> Any:
    """The params' :class:`~vogflow.scoring.options.ExtractionOptions` (every window)."""
    from vogflow.scoring.options import ExtractionOptions

    return ExtractionOptions(
        window_size=prm.vog.window_size,
        label_modes=prm.gradients.label_modes,
        batch_size=prm.gradients.batch_size,
        device=prm.gradients.device,
        precision=prm.gradients.precision,
        channels_last=prm.gradients.channels_last,
    )


def extract_split(prm: Params, models: list, x: Any, labels: dict) -> Any:
    """The split's :class:`Extraction`; None on ranks other than 0 under torchrun."""
    from vogflow.data.loaders import extraction_input
    from vogflow.scoring.extract import run_extraction

    options = extraction_options(prm)
    return run_extraction(
        models, extraction_input(x, labels["label"], batch_size=options.batch_size), options
    )


def peer(args: Any) -> None:
    """A rank other than 0: score its share of every split and write nothing (no outputs, no
    timings); rank 0 validates the params and reports every failure in one line."""
    try:
        prm = load_params(args.params)
        models, _, data = load(prm, project_root(), args)
        for split in prm.gradients.splits:
            extract_split(prm, models, *data[split])
    except Exception as err:
        if procgroup.lost_contact(err):  # another rank went away: the launcher names it
            sys.exit(procgroup.LOST_CONTACT)
        mine = not isinstance(err, VogflowError)
        if not procgroup.reported_by_rank0(err):
            if mine:
                raise
            # The same params refuse on rank 0, which says so: wait for that, unless it is not.
            procgroup.await_rank0_report()
            where = f"rank {procgroup.rank()} of {procgroup.world_size()}"
            print(f"gradients@{args.run}: {where}: {err}", file=sys.stderr)
            sys.exit(2)
        if mine:  # a bug here: its traceback, beside rank 0's line naming this rank
            traceback.print_exc()
        procgroup.outlive_rank0()
        sys.exit(1 if mine else 2)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoints", required=True, help="checkpoint folder of the run")
    p.add_argument("--out", required=True, help="folder for <split>.npz")
    p.add_argument("--metrics", required=True, help="metrics JSON")
    args = p.parse_args()
    procgroup.start_processes(processes_param(args.params, lambda prm: prm.gradients.processes))
    if distributed.rank() != 0:
        peer(args)
        return

    name = f"gradients@{args.run}"
    with stage(name, params_path=args.params, run=args.run) as ctx:
        world = distributed.world_size()
        arrays = {}
        models, manifest, data = load(ctx.params, ctx.root, args)
        metrics: dict[str, Any] = {"checkpoints": len(models), "splits": {}}
        for split in ctx.params.gradients.splits:
            x, labels = data[split]
            t0 = time.perf_counter()
            extraction = extract_split(ctx.params, models, x, labels)
            seconds = time.perf_counter() - t0
            arrays[split] = {
                **extraction.arrays(),
                **{k: labels[k] for k in ("true_label", "noisy", "path") if k in labels},
            }
            per_ckpt = manifest["checkpoints"]
            # Timings go to MLflow only: a DVC output must be the same bits on every rerun.
            ctx.timings[f"{split}.seconds"] = seconds
            ctx.timings[f"{split}.images_per_second"] = len(x) / seconds
            ctx.timings[f"{split}.processes"] = world
            metrics["splits"][split] = {"examples": len(x)}
            # The regime behind each window: its epochs and learning rates (the same for
            # every split), as scalars and strings so `dvc metrics show` reads them.
            metrics["windows"] = {
                w: {
                    "epochs": " ".join(str(per_ckpt[i]["epoch"]) for i in idx),
                    "lr_first": per_ckpt[idx[0]]["lr"],
                    "lr_last": per_ckpt[idx[-1]]["lr"],
                }
                for w, idx in extraction.windows.items()
            }
            shared = f" on {world} processes" if world > 1 else ""
            print(
                f"{split}: {len(x)} examples x {len(models)} checkpoints in {seconds:.1f}s"
                f"{shared} ({len(x) / seconds:.0f} images/s)",
                flush=True,
            )
        # Every split is scored before any file is written: a failure leaves no partial output.
        for split, named in arrays.items():
            write_npz(Path(args.out) / f"{split}.npz", **named)
        write_json(args.metrics, metrics)


if __name__ == "__main__":
    main()
