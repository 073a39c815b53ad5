"""What one audit's MLflow record holds, composed from the pipeline's files (no MLflow here).

The ``track`` stage runs after every other stage; it reads ``dvc.yaml`` and ``dvc.lock`` for the
stages, their params and outputs, each stage's metrics file, and the timings each stage left in
``.vogflow/timings/``. The result is one :class:`AuditRecord`: a parent with every headline result
and a child per stage, whichever stages reran. Its key is a hash of the pipeline state (the lock
of every stage), so logging the same state twice is recognised.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vogflow.common.atomic import TIMINGS

TRACK_STAGE = "track"
# The registered version of the latest audit of committed code.
MODEL_ALIAS = "audited"
# The parent run's metrics: one chart each in the UI, so only the headline of each question;
# every number stays in the parent's tables/metrics.json and in its stage's own run.
PARENT_METRICS = (
    "test_accuracy",
    "test_error_rate",
    "decile_error_trend",
    "scorecard.chosen.reliability",
    "stability.seed.spearman.measured",
    "memorization.auroc.measured",
    "memorization.p_one_sided",
    "toy.spearman.measured",
    "ood.auroc_vog",
)
# Outputs too large or too raw to copy into the record: the manifest stands for the checkpoints
# (the audited model is logged as an MLflow model), the rankings stand for the raw gradients.
SKIP_OUTPUTS = re.compile(r"(^|/)(checkpoints|gradients)$")


@dataclass
class ChildRecord:
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    artifacts: list[tuple[Path, str]]
    start: float | None = None
    end: float | None = None
    steps: list[dict[str, float]] = field(default_factory=list)  # per-epoch values


@dataclass
class AuditRecord:
    key: str
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    description: str
    artifacts: list[tuple[Path, str]]
    children: list[ChildRecord]
    top: dict[str, Any]  # split -> DataFrame of the hardest examples of the audited run
    lock: dict[str, Any]
    alias: str | None = None  # the registered model alias this audit moves, if any
    metric_table: Any = None  # every headline number, grouped (a DataFrame)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``a.b.c`` keys; lists kept as one value."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, name))
    return out


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The finite numeric values (booleans as 0/1) of a flat mapping."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, int | float) and math.isfinite(value):
            out[key] = float(value)
    return out


def words(values: dict[str, Any]) -> dict[str, str]:
    """The string values of a flat mapping (verdicts): tags, not metrics."""
    return {k: v for k, v in values.items() if isinstance(v, str)}


def state_key(lock: dict[str, Any]) -> str:
    stages = {k: v for k, v in lock.get("stages", {}).items() if k != TRACK_STAGE}
    return hashlib.sha256(json.dumps(stages, sort_keys=True).encode()).hexdigest()[:32]


def outputs(lock: dict[str, Any]) -> list[str]:
    """Every path DVC writes for the pipeline (so not an edit of its source)."""
    paths = ["dvc.lock"]
    for entry in lock.get("stages", {}).values():
        paths += [o["path"] for o in entry.get("outs", [])]
    return paths


def _declared(dvc_yaml: dict[str, Any], kind: str) -> dict[str, list[str]]:
    """Stage name -> the paths declared under ``kind`` (``metrics``), foreach stages expanded
    by the run names that ``dvc.lock`` shows. Outputs annotated ``type: metrics`` count too: the
    stages' own metrics files, which DVC does not list (only the headline file is a DVC metric)
    but every child run logs."""
    out: dict[str, list[str]] = {}
    for name, spec in dvc_yaml.get("stages", {}).items():
        body = spec.get("do", spec)
        paths = [next(iter(p)) if isinstance(p, dict) else p for p in body.get(kind, [])]
        for entry in body.get("outs", []):
            if isinstance(entry, dict) and (next(iter(entry.values())) or {}).get("type") == kind:
                paths.append(next(iter(entry)))
        out[name] = paths
    return out


def _expand(template: str, key: str | None) -> str:
    return template.replace("${key}", key) if key is not None else template


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _stage_artifacts(workspace: Path, outs: list[str]) -> list[tuple[Path, str]]:
    """A stage's outputs as artifacts; of checkpoint and gradient folders only the manifest."""
    artifacts = []
    for out in outs:
        if SKIP_OUTPUTS.search(out):
            manifest = workspace / out / "manifest.json"
            if manifest.exists():
                artifacts.append((manifest, "checkpoints"))
            continue
        path = workspace / out
        if path.exists():
            # Artifacts keep the project's layout: runs/main/rankings/test.parquet.
            folder = out if path.is_dir() else str(Path(out).parent)
            artifacts.append((path, "" if folder == "." else folder))
    return artifacts


def _timing_metrics(timing: dict[str, Any]) -> dict[str, float]:
    timing_metrics = {
        f"timing.{k}": v
        for k, v in numbers(timing).items()
        if k not in ("start", "end", "body_start")
    }
    if "start" in timing and "body_start" in timing:
        timing_metrics["timing.startup_seconds"] = timing["body_start"] - timing["start"]
        timing_metrics["timing.total_seconds"] = timing["end"] - timing["start"]
    return timing_metrics


def _child(
    workspace: Path,
    stage_name: str,
    entry: dict[str, Any],
    metrics_of: dict[str, list[str]],
    git: dict[str, str],
) -> ChildRecord:
    """The record of one stage (a child run) from its dvc.lock entry and files."""
    base, _, key = stage_name.partition("@")
    outs = [o["path"] for o in entry.get("outs", [])]
    metric_files = [_expand(m, key or None) for m in metrics_of.get(base, [])]
    metrics: dict[str, Any] = {}
    for path in metric_files:
        metrics.update(flatten(_read_json(workspace / path)))
    stage_params = {}
    for values in (entry.get("params") or {}).values():
        stage_params.update(flatten(values))
    timing = _read_json(workspace / TIMINGS / f"{stage_name}.json")
    steps = timing.pop("history", [])
    artifacts = _stage_artifacts(workspace, outs)
    timing_metrics = _timing_metrics(timing)
    tags = {"vogflow.stage": stage_name, **words(metrics), **git}
    if key:
        tags["vogflow.run"] = key
    return ChildRecord(
        name=stage_name,
        tags={k: str(v) for k, v in tags.items()},
        params={k: str(v)[:6000] for k, v in stage_params.items()},
        metrics={**numbers(metrics), **timing_metrics},
        artifacts=artifacts,
        start=timing.get("start"),
        end=timing.get("end"),
        steps=steps,
    )


def _top(workspace: Path, register_run: str, top_k: int) -> tuple[dict[str, Any], str]:
    """The hardest examples of each split and the ranking that chose them."""
    import pandas as pd

    from vogflow.rankings import choice as rank_choice

    top, rank_by = {}, "the audit's ranking"
    for split in ("test", "train"):
        # The audit's ranking (the scorecard's choice), else the run's own table by the
        # single-run default: the same ranking, under the same name, as `vogflow top`.
        for path in (
            workspace / "results" / "ranking" / f"{split}.parquet",
            workspace / "runs" / register_run / "rankings" / f"{split}.parquet",
        ):
            if path.exists():
                table = pd.read_parquet(path)
                ranking = rank_choice.resolve(table, where=str(path))
                rank_by = ranking.line()
                top[split] = hardest(ranking.ranked(table), ranking.name, top_k)
                break
    return top, rank_by


def _audit_artifacts(workspace: Path) -> list[tuple[Path, str]]:
    artifacts = [(workspace / "params.yaml", "config"), (workspace / "dvc.lock", "config")]
    for run_dir in sorted((workspace / "runs").glob("*/rankings")):
        artifacts.append((run_dir, f"rankings/{run_dir.parent.name}"))
    for folder in (
        "results/figures",
        "results/ood",
        "results/ranking",
        "results/report",
        "results/scorecard",
    ):
        if (workspace / folder).is_dir():
            artifacts.append((workspace / folder, Path(folder).name))
    return artifacts


def compose(
    workspace: Path,
    *,
    params: dict[str, Any],
    git: dict[str, str],
    exp_name: str | None = None,
    in_experiment: bool | None = None,
) -> AuditRecord:
    """The record of the pipeline state in ``workspace`` (where DVC runs the stages).

    ``in_experiment``: the audit runs under ``dvc exp run`` (default: when ``exp_name`` is
    given); it then moves the model alias ``exp-<name>``, never ``audited``."""
    lock = yaml.safe_load((workspace / "dvc.lock").read_text()) or {}
    dvc_yaml = yaml.safe_load((workspace / "dvc.yaml").read_text()) or {}
    metrics_of = _declared(dvc_yaml, "metrics")
    children = [
        _child(workspace, stage_name, entry, metrics_of, git)
        for stage_name, entry in lock.get("stages", {}).items()
        if stage_name != TRACK_STAGE
    ]
    register_run = params.get("tracking", {}).get("register_run", "main")
    headline = headline_metrics(workspace, register_run)
    claims = headline_claims(workspace, register_run)
    top, rank_by = _top(workspace, register_run, params.get("vog", {}).get("top_k", 25))
    in_experiment = bool(exp_name) if in_experiment is None else in_experiment
    name = run_name(params, git, exp_name)
    artifacts = _audit_artifacts(workspace)
    tags = {
        "vogflow.kind": "audit",
        "vogflow.audit_key": state_key(lock),
        **{f"verdict.{k}": c["verdict"] for k, c in claims.items()},
        **git,
    }
    if exp_name:
        tags["dvc.exp_name"] = exp_name
    if in_experiment:
        tags["vogflow.experiment"] = "true"
    return AuditRecord(
        key=state_key(lock),
        name=name,
        tags=tags,
        params={k: str(v)[:6000] for k, v in flatten(params).items()},
        metrics={k: v for k, v in headline.items() if k in PARENT_METRICS},
        description=describe(name, headline, claims, top.get("test"), rank_by),
        artifacts=artifacts,
        children=children,
        top=top,
        lock=lock,
        alias=model_alias(git, exp_name, in_experiment),
        metric_table=metric_table(headline),
    )


def run_name(params: dict[str, Any], git: dict[str, str], exp_name: str | None) -> str:
    """What tells audits apart in a runs list cut after ~30 characters: the experiment's name
    or the commit first (``*`` when the code had uncommitted changes), then data, model, epochs
    and when it was logged."""
    import time

    commit = git.get("git.commit", "unknown")[:7]
    first = exp_name or (commit + ("*" if git.get("git.dirty") == "true" else ""))
    data, model = params.get("data", {}).get("name", "?"), params.get("model", {}).get("name", "?")
    epochs = params.get("train", {}).get("epochs")
    parts = [first, f"{data}/{model}"]
    if epochs is not None:
        parts.append(f"{epochs}ep")
    parts.append(time.strftime("%m-%d %H:%M"))
    return " ".join(parts)


def model_alias(git: dict[str, str], exp_name: str | None, in_experiment: bool) -> str | None:
    """``audited`` for committed code, ``exp-<name>`` under ``dvc exp run``, else none (a
    project outside git counts as committed: there is nothing uncommitted to tell)."""
    if in_experiment:
        slug = re.sub(r"[^\w-]+", "-", exp_name or git.get("git.commit", "unknown")[:7])
        return f"exp-{slug.strip('-') or 'unnamed'}"[:255]
    return None if git.get("git.dirty") == "true" else MODEL_ALIAS


def metric_table(headline: dict[str, float]) -> Any:
    """Every headline number as rows of (group, metric, measured, lo, hi): one readable table
    instead of a chart per number."""
    import pandas as pd

    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in headline.items():
        group, _, rest = key.partition(".") if "." in key else ("model", "", key)
        base, _, field = rest.rpartition(".")
        if field not in ("measured", "lo", "hi"):
            base, field = rest, "measured"
        if group == "model" and rest.endswith(("_lo", "_hi")):
            base, field = rest[:-3], rest[-2:]
        rows.setdefault((group, base), {})[field] = value
    return pd.DataFrame(
        [
            {
                "group": g,
                "metric": m,
                "measured": v.get("measured"),
                "lo": v.get("lo"),
                "hi": v.get("hi"),
            }
            for (g, m), v in rows.items()
        ],
        columns=["group", "metric", "measured", "lo", "hi"],
    )


def hardest(table: Any, column: str, k: int) -> Any:
    """The ``k`` hardest rows by ``column`` with what a person needs to find them and act on."""
    wanted = ("index", "path", "text", "label", "true_label", "pred", "correct", "noisy")
    keep = [c for c in (*wanted, "label_issue", "suggested_label") if c in table.columns]
    top = table.nlargest(k, column)[[*keep, column]].reset_index(drop=True)
    top.insert(0, "rank", range(1, len(top) + 1))
    return top


def headline_metrics(workspace: Path, run: str) -> dict[str, float]:
    """The audit's headline numbers, each a fraction or a correlation in [-1, 1]."""
    read = lambda rel: flatten(_read_json(workspace / rel))  # noqa: E731
    train = read(f"runs/{run}/train.json")
    score = read(f"runs/{run}/score.json")
    wanted = {
        "test_accuracy": train.get("test_accuracy"),
        "test_error_rate": score.get("test.error_rate"),
        "decile_error_trend": score.get("test.trend.measured"),
        "decile_error_trend_lo": score.get("test.trend.lo"),
        "decile_error_trend_hi": score.get("test.trend.hi"),
    }
    for rel, prefix in (
        ("results/scorecard/metrics.json", "scorecard"),
        ("results/stability/metrics.json", "stability"),
        ("results/memorization/metrics.json", "memorization"),
        ("results/toy/metrics.json", "toy"),
        ("results/ood/metrics.json", "ood"),
    ):
        for k, v in numbers(read(rel)).items():
            wanted[f"{prefix}.{k}"] = v
    return numbers({k: v for k, v in wanted.items() if v is not None})


def headline_claims(workspace: Path, run: str) -> dict[str, dict[str, Any]]:
    """Every claim the metrics files state: name -> expected, measured, lo, hi, verdict."""
    found: dict[str, dict[str, Any]] = {}
    for rel, prefix in (
        (f"runs/{run}/score.json", "deciles"),
        ("results/scorecard/metrics.json", "scorecard"),
        ("results/stability/metrics.json", "stability"),
        ("results/memorization/metrics.json", "memorization"),
        ("results/toy/metrics.json", "toy"),
    ):
        flat = flatten(_read_json(workspace / rel))
        for key, value in flat.items():
            if key != "verdict" and not key.endswith(".verdict"):
                continue
            base = key.removesuffix("verdict")
            claim = {"verdict": value}
            for field_name in ("expected", "measured", "lo", "hi"):
                if base + field_name in flat:
                    claim[field_name] = flat[base + field_name]
            if "measured" not in claim and base == "":
                claim["measured"] = flat.get("mean_difference")
            found[".".join(filter(None, (prefix, base.rstrip(".")))) or prefix] = claim
    return found


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else "-"


def describe(
    name: str, metrics: dict[str, float], claims: dict[str, dict[str, Any]], top: Any, rank_by: str
) -> str:
    """The parent run's markdown description: the claims first, then the hardest test examples."""
    lines = [
        f"## {name}",
        "",
        "The paper's claims, tested on this audit's data:",
        "",
        "| claim | expected | measured | interval | verdict |",
        "|---|---|---|---|---|",
    ]
    for claim, c in sorted(claims.items()):
        interval = f"[{_number(c.get('lo'))}, {_number(c.get('hi'))}]" if "lo" in c else "-"
        lines.append(
            f"| {claim} | {c.get('expected', '-')} | {_number(c.get('measured'))} "
            f"| {interval} | **{c['verdict']}** |"
        )
    if "test_accuracy" in metrics:
        lines += ["", f"Test accuracy of the audited model: {metrics['test_accuracy']:.3f}."]
    if top is not None and len(top):
        said = f"{rank_by[0].upper()}{rank_by[1:]}."
        lines += ["", "### The 10 hardest test examples", "", said, ""]
        head = top.head(10)
        lines.append("| " + " | ".join(map(str, head.columns)) + " |")
        lines.append("|" + "---|" * len(head.columns))
        for row in head.itertuples(index=False):
            cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
