"""``vogflow report``: one audit's report as a single self-contained HTML page."""

from __future__ import annotations

import argparse
from typing import Any

from vogflow.cli import options
from vogflow.cli.output import check_out_file
from vogflow.cli.tables import add_source_options, load_audit_with_images

DESCRIPTION = """\
Write the report of one audit table as a single self-contained HTML page (inline
images and style, no script, no network): what was audited, the score it is
ranked by and why, the label issues with their pictures, given and suggested
label, the hardest and easiest examples, a per-class summary, and the commands
that reproduce it. AUDIT is a rankings table (.parquet or .csv, as `vogflow
audit` writes it) or an audit in MLflow (as for `vogflow top`). --data gives the
examples' pictures: the data the table was audited on, and --split the split
(a file named train.parquet or test.parquet names its own). The pipeline writes
its own report (`dvc repro report`: results/report/index.html)."""

EPILOG = """\
examples:
  vogflow report rankings.parquet --data npz:data/mine.npz --split test --out report.html
  vogflow report results/ranking/train.parquet --data params:params.yaml --out train.html
  vogflow report models:/vogflow-main/3 --split train --data params:params.yaml"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write an audit's report: one self-contained HTML page",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=options.FORMATTER,
    )
    add_source_options(p)
    p.add_argument(
        "-k", type=options.positive, default=12, help="hardest and easiest shown (default: 12)"
    )
    p.add_argument("--score", default=None, help="score to rank by (default: the table's ranking)")
    p.add_argument("--out", default="report.html", help="the page to write (default: report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shlex

    from vogflow.report import write
    from vogflow.report.single import build

    out = check_out_file(args.out, (".html", ".htm"))
    table, where, split, images = load_audit_with_images(args)
    data = f" --data {shlex.quote(args.data)}" if args.data else ""
    commands = [
        "vogflow " + shlex.join(args.argv),
        f"vogflow export {shlex.quote(args.audit)}{data} --split {split} "
        "--format label-studio --out relabel.json",
    ]
    report = build(
        table,
        where=where,
        split=split,
        data=args.data,
        images=images,
        score=args.score,
        k=args.k,
        commands=commands,
    )
    path = write(report, out)
    issues = report.splits[0].issues
    found = "not estimated" if issues is None else str(report.splits[0].issues_total)
    print(
        f"wrote {path}: {len(table)} {split} examples, ranked by {report.splits[0].rank_by}, "
        f"label issues {found}"
    )
    return 0
