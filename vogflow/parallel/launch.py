"""The processes of one ``torchrun`` job: which one this is, their process group, and how they
settle a failure so that no rank waits on a peer that will never send.

Shared by sharded extraction (:mod:`vogflow.scoring.shards`) and DDP training
(:mod:`vogflow.parallel.ddp`);
it imports neither, so each stage's DVC deps hold only the half it runs.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from vogflow.errors import VogflowError


def world_size() -> int:
    """How many processes share the work (``WORLD_SIZE`` set by torchrun; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (``RANK``; 0 without torchrun). Only rank 0 writes outputs."""
    return int(os.environ.get("RANK", "0"))


def sharded() -> bool:
    """Whether the work is split across processes (more than one rank)."""
    return world_size() > 1


def _torchrun(processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vogflow.parallel.launch",
        "--standalone",
        f"--nproc_per_node={processes}",
    ]


def launch(argv: Sequence[str]) -> int:
    """torchrun with ``argv``, quiet when a rank fails: its exit status, and no more lines.

    The ranks already report a failure in one line (rank 0 names the failed rank); torchrun's
    own report of the same failure is a page of traceback and log lines, which would bury it.
    """
    import logging

    # torchrun sets 1 per rank anyway when unset, with a banner about it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    try:
        torchrun(list(argv))
    except ChildFailedError as err:
        code = {r: f.exitcode for r, f in err.failures.items()}
        cause = unreported_failure(code)
        if cause is not None:
            print(f"vogflow: {failure_line(cause, code[cause])}", file=sys.stderr, flush=True)
            return code[cause] if code[cause] > 0 else 1
        _, first = err.get_first_failure()
        return first.exitcode if first.exitcode and first.exitcode > 0 else 1
    return 0


# The exit status of a rank that stopped because another one went away without a word: the
# launcher then names that one (:func:`unreported_failure`).
LOST_CONTACT = 75
SIGTERM = 15


def unreported_failure(exitcodes: dict[int, int]) -> int | None:
    """The rank whose failure no rank has reported, from torchrun's exit status of each failed
    rank (negative: killed by that signal); None when the failed ranks said why themselves.

    A rank that fails in Python says so and exits 1 or 2 (rank 0 also names a peer's failure it
    learns of through :func:`settle`). A rank killed by a signal, or gone by ``os._exit`` or a
    native crash, says nothing: its peers lose contact (exit :data:`LOST_CONTACT`), or torchrun
    stops them (SIGTERM) first.
    """
    ranks = sorted(exitcodes)
    silent = [
        r for r in ranks if exitcodes[r] not in (1, 2, LOST_CONTACT, -SIGTERM) and exitcodes[r] != 0
    ]
    if silent:
        return silent[0]
    if any(exitcodes[r] in (1, 2) for r in ranks) or not ranks:
        return None
    # Only stopped ranks: a SIGTERM from outside (torchrun's own comes after another failure).
    return min(ranks, key=lambda r: (exitcodes[r] == LOST_CONTACT, r))


def failure_line(rank: int, exitcode: int) -> str:
    """Why a rank stopped without a word of its own, in one line."""
    if exitcode == LOST_CONTACT:
        return f"rank {rank} lost contact with the other ranks; the job stopped"
    if exitcode > 0:
        return (
            f"rank {rank} exited with status {exitcode} and no rank reported why (its own output "
            "above, if any, says more); the job stopped"
        )
    import signal

    signum = -exitcode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    why = {
        "SIGKILL": " (by hand, or the kernel's out-of-memory killer: see `dmesg`)",
        "SIGSEGV": " (a crash in native code)",
        "SIGBUS": " (a crash in native code, or shared memory ran out: see /dev/shm)",
    }.get(name, "")
    return f"rank {rank} was killed by signal {signum} ({name}){why}; the job stopped"


def start_processes(processes: int) -> None:
    """Become ``processes`` copies of this command under torchrun, unless torchrun started it.

    A stage's ``*.processes`` param comes through here, so ``dvc.yaml``'s ``cmd`` stays one plain
    command whatever the count. The process is replaced (``execv``): its exit status is
    torchrun's, which fails when any rank does. ``--standalone`` rendezvous on this machine;
    several machines are torchrun's own ``--nnodes``/``--rdzv-endpoint``, by hand.
    """
    if processes <= 1 or "WORLD_SIZE" in os.environ:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # The `--` keeps torchrun from reading the stage's `--run` as its own `--run-path`.
    os.execv(sys.executable, [*_torchrun(processes), "--", *sys.argv])


def run_processes(processes: int, module: str, args: Sequence[str]) -> int:
    """``python -m module *args`` on ``processes`` ranks under torchrun, as a child; its exit
    status. For commands called from Python too (``vogflow.cli.main.main``), which must not replace
    their caller's process."""
    import subprocess

    return subprocess.run([*_torchrun(processes), "-m", module, *args]).returncode


def shard_rows(num_examples: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous rows of ``num_examples``: the first ``num_examples % world``
    ranks get one row more, so sizes differ by at most 1 and the ranges tile ``[0, N)`` in order.
    """
    base, extra = divmod(int(num_examples), int(world))
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def shard_device(device: str) -> str:
    """Each rank its own GPU (``LOCAL_RANK``) for ``auto``/``cuda``; anything else unchanged."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise VogflowError(
                f"process {local} on this machine has no GPU of its own "
                f"({torch.cuda.device_count()} visible); start at most that many processes per "
                "machine (--nproc_per_node, or the processes param)"
            )
        return f"cuda:{local}"
    return device


def ensure_group(device: torch.device) -> None:
    """Join the torchrun process group once per process (``env://``); left at exit."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def one_line(err: BaseException) -> str:
    """An error as one line: a refusal's message stands alone, a bug's type says what it was."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text if isinstance(err, VogflowError) else f"{type(err).__name__}: {text}"


def lost_contact(err: BaseException) -> bool:
    """Whether ``err`` says another rank went away (it failed, or torchrun stopped it), not that
    this rank failed: NCCL raises a ``DistError``, while gloo, inside DDP's gradient all-reduce,
    raises a plain ``RuntimeError`` naming the closed connection."""
    if isinstance(err, dist.DistError):
        return True
    return isinstance(err, RuntimeError) and any(
        words in str(err) for words in ("Connection closed by peer", "Connection reset by peer")
    )


def settle(
    failure: Exception | None,
    payload: Any = None,
    *,
    error: Callable[[str], Exception],
    where: Callable[[int], str] = lambda r: "",
) -> list[Any]:
    """Every rank's ``payload``, once every rank has reached this point.

    Each rank says whether it failed (one line) along with its payload. A failed rank re-raises
    its own ``failure``; the others raise ``error(message)`` naming the first failed rank (and
    ``where(rank)``, e.g. its rows), so every rank stops at the same point. Every rank must call
    it, in the same order as its other collectives.
    """
    world = dist.get_world_size()
    message = None if failure is None else one_line(failure)
    statuses: list = [None] * world
    dist.all_gather_object(statuses, (message, payload))
    if failure is not None:
        raise _reported(failure)
    failed = [(r, m) for r, (m, _) in enumerate(statuses) if m is not None]
    if failed:
        r, message = failed[0]
        others = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
        raise _reported(error(f"rank {r} of {world} failed{where(r)}{others}: {message}"))
    return [p for _, p in statuses]


def _reported(err: Exception) -> Exception:
    # On rank 0 the error is the report; elsewhere rank 0 has it and says it (outlive_rank0).
    if dist.get_rank() != 0:
        err.reported_by_rank0 = True  # type: ignore[attr-defined]
    return err


def reported_by_rank0(err: BaseException) -> bool:
    """Whether ``err`` went to rank 0 through :func:`settle`, which names it in its own line."""
    return bool(getattr(err, "reported_by_rank0", False))


# How long a rank whose refusal rank 0 also meets waits, before any process group exists, for
# torchrun to stop it once rank 0 has said the refusal and left. A limit, not a speed: on a
# loaded machine rank 0 may reach the same check many seconds later.
REPORT_WAIT_S = 180


def await_rank0_report(limit_s: float = REPORT_WAIT_S) -> None:
    """For a rank other than 0 refused by a check every rank makes alike (the same params, the
    same arguments): wait for rank 0 to say the refusal and leave, which makes torchrun stop this
    process, so the one line is rank 0's. Leaving first would let torchrun stop rank 0 before it
    said anything.

    Returns only where rank 0 was not refused (the wait ran out), or where the ranks already share
    a group (a failure there that :func:`settle` did not carry is this rank's alone): the caller
    then says its own failure.
    """
    import time

    if not dist.is_initialized():
        time.sleep(limit_s)


def outlive_rank0() -> None:
    """Wait until rank 0 leaves the group, for a rank whose failure rank 0 reports.

    torchrun stops every rank as soon as one exits with an error: a failed rank that left at
    once would often stop rank 0 before rank 0 printed the line that names the failure.
    """
    try:
        dist.barrier()  # rank 0 never joins it: it ends when rank 0's process is gone
    except Exception:
        pass


if __name__ == "__main__":
    sys.exit(launch(sys.argv[1:]))
