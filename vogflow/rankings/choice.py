"""Which score a rankings table is ranked by, and where that choice was made.

One job: resolve the score every surface (``vogflow top``, ``compare``, the ``audit`` printout,
MLflow's hardest-examples tables, the figure grids) ranks by, so they all show the same ranking
under the same name and say why in one line.

- A table ranked by the audit (``results/ranking/<split>.parquet``: ``rank_by``, ``rank_score``,
  ``rank_reason``) is shown by its own ranking unless another score is asked for.
- Any other table (one run's table, a ``vogflow audit`` of the user's checkpoints) is a single
  run: nothing there measures how reliable a ranking is, so it is shown by
  :data:`SINGLE_RUN_DEFAULT`, chosen by measurement on the audits that can measure it
  (``benchmarks/bench_single_run_default.py``).
- A score asked for by name may be any score column of the table (``hard_aum``,
  ``vog_late_label``, ``late_label`` for short, ``label_prob``, ``rank_score``), any scorecard
  name the table's VoG columns give (``vog_late_pred_abs``, ``vog_all_label_raw``) and a
  ``<name>_seedmean`` where the table is ranked by it or the seed runs' tables are at hand.

Tables in, arrays out; numpy and pandas only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vogflow.errors import ConfigError

SEEDMEAN = "_seedmean"
# Measured with benchmarks/bench_single_run_default.py on the default digits audit (LeNet) and on
# scikit-learn's breast-cancer and wine sets (MLP): among the single-run scores that find planted
# noise (AUROC > 0.5) and rise with test error on every one of them, the area under the margin
# agrees best with a seed rerun (benchmarks/RESULTS.md).
SINGLE_RUN_DEFAULT = "hard_aum"
SINGLE_RUN_REASON = (
    "the single-run default: one run cannot measure reliability; the most reliable single-run "
    "score on the digits, breast-cancer and wine audits, benchmarks/bench_single_run_default.py"
)
ASKED = "asked for with --score"
# Columns that identify or describe an example rather than score it.
NOT_SCORES = frozenset({"index", "label", "true_label", "pred", "suggested_label", "rank"})


@dataclass(frozen=True)
class Ranking:
    """``name``: the score (scorecard spelling); ``values``: ``(N,)`` higher = harder, in the
    table's row order; ``reason``: where the choice was made."""

    name: str
    values: np.ndarray
    reason: str

    def line(self) -> str:
        return f"ranked by {self.name} ({self.reason})"

    def ranked(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with the score as a column named after it (for ``rankings.top_bottom``)."""
        return table.assign(**{self.name: self.values})


def scores(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every score the table offers by its scorecard name, higher = harder: the VoG variants
    (``vog_<w>_<m>``, ``_abs``, ``_raw``), then every other numeric or flag column."""
    from vogflow.analysis.reports import score_variants as variants

    out: dict[str, np.ndarray] = {}
    if all(c in table.columns for c in ("label", "pred")):
        out = {f"vog_{k}": np.asarray(v, dtype=np.float64) for k, v in variants(table).items()}
    for col in table.columns:
        kind = table[col].dtype.kind
        if col not in out and col not in NOT_SCORES and kind in "fbiu":
            out[col] = table[col].to_numpy(dtype=np.float64)
    return out


def canonical(name: str, offered: Mapping[str, np.ndarray]) -> str:
    """``late_label`` -> ``vog_late_label``, ``aum`` -> ``hard_aum`` (a ``_seedmean`` kept) where
    the short name is not itself a score."""
    if name in offered or name.startswith(("vog_", "hard_")):
        return name
    base = name.removesuffix(SEEDMEAN)
    for prefix in ("vog_", "hard_"):
        if f"{prefix}{base}" in offered:
            return f"{prefix}{name}"
    return name


def audit_choice(table: pd.DataFrame) -> tuple[str, str] | None:
    """The audit's ranking recorded in the table (name, reason), or None."""
    if "rank_score" not in table.columns or "rank_by" not in table.columns or not len(table):
        return None
    reason = (
        str(table["rank_reason"].iloc[0])
        if "rank_reason" in table.columns
        else "the audit's ranking (results/ranking)"
    )
    return str(table["rank_by"].iloc[0]), reason


def resolve(
    table: pd.DataFrame,
    score: str | None = None,
    *,
    seed_tables: Mapping[str, pd.DataFrame] | None = None,
    where: str = "this table",
) -> Ranking:
    """The ranking of ``table``: ``score`` when named, else the audit's choice recorded in the
    table, else :data:`SINGLE_RUN_DEFAULT` (the paper's VoG where the table has no baselines).

    ``seed_tables``: run -> the seed runs' tables of the same split, for a ``_seedmean`` the
    table is not already ranked by. Raises :class:`ConfigError` naming the scores offered.
    """
    offered = scores(table)
    chosen = audit_choice(table)
    if score is None:
        if chosen is not None:
            return Ranking(chosen[0], table["rank_score"].to_numpy(dtype=np.float64), chosen[1])
        if SINGLE_RUN_DEFAULT in offered:
            return Ranking(SINGLE_RUN_DEFAULT, offered[SINGLE_RUN_DEFAULT], SINGLE_RUN_REASON)
        from vogflow.rankings.table import preferred_score

        fallback = preferred_score(table.columns)
        if fallback is None:
            raise ConfigError(f"{where} has no score column to rank by; give a rankings table")
        return Ranking(fallback, offered[fallback], "the paper's score: no baselines here")
    name = canonical(score, offered)
    if chosen is not None and name == chosen[0]:
        values = table["rank_score"].to_numpy(dtype=np.float64)
        return Ranking(name, values, f"{ASKED}; the audit's own ranking: {chosen[1]}")
    if name in offered:
        return Ranking(name, offered[name], ASKED)
    if name.endswith(SEEDMEAN) and name.removesuffix(SEEDMEAN) in offered:
        if seed_tables:
            from vogflow.analysis.scorecard import mean_percentile

            base = name.removesuffix(SEEDMEAN)
            each = {r: scores(t) for r, t in seed_tables.items()}
            per_run = {r: s[base] for r, s in each.items() if base in s}
            if len(per_run) == len(seed_tables) and len(per_run) >= 2:
                runs = ", ".join(per_run)
                return Ranking(name, mean_percentile(per_run), f"{ASKED}; over runs {runs}")
        raise ConfigError(
            f"--score {score!r}: a seed mean needs the audit's seed runs, which {where} does not "
            "have; rank an MLflow audit (vogflow top <audit>) or the audit's "
            f"results/ranking/<split>.parquet ranked by it, or use {name.removesuffix(SEEDMEAN)}"
        )
    names = ", ".join(offered) or "none"
    raise ConfigError(f"--score {score!r}: no such score in {where}; scores: {names}")
