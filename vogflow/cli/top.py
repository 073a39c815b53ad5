"""``vogflow top``: print the hardest examples of one audit."""

from __future__ import annotations

import argparse
from typing import Any

from vogflow.cli import options
from vogflow.cli.output import hardest, print_table
from vogflow.cli.tables import SPLITS, file_split, is_table_file, read_table_file

DESCRIPTION = """\
Print the hardest examples of an audit: the k highest scores of one split, rank 1
= hardest, with each example's index, label, prediction and score. AUDIT is a
registered model version (models:/<name>/<version> or @<alias>), an audit run id,
a child score run id, or a local rankings table (.parquet or .csv). --split picks
a split of an audit in MLflow; a table file holds one split, named by the file
(train.parquet, test.parquet), and --split may only confirm it."""

EPILOG = """\
examples:
  vogflow top models:/vogflow-main/3
  vogflow top 3f2a9c... --split train -k 50 --score early_label --run seed1
  vogflow top rankings.parquet -k 10"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "top",
        help="print the hardest examples of an audit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=options.FORMATTER,
    )
    p.add_argument("audit", metavar="AUDIT", help="models:/... URI, run id or .parquet file")
    p.add_argument(
        "--split",
        default=None,
        choices=SPLITS,
        help="split of an audit in MLflow (default: test); a table file is the split in its name",
    )
    p.add_argument("-k", type=options.positive, default=25, help="how many (default: 25)")
    p.add_argument(
        "--score",
        default=None,
        help="any score column or scorecard name, e.g. hard_aum, late_label, hard_aum_seedmean "
        "(default: the audit's ranking; a single run's table: the single-run default)",
    )
    p.add_argument("--run", default=None, help="training run inside the audit (default: main)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vogflow.rankings import choice as rank_choice

    seeds: Any = None
    if is_table_file(args.audit):
        split = file_split(args.audit, args.split)
        table, where = read_table_file(args.audit), args.audit
    else:
        from vogflow import tracking

        split = args.split or "test"
        ref = tracking.resolve_audit(args.audit, run=args.run)
        table, where = tracking.read_rankings(ref, split), ref.describe()
        if args.score and args.score.endswith(rank_choice.SEEDMEAN):
            seeds = tracking.seed_rankings(ref, split)
    ranking = rank_choice.resolve(table, args.score, seed_tables=seeds, where=where)
    print(f"{where}: {f'{split} split, ' if split else ''}{len(table)} examples")
    print(ranking.line())
    print(f"hardest {min(args.k, len(table))} by {ranking.name} (rank 1 = hardest):")
    print_table(hardest(ranking.ranked(table), ranking.name, args.k))
    return 0
