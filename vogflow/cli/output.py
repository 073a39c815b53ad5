"""What every ``vogflow`` command shares at its edges: the tables it prints, the ``--out`` path it
checks before any work, and the one line a refusal is shown as."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vogflow.errors import ConfigError

PROG = "vogflow"
OUT_SUFFIXES = (".parquet", ".csv")


def print_table(frame: Any) -> None:
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def print_error(command: str, err: BaseException) -> None:
    """``vogflow <command>: error: <message>`` on stderr, the message folded onto one line."""
    message = " ".join(str(err).split())
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)


def hardest(table: Any, column: str, k: int) -> Any:
    """The ``k`` hardest rows of ``table`` by ``column``, hardest first."""
    from vogflow.rankings.table import top_bottom

    top = top_bottom(table, column, k)
    return top[top["end"] == "hardest"].drop(columns="end").head(k)


def check_out_file(value: str, suffixes: Sequence[str] = OUT_SUFFIXES) -> Path:
    """``--out``: a path ending in one of ``suffixes`` (a .parquet or .csv table by default) whose
    folder takes files (created if missing), checked before any work."""
    import tempfile

    out = Path(value)
    what = "table " if suffixes == OUT_SUFFIXES else ""
    if out.suffix.lower() not in suffixes:
        raise ConfigError(
            f"--out {value!r}: unknown {what}format "
            f"{out.suffix or '(no suffix)'!r}; end the "
            f"name with {' or '.join(suffixes)}"
        )
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"--out {value!r}: cannot create the folder {str(folder)!r} ({err.strerror or err}); "
            "choose a writable folder"
        ) from err
    if out.is_dir():
        raise ConfigError(f"--out {value!r} is a folder; name the {what}file inside it")
    # A real write (not os.access): it also catches read-only mounts and holds as root.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"--out {value!r}: cannot write to the folder {str(folder)!r} ({err.strerror or err}); "
            "choose a writable folder"
        ) from err
    return out
