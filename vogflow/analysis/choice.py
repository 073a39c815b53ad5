"""The audit's choice of ranking score from a scorecard, and the seed-aware decile verdicts.

One job: given the rankings tables of the seed runs and of the shuffled-label run, name every
candidate score (:func:`candidates`), apply the scorecard's rule to the whole card and to the
subsets a user may be limited to (:func:`choices`), resolve ``vog.rank_by`` against them
(:func:`resolve_rank_by`, :func:`short_reason`), judge the paper's decile claim with training
randomness (:func:`decile_verdicts`), and condense all of it into the headline metrics
(:func:`headline_metrics`). The ``scorecard`` stage only reads tables and writes files.

Tables in, plain JSON-able dicts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vogflow.errors import ConfigError

VOG, BASELINE = "vog_", "hard_"
PAPER_SCORE = f"{VOG}late_label"  # the fallback when no score passes: the paper's own

__all__ = [
    "BASELINE",
    "PAPER_SCORE",
    "VOG",
    "best_vog",
    "candidates",
    "choices",
    "decile_verdicts",
    "headline_metrics",
    "label_issue_quality",
    "resolve_rank_by",
    "short_reason",
]


def candidates(table: Any) -> dict[str, np.ndarray]:
    """Every score of one rankings table, higher = harder: the VoG variants of
    :func:`vogflow.analysis.reports.score_variants` as ``vog_<key>`` and the ``hard_*`` columns."""
    from vogflow.analysis.reports import score_variants

    scores = {f"{VOG}{k}": v for k, v in score_variants(table).items()}
    scores.update(
        {c: table[c].to_numpy(dtype=np.float64) for c in table.columns if c.startswith(BASELINE)}
    )
    return scores


def label_issue_quality(table: Any) -> dict[str, float]:
    """The ``label_issue`` flag of the shuffled run's training split against the labels that
    actually changed (a shuffle leaves some in place): precision, recall, F1, counts."""
    from vogflow.analysis.label_issues import flag_quality

    changed = table["label"].to_numpy() != table["true_label"].to_numpy()
    return flag_quality(table["label_issue"].to_numpy(dtype=bool), changed)


def choices(card: Mapping[str, Any]) -> dict[str, dict]:
    """The rule (:func:`vogflow.analysis.scorecard.choose`) applied to the whole card and to the
    subsets a user may be limited to: ``any``, ``single_run``, ``vog``, ``rank_by``; each
    ``{"score": name or None, "reason": ...}``."""
    from vogflow.analysis.scorecard import choose
    from vogflow.config.names import LABEL_MODES, WINDOWS

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


def best_vog(card: Mapping[str, Any]) -> str | None:
    """The best-ranked single-run VoG variant of the card, or None."""
    rows = card["scores"]
    return next(
        (n for n in card["ranking"] if n.startswith(VOG) and rows[n]["kind"] == "run"), None
    )


def resolve_rank_by(configured: str, choices: Mapping, rows: Mapping) -> tuple[str, str]:
    """The score the audit ranks by, and why: ``auto`` takes the scorecard's choice, a
    ``<window>_<mode>`` names the VoG variant under ``vog.normalise``, any other name must be one
    of the scorecard's scores (:class:`~vogflow.errors.ConfigError` otherwise)."""
    if configured == "auto":
        name = choices["any"]["score"]
        if name is None:  # every score points the wrong way: fall back to the paper's
            return PAPER_SCORE, f"auto, but no score passed: {choices['any']['reason']}"
        return name, f"auto: {choices['any']['reason']}"
    name = configured if configured.startswith((VOG, BASELINE)) else f"{VOG}{configured}"
    if name not in rows:
        raise ConfigError(
            f"vog.rank_by: {configured!r} is not a score of this audit; valid: auto, "
            + ", ".join(sorted(rows))
        )
    return name, "set in params.yaml (vog.rank_by)"


def short_reason(configured: str, row: Mapping | None, n_seeds: int) -> str:
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


def decile_verdicts(tables: Mapping, main_run: str, vog_cfg: Any) -> dict[str, dict]:
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


def _get(row: Mapping | None, key: str) -> float:
    return float("nan") if row is None else float(row[key])


def _three(row: Mapping | None) -> dict[str, float]:
    return {k: _get(row, k) for k in ("reliability", "noise_auroc", "decile_trend")}


def _claim(record: Mapping | None) -> dict[str, Any]:
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


def headline_metrics(
    rows: Mapping[str, Mapping],
    *,
    chosen: str | None,
    rank_by: str | None,
    best: str | None,
    claims: Mapping[str, Mapping],
    label_issues: Mapping[str, float],
) -> dict[str, Any]:
    """The scorecard's headline metrics (scalars only): the chosen score, the audit's ranking
    score with its decile claim, the best VoG variant, and the label-issue flag's quality."""
    return {
        "chosen": {"score": chosen or "none", **_three(rows.get(chosen))},
        "rank_by": {
            "score": rank_by or "none",
            **_three(rows.get(rank_by)),
            **_claim(claims.get(rank_by)),
        },
        "best_vog": {
            "score": best or "none",
            "reliability": _get(rows.get(best), "reliability"),
            "split_half": _get(rows.get(best), "split_half"),
        },
        "label_issues": label_issues,
    }
