"""Reading one audit back for the commands that show it (top, report, export): a local rankings
table or an audit in MLflow, the split it holds, and the pictures of its examples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vogflow.errors import ConfigError

SPLITS = ("train", "test")
IMAGE_DATA = "npz:PATH, imagefolder:PATH or params:PARAMS_YAML (the pipeline's dataset)"


def is_table_file(audit: str) -> bool:
    """Whether AUDIT names a local rankings table rather than an audit in MLflow."""
    return audit.lower().endswith((".parquet", ".csv"))


def read_table_file(value: str) -> Any:
    """A local rankings table (.parquet or .csv); anything else is one line naming the file."""
    import pandas as pd

    from vogflow.rankings.table import BASE_COLUMNS

    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{value!r}: no such file; give a rankings .parquet file or an audit")
    try:
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as err:  # pyarrow and pandas raise many types for a file that is not one
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"{value!r} cannot be read as a {path.suffix.lstrip('.')} table ({first}); give a "
            "rankings table written by `vogflow audit` or the score stage"
        ) from err
    missing = [c for c in BASE_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(
            f"{value!r} is not a rankings table (missing columns {', '.join(missing)}); give a "
            "table written by `vogflow audit` or the score stage"
        )
    return table


def file_split(value: str, asked: str | None) -> str | None:
    """The split a local table holds, from its name (``<split>.parquet``, as the pipeline writes).

    A table does not record its split, so ``--split`` can only confirm the name, never relabel it.
    """
    named = Path(value).stem if Path(value).stem in SPLITS else None
    if asked is not None and asked != named:
        holds = f"holds the {named} split" if named else "does not say which split it holds"
        raise ConfigError(
            f"--split {asked}: {value!r} {holds}, and a table file is one split; drop --split "
            "(it selects a split of an audit in MLflow)"
        )
    return named


def audit_table(audit: str, split: str | None, run: str | None) -> tuple[Any, str, str | None]:
    """``(table, where, split)`` of AUDIT: a local table file (its split named by the file, which
    ``split`` may only confirm) or an audit in MLflow (``split``, default test)."""
    if is_table_file(audit):
        return read_table_file(audit), audit, file_split(audit, split)
    from vogflow import tracking

    split = split or "test"
    ref = tracking.resolve_audit(audit, run=run)
    return tracking.read_rankings(ref, split), ref.describe(), split


def parse_image_data(spec: str | None) -> tuple[str, str] | None:
    """``--data`` of report/export: where the examples' pictures are (None: not given)."""
    if spec is None:
        return None
    from vogflow.report.images import IMAGE_KINDS

    kind, sep, path = spec.partition(":")
    if not sep or kind not in IMAGE_KINDS or not path:
        raise ConfigError(f"--data {spec!r}: write {IMAGE_DATA}, the data the table was audited on")
    if not Path(path).exists():
        raise ConfigError(f"--data {spec!r}: {path!r} does not exist; check the path")
    return kind, path


def table_split(audit: str, asked: str | None) -> str | None:
    """A table file's split: its name (train.parquet), else ``--split``; they must agree."""
    named = Path(audit).stem if Path(audit).stem in SPLITS else None
    if named and asked and asked != named:
        raise ConfigError(
            f"--split {asked}: {audit!r} holds the {named} split by its name; drop --split or "
            "give the table of that split"
        )
    return named or asked


def load_audit_with_images(args: argparse.Namespace) -> tuple[Any, str, str, Any]:
    """``(table, where, split, images)`` for report/export: the table of AUDIT, and the pictures
    of the split it was audited on (None without --data or for tabular data), checked to match."""
    data = parse_image_data(args.data)
    is_file = is_table_file(args.audit)
    split = table_split(args.audit, args.split) if is_file else args.split
    table, where, _ = audit_table(args.audit, None if is_file else split, args.run)
    split = split or "test"
    images = None
    if data is not None:
        from vogflow.report.images import load

        images = load(*data, split)
        if images is not None and images.n != len(table):
            raise ConfigError(
                f"--data {args.data!r}: its {split} split has {images.n} examples but "
                f"{where} has {len(table)} rows; give the data and --split the table was "
                "audited on"
            )
    return table, where, split, images


def add_source_options(p: argparse.ArgumentParser) -> None:
    """AUDIT, --data, --split and --run, as report and export take them."""
    p.add_argument("audit", metavar="AUDIT", help="rankings .parquet/.csv, models:/... or run id")
    p.add_argument("--data", default=None, metavar="KIND:PATH", help=f"the pictures: {IMAGE_DATA}")
    p.add_argument(
        "--split",
        default=None,
        choices=SPLITS,
        help="split the table holds (default: the file's name, else test)",
    )
    p.add_argument(
        "--run", default=None, help="training run inside an MLflow audit (default: main)"
    )
