"""Train one named run with its checkpoint schedule.

python stages/train.py --run main --out runs/main/checkpoints --metrics runs/main/train.json

With ``train.processes: N`` (N > 1) the stage starts itself on N processes that train the run
together with DDP (gloo on the CPU, one GPU per process on a GPU machine); by hand, the same:

    torchrun --nproc_per_node=N -- stages/train.py --run main ...

(the ``--`` keeps torchrun from reading ``--run`` as its own ``--run-path``.) Rank 0 writes every
file and reports; a rank that fails alone prints one line naming itself.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from vogflow.common.atomic import write_json
from vogflow.config.schema import load_params
from vogflow.errors import VogflowError
from vogflow.parallel import launch as procgroup
from vogflow.pipeline.stage import parser, processes_param, project_root, stage


def stalled(run: str, overrides: dict[str, Any], lr: float, err: Any) -> Exception:
    """The stall named after its run, with the fix for that run alone (half its learning rate):
    DVC's ``-S`` sets a key the run already has, and ``+`` adds one it does not."""
    from vogflow.errors import RunError

    key = f"runs.{run}.lr={lr / 2:g}"
    option = f"-S {key}" if "lr" in overrides else f"-S '+{key}'"
    fix = f"set runs.{run}.lr: {lr / 2:g} in params.yaml, or dvc exp run {option}"
    reason = f"run {run}: {err.reason}"
    return RunError(f"{reason}: {fix}", cause="stalled", epoch=err.epoch, reason=reason)


def peer(args: Any) -> None:
    """A rank other than 0: trains its share of every batch and writes nothing."""
    from vogflow.data import load_dataset
    from vogflow.training.train import train_run

    try:
        prm = load_params(args.params)
        dataset = load_dataset(prm.data, project_root())
        train_run(dataset, prm.model, prm.run_train(args.run), prm.checkpoints, args.out)
    except VogflowError as err:  # the same params and data refuse on rank 0 too, which reports it
        if procgroup.reported_by_rank0(err):  # rank 0's own failure: let it say so first
            procgroup.outlive_rank0()
        else:  # wait for rank 0 to say it; here only if rank 0 was not refused
            procgroup.await_rank0_report()
            where = f"rank {procgroup.rank()} of {procgroup.world_size()}"
            print(f"train@{args.run}: {where}: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        if procgroup.lost_contact(err):  # another rank went away: the launcher names it
            sys.exit(procgroup.LOST_CONTACT)
        traceback.print_exc()
        where = f"rank {procgroup.rank()} of {procgroup.world_size()}"
        print(f"train@{args.run}: {where} failed: {procgroup.one_line(err)}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--metrics", required=True, help="metrics JSON")
    args = p.parse_args()
    procgroup.start_processes(
        processes_param(args.params, lambda prm: prm.run_train(args.run).processes)
    )
    if procgroup.rank() != 0:
        peer(args)
        return

    with stage(f"train@{args.run}", params_path=args.params, run=args.run) as ctx:
        from vogflow.data import load_dataset
        from vogflow.errors import RunError
        from vogflow.training.train import train_run

        prm = ctx.params
        cfg = prm.run_train(args.run)
        dataset = load_dataset(prm.data, ctx.root)
        history = ctx.timings.setdefault("history", [])
        ctx.timings["processes"] = procgroup.world_size()
        try:
            manifest = train_run(
                dataset,
                prm.model,
                cfg,
                prm.checkpoints,
                args.out,
                log=lambda metrics, epoch: history.append({"epoch": epoch, **metrics}),
            )
        except RunError as err:
            if err.cause != "stalled":
                raise
            raise stalled(args.run, prm.runs[args.run], cfg.lr, err) from None
        except Exception as err:
            if not procgroup.lost_contact(err):
                raise
            world = procgroup.world_size()
            raise RunError(
                f"rank 0 of {world} stopped: another rank left (its line says why)", cause="peer"
            ) from err
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
