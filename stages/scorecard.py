"""The scorecard: which difficulty score to rank by on this data, and seed-aware verdicts on the
paper's decile claim (DESIGN §7).

    python stages/scorecard.py --runs runs --metrics results/scorecard/metrics.json \
        --table results/scorecard/scorecard.csv --report results/scorecard/report.json \
        --figure results/scorecard/scorecard.png

Candidates: every VoG variant of the rankings tables (``vog_<window>_<mode>`` as configured by
``vog.normalise``, plus ``_abs`` = |z| and ``_raw``), every ``hard_*`` baseline, and the
seed-averaged ``<name>_seedmean`` of each. Reliability comes from the test split of the seed runs
(``stability.seed_runs``; the first one is the audited run whose test error the decile trend
uses), planted-noise detection from the training split of ``memorization.run``. The choice and
the verdicts are :mod:`vogflow.analysis.choice`; this stage reads the tables and writes the files.
"""

from __future__ import annotations

from pathlib import Path

from vogflow.common.atomic import write_json
from vogflow.pipeline.stage import parser, stage

SPLIT = "test"  # the decile claim is about held-out error


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--runs", required=True, help="folder holding runs/<run>/rankings")
    p.add_argument("--metrics", required=True, help="headline metrics JSON (scalars only)")
    p.add_argument("--table", required=True, help="CSV of the scorecard, best score first")
    p.add_argument("--report", required=True, help="JSON of the whole analysis")
    p.add_argument("--figure", required=True, help="PNG of the scorecard")
    p.add_argument(
        "--ranking", required=True, help="folder for the audit's ranking: <split>.parquet, _top.csv"
    )
    args = p.parse_args()

    with stage("scorecard", params_path=args.params) as ctx:
        from vogflow.analysis import choice
        from vogflow.analysis.scorecard import exclusion, scorecard
        from vogflow.errors import DataError
        from vogflow.rankings.table import check_aligned, read

        prm = ctx.params
        runs_dir = Path(args.runs)
        seed_runs = list(prm.stability.seed_runs)
        main_run = seed_runs[0]
        tables = {r: read(runs_dir / r / "rankings" / f"{SPLIT}.parquet") for r in seed_runs}
        check_aligned(tables)
        shuffled = read(runs_dir / prm.memorization.run / "rankings" / "train.parquet")
        noisy = shuffled["noisy"].to_numpy().astype(bool)
        if not noisy.any() or noisy.all():
            raise DataError(
                f"run {prm.memorization.run!r} has no shuffled labels in its training split (or "
                "only shuffled ones); give it 0 < label_noise < 1 in params.yaml"
            )

        per_run = {r: choice.candidates(t) for r, t in tables.items()}
        names = list(dict.fromkeys(n for scores in per_run.values() for n in scores))
        card = scorecard(
            {n: {r: s[n] for r, s in per_run.items() if n in s} for n in names},
            noise_scores=choice.candidates(shuffled),
            noisy=noisy,
            correct=tables[main_run]["correct"].to_numpy(),
            main=main_run,
            top_fraction=prm.stability.top_fraction,
            bins=prm.vog.bins,
        )
        rows = card["scores"]
        for row in rows.values():
            row["excluded"] = exclusion(row)
        choices = choice.choices(card)
        chosen = choices["any"]["score"]
        rank_by, why = choice.resolve_rank_by(prm.vog.rank_by, choices, rows)
        best_vog = choice.best_vog(card)
        claims = choice.decile_verdicts(tables, main_run, prm.vog)
        label_issues = choice.label_issue_quality(shuffled)

        report = {
            **card,
            "split": SPLIT,
            "noise_run": prm.memorization.run,
            "choice": choices["any"],
            "choices": choices,
            "rank_by": {"configured": prm.vog.rank_by, "score": rank_by, "reason": why},
            "best_vog": best_vog,
            "claims": claims,
            "label_issues": label_issues,
        }
        write_json(args.report, report)
        write_ranking(
            Path(args.ranking),
            rank_by,
            runs_dir,
            seed_runs,
            reason=choice.short_reason(prm.vog.rank_by, rows.get(rank_by), len(seed_runs)),
            audited=prm.tracking.register_run,
            splits=prm.gradients.splits,
            top_k=prm.vog.top_k,
        )
        print(f"scorecard: the audit ranks by {rank_by} ({why})", flush=True)
        print(
            f"scorecard: label issues on {prm.memorization.run}'s changed labels: precision "
            f"{label_issues['precision']:.3f}, recall {label_issues['recall']:.3f}, F1 "
            f"{label_issues['f1']:.3f} ({label_issues['flagged']} flagged, "
            f"{label_issues['wrong']} changed)",
            flush=True,
        )
        _write_table(card, args.table)
        _write_figure(card, args.figure, chosen=chosen, rank_by=rank_by, dpi=prm.figures.dpi)
        write_json(
            args.metrics,
            choice.headline_metrics(
                rows,
                chosen=chosen,
                rank_by=rank_by,
                best=best_vog,
                claims=claims,
                label_issues=label_issues,
            ),
        )


def write_ranking(
    folder: Path,
    name: str,
    runs_dir: Path,
    seed_runs: list[str],
    *,
    reason: str,
    audited: str,
    splits: tuple[str, ...],
    top_k: int,
) -> None:
    """The audited run's rankings table of each split with the audit's ranking score
    (``rank_score``, higher = harder, named in ``rank_by``, chosen as ``rank_reason`` says) and
    ``rank`` (1 = hardest)."""
    from vogflow.analysis.choice import candidates
    from vogflow.analysis.scorecard import mean_percentile
    from vogflow.rankings.table import read, top_bottom, write_csv, write_parquet

    base = name.removesuffix("_seedmean")
    for split in splits:
        paths = {r: runs_dir / r / "rankings" / f"{split}.parquet" for r in seed_runs}
        own = runs_dir / audited / "rankings" / f"{split}.parquet"
        needed = [own, *paths.values()] if name.endswith("_seedmean") else [own]
        if not all(p.exists() for p in needed):
            continue  # a split the runs did not score
        table = read(own)
        if name.endswith("_seedmean"):
            score = mean_percentile({r: candidates(read(path))[base] for r, path in paths.items()})
        else:
            score = candidates(table)[name]
        ranked = table.assign(
            rank_by=name,
            rank_reason=reason,
            rank_score=score,
            rank=table.assign(s=score)["s"].rank(ascending=False, method="first").astype(int),
        )
        write_parquet(ranked, folder / f"{split}.parquet")
        write_csv(top_bottom(ranked, "rank_score", top_k), folder / f"{split}_top.csv")


def _write_table(card: dict, path: str) -> None:
    import pandas as pd

    from vogflow.analysis.scorecard import COLUMNS
    from vogflow.common.atomic import write_text

    rows = card["scores"]
    table = pd.DataFrame(
        [
            {"rank": i, "score": n, **{k: rows[n][k] for k in (*COLUMNS, "excluded")}}
            for i, n in enumerate(card["ranking"], start=1)
        ]
    )
    write_text(path, table.to_csv(index=False, float_format="%.6g"))


def _write_figure(
    card: dict, path: str, *, chosen: str | None, rank_by: str | None, dpi: int
) -> None:
    from vogflow.figures import curves, save

    rows = card["scores"]
    from vogflow.analysis.choice import VOG

    groups = {
        n: ("VoG" if n.startswith(VOG) else "baseline")
        + (", seed mean" if rows[n]["kind"] == "seedmean" else "")
        for n in card["ranking"]
    }
    marks = {}
    for name in card["ranking"]:
        notes = [
            note
            for note, on in (
                ("chosen", name == chosen),
                ("rank_by", name == rank_by),
                ("wrong way", rows[name]["excluded"]),
            )
            if on
        ]
        if notes:
            marks[name] = ", ".join(notes)
    fig = curves.scorecard(
        {n: rows[n] for n in card["ranking"]},
        panels=(
            ("reliability", "reliability (agreement with a rerun)", 0.0),
            ("noise_auroc", "planted-noise AUROC", 0.5),
            ("decile_trend", "test-error decile trend", 0.0),
        ),
        groups=groups,
        marks=marks,
        title=f"Scorecard: {card['n']} test examples, {len(card['runs'])} seed runs; best first",
    )
    save(fig, path, dpi=dpi)


if __name__ == "__main__":
    main()
