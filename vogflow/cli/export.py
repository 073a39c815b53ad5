"""``vogflow export``: an audit's label issues (or the top k of a score) as a CSV or as Label
Studio tasks, for relabeling."""

from __future__ import annotations

import argparse
from typing import Any

from vogflow.cli import options
from vogflow.cli.output import check_out_file
from vogflow.cli.tables import IMAGE_DATA, add_source_options, load_audit_with_images
from vogflow.errors import ConfigError

DESCRIPTION = """\
Export examples for relabeling: the label issues of an audit table (default: the
rows with label_issue, the most doubtful given label first; -k keeps the first
k), or with --score the k highest of any score (default 25). --format csv writes
index, path (image folders), given label, suggested label, score and evidence;
--format label-studio writes Label Studio tasks JSON (each picture inline as a
PNG data URI in data.image, the given label pre-selected as a prediction, the
suggestion as a second one) and, beside it, the labeling config (.xml) to create
the project with. AUDIT, --data and --split as for `vogflow report`."""

EPILOG = """\
examples:
  vogflow export rankings.parquet --out label_issues.csv
  vogflow export rankings.parquet --data npz:data/mine.npz --split test \\
      --format label-studio --out relabel/tasks.json
  vogflow export results/ranking/train.parquet --score hard_loss -k 50 --out top50.csv"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export label issues (or the top k of a score) for relabeling",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=options.FORMATTER,
    )
    add_source_options(p)
    p.add_argument(
        "--score", default=None, help="export the k highest of this score instead of label issues"
    )
    p.add_argument(
        "-k",
        type=options.positive,
        default=None,
        help="how many (default: every label issue, or 25)",
    )
    p.add_argument("--format", default="csv", choices=("csv", "label-studio"))
    p.add_argument("--out", required=True, help="file to write (.csv, or .json for label-studio)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vogflow.report import export

    suffix = (".csv",) if args.format == "csv" else (".json",)
    out = check_out_file(args.out, suffix)
    table, where, split, images = load_audit_with_images(args)
    rows, column, name = export.select(table, score=args.score, k=args.k, where=where)
    if args.format == "label-studio" and images is None and "text" not in table.columns:
        given = (
            f"--data {args.data!r} holds no pictures (tabular features)"
            if args.data
            else (f"pass --data {IMAGE_DATA}")
        )
        raise ConfigError(
            f"--format label-studio shows each example to an annotator: {given}; or export "
            "--format csv"
        )
    names = images.class_names if images is not None else None
    frame = export.records(rows, column, name, n=len(table), class_names=names)
    what = "label issues" if column is None else f"hardest by {name}"
    if args.format == "csv":
        from vogflow.rankings.table import write_csv

        path = write_csv(frame, out)
        print(f"wrote {path}: {len(frame)} {what} of {where} ({split})")
        return 0
    from vogflow.report.content import class_name

    labels = sorted({int(v) for v in table["label"]} | {int(v) for v in table["pred"]})
    count = len(names) if names is not None else max(labels) + 1
    classes = [class_name(i, names) for i in range(count)]
    tasks, config = export.write_label_studio(
        frame, out, classes=classes, images=images.uris if images is not None else None
    )
    print(f"wrote {tasks}: {len(frame)} Label Studio tasks ({what} of {where}, {split})")
    print(f"wrote {config}: the labeling config to import them with")
    return 0
