"""The scorecard: which difficulty score to rank by on this data, and seed-aware verdicts on the
paper's decile claim (DESIGN §7).

    python stages/scorecard.py --runs runs --metrics results/scorecard/metrics.json \
        --table results/scorecard/scorecard.csv --report results/scorecard/report.json \
        --figure results/scorecard/scorecard.png

Candidates: every VoG variant of the rankings tables (``vog_<window>_<mode>`` as configured by
``vog.normalise``, plus ``_abs`` = |z| and ``_raw``), every ``hard_*`` baseline, and the
seed-averaged ``<name>_seedmean`` of each. Reliability comes from the test split of the seed runs
(``stability.seed_runs``; the first one is the audited run whose test error the decile trend
uses), planted-noise detection from the training split of ``memorization.run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vogflow.common.atomic import write_json
from vogflow.pipeline.stage import parser, stage

SPLIT = "test"  # the decile claim is about held-out error
VOG, BASELINE = "vog_", "hard_"


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
        from vogflow.analysis.scorecard import exclusion, scorecard
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
            raise SystemExit(
                f"scorecard: run {prm.memorization.run!r} has no shuffled labels in its training "
                "split (or only shuffled ones); give it 0 < label_noise < 1 in params.yaml"
            )

        per_run = {r: candidates(t) for r, t in tables.items()}
        names = list(dict.fromkeys(n for scores in per_run.values() for n in scores))
        card = scorecard(
            {n: {r: s[n] for r, s in per_run.items() if n in s} for n in names},
            noise_scores=candidates(shuffled),
            noisy=noisy,
            correct=tables[main_run]["correct"].to_numpy(),
            main=main_run,
            top_fraction=prm.stability.top_fraction,
            bins=prm.vog.bins,
        )
        rows = card["scores"]
        for row in rows.values():
            row["excluded"] = exclusion(row)
        choices = _choices(card)
        chosen = choices["any"]["score"]
        rank_by, why = resolve_rank_by(prm.vog.rank_by, choices, rows)
        best_vog = next(
            (n for n in card["ranking"] if n.startswith(VOG) and rows[n]["kind"] == "run"), None
        )
        claims = decile_verdicts(tables, main_run, prm.vog)
        label_issues = label_issue_quality(shuffled)

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
            reason=short_reason(prm.vog.rank_by, rows.get(rank_by), len(seed_runs)),
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
            {
                "chosen": {"score": chosen or "none", **_three(rows.get(chosen))},
                "rank_by": {
                    "score": rank_by or "none",
                    **_three(rows.get(rank_by)),
                    **_claim(claims.get(rank_by)),
                },
                "best_vog": {
                    "score": best_vog or "none",
                    "reliability": _get(rows.get(best_vog), "reliability"),
                    "split_half": _get(rows.get(best_vog), "split_half"),
                },
                "label_issues": label_issues,
            },
        )


def label_issue_quality(table: Any) -> dict[str, float]:
    """The ``label_issue`` flag of the shuffled run's training split against the labels that
    actually changed (a shuffle leaves some in place): precision, recall, F1, counts."""
    from vogflow.analysis.label_issues import flag_quality

    changed = table["label"].to_numpy() != table["true_label"].to_numpy()
    return flag_quality(table["label_issue"].to_numpy(dtype=bool), changed)


def short_reason(configured: str, row: dict | None, n_seeds: int) -> str:
    """Where the audit's ranking was chosen, in one line for every surface that shows it."""
    if configured != "auto":
        return "set in params.yaml (vog.rank_by)"
    if row is None:
        return "chosen by the scorecard: no score passed its checks, the paper's score"
    return (
        f"chosen by the scorecard: most reliable across {n_seeds} seeds of the scores that find "
        f"planted noise and test errors (reliability {row['reliability']:.2f}, noise AUROC "
        f"{row['noise_auroc']:.2f})"
    )


def resolve_rank_by(configured: str, choices: dict, rows: dict) -> tuple[str, str]:
    """The score the audit ranks by, and why: ``auto`` takes the scorecard's choice, a
    ``<window>_<mode>`` names the VoG variant under ``vog.normalise``, any other name must be one
    of the scorecard's scores."""
    if configured == "auto":
        name = choices["any"]["score"]
        if name is None:  # every score points the wrong way: fall back to the paper's
            return f"{VOG}late_label", f"auto, but no score passed: {choices['any']['reason']}"
        return name, f"auto: {choices['any']['reason']}"
    name = configured if configured.startswith((VOG, BASELINE)) else f"{VOG}{configured}"
    if name not in rows:
        raise SystemExit(
            f"scorecard: vog.rank_by: {configured!r} is not a score of this audit; valid: auto, "
            + ", ".join(sorted(rows))
        )
    return name, "set in params.yaml (vog.rank_by)"


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


def candidates(table: Any) -> dict[str, np.ndarray]:
    """Every score of one rankings table, higher = harder: the VoG variants of
    :func:`vogflow.analysis.reports.score_variants` as ``vog_<key>`` and the ``hard_*`` columns."""
    from vogflow.analysis.reports import score_variants

    scores = {f"{VOG}{k}": v for k, v in score_variants(table).items()}
    scores.update(
        {c: table[c].to_numpy(dtype=np.float64) for c in table.columns if c.startswith(BASELINE)}
    )
    return scores


def decile_verdicts(tables: dict, main_run: str, vog_cfg: Any) -> dict[str, dict]:
    """The decile claim of every VoG variant, judged with training randomness: the main run's
    bootstrap interval (the score stage's numbers, same seed) and each seed run's trend on its own
    test split."""
    from vogflow.analysis.deciles import TREND, decile_report
    from vogflow.analysis.reports import decile_analysis, score_variants
    from vogflow.analysis.verdicts import verdict

    main = decile_analysis(tables[main_run], vog_cfg)
    per_seed: dict[str, dict[str, float]] = {}
    for run, table in tables.items():
        # Point estimates only: the seed spread, not a bootstrap, is what each run contributes.
        report = decile_report(
            score_variants(table),
            table["correct"].to_numpy(),
            bins=vog_cfg.bins,
            n_boot=0,
            confidence=vog_cfg.confidence,
            rng=np.random.default_rng(vog_cfg.seed),
        )
        for key, record in report["claims"].items():
            per_seed.setdefault(key, {})[run] = record["measured"]
    out = {}
    for key, record in main["claims"].items():
        judged = verdict(
            record["expected"],
            record["measured"],
            interval=record.get("interval"),
            per_seed=per_seed.get(key, {}),
            null=record["null"],
            confidence=vog_cfg.confidence,
            name=TREND,
        )
        judged["paper"] = record["paper"]
        out[f"{VOG}{key}"] = judged
    return out


def _choices(card: dict) -> dict[str, dict]:
    """The rule applied to the whole card and to the subsets a user may be limited to."""
    from vogflow.analysis.scorecard import choose
    from vogflow.scoring.vog import LABEL_MODES, WINDOWS

    rows = card["scores"]
    settable = {f"{VOG}{w}_{m}" for w in WINDOWS for m in LABEL_MODES}
    subsets = {
        "any": rows,
        # For audits that will not train seed runs.
        "single_run": {n: r for n, r in rows.items() if r["kind"] == "run"},
        "vog": {n: r for n, r in rows.items() if n.startswith(VOG) and r["kind"] == "run"},
        # What `vog.rank_by` can name today: a window and a mode under vog.normalise.
        "rank_by": {n: r for n, r in rows.items() if n in settable},
    }
    out = {}
    for key, subset in subsets.items():
        name, reason = choose({"scores": subset})
        out[key] = {"score": name, "reason": reason}
    return out


def _get(row: dict | None, key: str) -> float:
    return float("nan") if row is None else float(row[key])


def _three(row: dict | None) -> dict[str, float]:
    return {k: _get(row, k) for k in ("reliability", "noise_auroc", "decile_trend")}


def _claim(record: dict | None) -> dict[str, Any]:
    """The decile claim as the flat ``expected, measured, lo, hi, verdict`` siblings that the
    tracking step reads as one claim."""
    if record is None:  # not a VoG score: the paper's decile claim is about VoG
        return {}
    lo, hi = record["interval"] or (float("nan"), float("nan"))
    return {
        "expected": record["expected"],
        "measured": record["measured"],
        "lo": lo,
        "hi": hi,
        "verdict": record["verdict"],
    }


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
    from vogflow import figures

    rows = card["scores"]
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
    fig = figures.scorecard(
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
    figures.save(fig, path, dpi=dpi)


if __name__ == "__main__":
    main()
