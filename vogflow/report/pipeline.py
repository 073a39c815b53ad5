"""A pipeline audit's report, from the files the stages wrote (no stage reruns, no MLflow).

Claims come from the metrics files (the same reading as the MLflow record), the choice of score
from the scorecard's report, the ranking from ``results/ranking/`` (else the audited run's own
table), the OoD summary from ``results/ood/`` where that stage ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from vogflow.report.content import Report, split_section

REPRODUCE = (
    "git checkout {commit}  # in a clone of this repository",
    'pip install -e ".[test]"',
    "dvc pull  # or `dvc repro` to recompute every stage",
    "dvc repro report  # this page: results/report/index.html",
    "vogflow export results/ranking/train.parquet --data params:params.yaml "
    "--format label-studio --out relabel/train.json",
)


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def claims(workspace: Path, run: str) -> list[dict[str, Any]]:
    from vogflow.tracking.record import headline_claims

    rows = []
    for name, c in sorted(headline_claims(workspace, run).items()):
        rows.append(
            {
                "name": name,
                "expected": str(c.get("expected", "-")),
                "measured": c.get("measured"),
                "lo": c.get("lo"),
                "hi": c.get("hi"),
                "verdict": str(c["verdict"]),
            }
        )
    return rows


# The scorecard's other choices, as a reader names them.
CHOICE_NAMES = {
    "any": "any score, seed means included",
    "single_run": "scores one run can give",
    "vog": "VoG variants only",
}


def choice(workspace: Path) -> dict[str, Any] | None:
    """The score the audit ranks by, where that was decided and why (the scorecard's report)."""
    report = _json(workspace / "results" / "scorecard" / "report.json")
    rank_by = report.get("rank_by")
    if not rank_by:
        return None
    metrics = _json(workspace / "results" / "scorecard" / "metrics.json").get("rank_by") or {}
    configured = rank_by.get("configured", "auto")
    where = (
        "chosen by the scorecard stage: vog.rank_by is auto in params.yaml"
        if configured == "auto"
        else f"set in params.yaml: vog.rank_by {configured}"
    )
    return {
        "score": rank_by.get("score", "-"),
        "where": where,
        "reason": rank_by.get("reason"),
        "numbers": [(k.replace("_", " "), v) for k, v in metrics.items() if k != "score"],
        "others": [
            (CHOICE_NAMES.get(what, what), c.get("score", "-"))
            for what, c in (report.get("choices") or {}).items()
            if what in CHOICE_NAMES
        ],
    }


def issue_quality(workspace: Path) -> str | None:
    """How the label-issue flag did against the labels the noise run actually changed."""
    measured = _json(workspace / "results" / "scorecard" / "metrics.json").get("label_issues")
    if not measured or "f1" not in measured:
        return None
    run = _json(workspace / "results" / "scorecard" / "report.json").get("noise_run", "noise")
    return (
        f"How far to trust the flag: on the {run} run's planted noise it flagged "
        f"{measured.get('flagged', '?')} training labels for {measured.get('wrong', '?')} that "
        f"were changed: precision {measured['precision']:.2f}, recall {measured['recall']:.2f}, "
        f"F1 {measured['f1']:.2f} (the scorecard stage)."
    )


def ood(workspace: Path) -> dict[str, Any] | None:
    path = workspace / "results" / "ood" / "table.csv"
    if not path.exists():
        return None
    table = pd.read_csv(path)
    header = ["method", "AUROC %", "AUPR-In %", "AUPR-Out %", "corruptions"]
    rows = [
        [
            str(r["method"]),
            f"{r['auroc_mean']:.1f} ± {r['auroc_std']:.1f}",
            f"{r['aupr_in_mean']:.1f} ± {r['aupr_in_std']:.1f}",
            f"{r['aupr_out_mean']:.1f} ± {r['aupr_out_std']:.1f}",
            str(int(r["n_corruptions"])),
        ]
        for r in table.sort_values("auroc_mean", ascending=False).to_dict("records")
    ]
    claims_ = _json(workspace / "results" / "ood" / "report.json").get("vog_auroc_claims", {})
    held = sum(bool(c.get("holds")) for c in claims_.values())
    note = (
        "Clean test examples against corrupted ones, per detector (mean ± std over the "
        "corruptions)."
    )
    if claims_:
        note += f" VoG's AUROC is above 0.5 on {held} of {len(claims_)} corruptions."
    return {"header": header, "rows": rows, "note": note}


def build(
    workspace: Path,
    params: Any,
    *,
    params_text: str,
    git: dict[str, str],
    images: dict[str, Any] | None = None,
    k: int = 12,
) -> Report:
    """The report of the pipeline state in ``workspace``; ``images``: split -> ImageSource."""
    run = params.tracking.register_run
    images = images or {}
    sections = []
    for split in params.gradients.splits:
        # The audit's ranking, else (no scorecard) the run's own table by the single-run default.
        ranking = workspace / "results" / "ranking" / f"{split}.parquet"
        if not ranking.exists():
            ranking = workspace / "runs" / run / "rankings" / f"{split}.parquet"
        if not ranking.exists():
            continue
        source = images.get(split)
        sections.append(
            split_section(
                pd.read_parquet(ranking),
                split,
                k=k,
                class_names=source.class_names if source else None,
                images=source.uris if source else None,
                where=str(ranking.relative_to(workspace)),
            )
        )
    data, model = params.data, params.model
    train = _json(workspace / "runs" / run / "train.json")
    commit = git.get("git.commit", "unknown")
    dirty = git.get("git.dirty") == "true"
    facts = [
        # Built-in datasets name a placeholder path (a DVC dependency only): show the name alone.
        ("data", data.name + (f" ({data.path})" if data.name in ("npz", "imagefolder") else "")),
        ("model", model.name + (f", {model.hidden} hidden" if model.name == "mlp" else "")),
        ("audited run", run),
        ("commit", commit[:12] + (" + uncommitted changes" if dirty else "")),
    ]
    if "test_accuracy" in train:
        facts.append(("test accuracy", f"{train['test_accuracy']:.3f}"))
    return Report(
        title=f"vogflow audit: {data.name} / {model.name}",
        facts=facts,
        splits=sections,
        commands=[c.format(commit=commit[:12]) for c in REPRODUCE],
        params=params_text,
        claims=claims(workspace, run),
        choice=choice(workspace),
        ood=ood(workspace),
        issue_quality=issue_quality(workspace),
    )
