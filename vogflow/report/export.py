"""Export examples for relabeling: the label issues of an audit, or the top k of any score.

Two formats: a CSV a person or a script reads (index, path where the data has one, given label,
suggested label, score, evidence), and Label Studio's tasks JSON with the labeling config to
import it with. Each task's ``data.image`` is the picture inline as a PNG data URI, so the
tasks load in any Label Studio, without a storage to configure or a file server; the given
label comes pre-selected (an imported prediction) and the suggestion is a second prediction,
so an annotator confirms or changes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pandas as pd

from vogflow.common.atomic import write_text
from vogflow.errors import ConfigError
from vogflow.rankings.table import PATH_COLUMN
from vogflow.report.content import class_name, has_label_issues, ranking

FORMATS = ("csv", "label-studio")
DEFAULT_K = 25
# Label Studio control and object names: the tasks' predictions and the config must agree.
CHOICES, IMAGE, TEXT = "label", "image", "text"


def select(
    table: pd.DataFrame, *, score: str | None, k: int | None, where: str
) -> tuple[pd.DataFrame, str | None, str]:
    """``(rows, column, name)``: the rows to export, the column of their score (``_score``;
    None for label issues) and the score's name as every surface spells it.

    No ``score``: the label issues, most doubtful given label first (all of them, or the first
    ``k``). A ``score``: the ``k`` highest (25 by default), hardest first.
    """
    if score is None:
        if not has_label_issues(table):
            raise ConfigError(
                f"{where} has no label-issue estimate (columns label_issue, suggested_label, "
                "suggested_label_prob, label_prob); pass --score NAME -k N to export the top k "
                "of a score, or audit again with this vogflow"
            )
        flagged = table[table["label_issue"].astype(bool)]
        flagged = flagged.sort_values(["label_prob", "index"], kind="stable")
        return (flagged if k is None else flagged.head(k)), None, "label_issue"
    chosen = ranking(table, score, where=where)
    scored = table.assign(_score=chosen.values)
    order = scored["_score"].sort_values(ascending=False, kind="stable").index
    return scored.loc[order[: k or DEFAULT_K]], "_score", chosen.name


def records(
    rows: pd.DataFrame,
    column: str | None,
    name: str,
    *,
    n: int,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The export's rows: index, path or text, given and suggested label, score, evidence.

    ``column`` None: label issues (the score is the given label's probability); else the rows
    of a score ``name`` (column ``column``), hardest first, ``n`` rows in the table.
    """
    issues = has_label_issues(rows)
    out = []
    for rank, row in enumerate(rows.to_dict("records"), 1):
        given = class_name(row["label"], class_names)
        if column is None:
            suggested = class_name(row["suggested_label"], class_names)
            score = float(row["label_prob"])
            evidence = (
                f"given label {given} has probability {score:.3f} averaged over the checkpoints; "
                f"{suggested} has {float(row['suggested_label_prob']):.3f}"
            )
        else:
            # A flagged row's suggestion where the table estimates them, else the final model's.
            flagged = issues and bool(row["label_issue"])
            suggested = class_name(row["suggested_label" if flagged else "pred"], class_names)
            score = float(row[column])
            evidence = (
                f"{name} = {score:.4g}, rank {rank} of {n} (1 = hardest); the final model "
                f"predicts {class_name(row['pred'], class_names)}"
                + ("; a label issue" if flagged else "")
            )
        record = {c: row[c] for c in ("index", PATH_COLUMN, "text") if c in row}
        record |= {
            "index": int(row["index"]),
            "given_label": given,
            "suggested_label": suggested,
            "score": score,
            "score_name": "label_prob" if column is None else name,
            "evidence": evidence,
        }
        out.append(record)
    traced = [c for c in (PATH_COLUMN, "text") if c in rows.columns]
    columns = ["index", *traced, "given_label", "suggested_label", "score", "score_name"]
    return pd.DataFrame(out, columns=[*columns, "evidence"])


def label_config(classes: Sequence[str], *, image: bool) -> str:
    """The Label Studio labeling config the tasks are made for (Settings > Labeling Interface)."""
    target = IMAGE if image else TEXT
    viewer = (
        f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>'
        if image
        else f'  <Text name="{TEXT}" value="${TEXT}"/>'
    )
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    return (
        "<View>\n"
        f"{viewer}\n"
        '  <Header value="Given: $given_label. Suggested: $suggested_label"/>\n'
        '  <Text name="evidence" value="$evidence"/>\n'
        f'  <Choices name="{CHOICES}" toName="{target}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _choice(label: str, target: str) -> dict[str, Any]:
    return {
        "from_name": CHOICES,
        "to_name": target,
        "type": "choices",
        "value": {"choices": [label]},
    }


def label_studio_tasks(
    frame: pd.DataFrame, images: Mapping[int, str] | None
) -> list[dict[str, Any]]:
    """One task per row: the example (image data URI or text), its given and suggested label and
    the evidence as data; the given label as the first prediction (pre-selected), the
    suggestion as the second."""
    target = IMAGE if images is not None else TEXT
    tasks = []
    for row in frame.to_dict("records"):
        data: dict[str, Any] = {k: v for k, v in row.items() if k != "text"}
        if images is not None:
            data[IMAGE] = images[int(row["index"])]
        else:
            data[TEXT] = row["text"]
        predictions = [
            {"model_version": "given label", "result": [_choice(row["given_label"], target)]}
        ]
        if row["suggested_label"] != row["given_label"]:
            predictions.append(
                {
                    "model_version": "vogflow suggestion",
                    "result": [_choice(row["suggested_label"], target)],
                }
            )
        tasks.append({"data": data, "predictions": predictions})
    return tasks


def write_label_studio(
    frame: pd.DataFrame,
    path: str | Path,
    *,
    classes: Sequence[str],
    images: Callable[[Sequence[int]], Mapping[int, str]] | None,
) -> tuple[Path, Path]:
    """The tasks JSON at ``path`` and its labeling config beside it (``<stem>.xml``)."""
    pictures = dict(images(list(frame["index"]))) if images is not None else None
    if pictures is not None:
        missing = [int(i) for i in frame["index"] if int(i) not in pictures]
        if missing:
            raise ConfigError(
                f"--data has no image for index {missing[0]} ({len(missing)} rows); point --data "
                "at the data the table was audited on"
            )
    tasks = label_studio_tasks(frame, pictures)
    out = write_text(path, json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
    config = write_text(
        Path(path).with_suffix(".xml"), label_config(classes, image=pictures is not None)
    )
    return out, config
