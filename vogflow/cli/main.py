"""The ``vogflow`` command line: builds the parser from the command modules, runs the command
chosen, and turns a refusal into one line and exit code 2 (never a traceback).

Each command lives in its own module (:mod:`vogflow.cli.audit`, ...) and imports its heavy
libraries (torch, mlflow, pandas, matplotlib) inside its functions, so ``vogflow --help`` answers
at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vogflow.cli import audit, compare, export, options, report, top
from vogflow.cli.output import PROG, print_error
from vogflow.cli.ranks import peer_rank, rank0_reports
from vogflow.errors import VogflowError

COMMANDS = (audit, compare, top, report, export)

MAIN_DESCRIPTION = """\
Rank every example of a classification dataset by difficulty with Variance of
Gradients (VoG): the spread of the input gradient of the class logit across
training checkpoints. Higher VoG = harder (atypical, ambiguous or mislabeled).
The full audit is a DVC pipeline (`dvc repro`) logged to MLflow; these commands
audit your own model and read audits back from MLflow."""

MAIN_EPILOG = """\
examples:
  vogflow audit --model mynets:build --checkpoints 'ckpts/*.pt' --data npz:data.npz \\
      --out rankings.parquet
  vogflow top models:/vogflow-main/3 -k 25
  vogflow compare models:/vogflow-main/2 models:/vogflow-main/3
  vogflow report rankings.parquet --data npz:data.npz --out report.html
  vogflow export rankings.parquet --data npz:data.npz --format label-studio \\
      --out relabel/tasks.json

Run `vogflow <command> --help` for each command's options. The MLflow store is
MLFLOW_TRACKING_URI, else mlflow.db at the project root."""


def build_parser() -> argparse.ArgumentParser:
    from vogflow import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=MAIN_DESCRIPTION,
        epilog=MAIN_EPILOG,
        formatter_class=options.FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``vogflow`` command; returns the exit code (2 = bad input, with a one-line why)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        args.argv = argv
    except SystemExit as exit_:  # --help, --version, or argparse's own usage error
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); stop quietly instead of a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except VogflowError as err:
        if peer_rank() and rank0_reports(err):  # rank 0 says it, in one line for all ranks
            return 2
        print_error(args.command, err)
        return 2
    except RuntimeError as err:
        import os

        from vogflow.parallel.launch import lost_contact

        # Another rank went away without a word (killed): the launcher names it and the signal.
        if "WORLD_SIZE" in os.environ and lost_contact(err):
            from vogflow.parallel.launch import LOST_CONTACT

            return LOST_CONTACT
        raise
