"""Which process speaks when an audit runs as several torchrun ranks: rank 0 prints and reports,
so a refusal every rank meets is said once, not N times."""

from __future__ import annotations

import os


def peer_rank() -> bool:
    """Whether this process is a rank other than 0."""
    return int(os.environ.get("RANK", "0")) != 0


def rank0_reports(err: BaseException) -> bool:
    """Whether rank 0 says this peer's failure, having waited until it has (see procgroup):
    a failure settled between the ranks, or a refusal every rank meets alike (the same
    arguments). False if rank 0 was not refused: the peer then says its own."""
    from vogflow.parallel import launch as procgroup

    chain = [err, err.__cause__] if err.__cause__ is not None else [err]
    if any(procgroup.reported_by_rank0(e) for e in chain):
        procgroup.outlive_rank0()
        return True
    procgroup.await_rank0_report()
    return False
