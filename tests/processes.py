"""Processes the tests start: how long to wait for one, a free port, a two-rank torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A limit for a hung process, never an expectation of speed: a test waits on events (an exit
# status, a file), and a loaded 2-core machine runs a torchrun job many times slower than an idle
# one, so the limit is far above any honest run.
HUNG_AFTER_S = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = HUNG_AFTER_S):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        # torchrun reads a script's `--run` as an abbreviation of its own `--run-path` unless
        # `--` ends its options (pytorch/pytorch#120601).
        "--",
        *args,
    ]
    env = env or {}
    path = [env["PYTHONPATH"]] if "PYTHONPATH" in env else []
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    full_env["PYTHONPATH"] = os.pathsep.join([*path, str(ROOT), str(ROOT / "tests")])
    return subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
