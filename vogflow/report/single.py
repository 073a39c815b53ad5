"""The report of one ``vogflow audit`` table: a user's own model on a user's own data.

One training run and no planted noise: no claim of the paper is tested and no score's reliability
measured, so the page says which score it ranks by and why, and shows the rest.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from vogflow.report.content import Report, split_section
from vogflow.report.images import ImageSource

SINGLE_NOTE = (
    "One audit of one training run: no claim of the paper is tested here, and which score is "
    "reliable cannot be measured without seed reruns and planted noise; the pipeline's report "
    "(dvc repro report) has both."
)


def build(
    table: pd.DataFrame,
    *,
    where: str,
    split: str,
    data: str | None,
    images: ImageSource | None,
    score: str | None,
    k: int,
    commands: list[str],
) -> Report:
    section = split_section(
        table,
        split,
        score=score,
        k=k,
        class_names=images.class_names if images else None,
        images=images.uris if images else None,
        where=where,
    )
    facts: list[tuple[str, Any]] = [
        ("table", where),
        ("data", data or "not given: no images (pass --data)"),
        ("split", split),
        ("examples", str(len(table))),
        ("final-model error", f"{1 - table['correct'].astype(bool).mean():.3f}"),
    ]
    from vogflow.common.version import __version__

    facts.append(("vogflow", __version__))
    return Report(
        title=f"vogflow audit: {where}",
        facts=facts,
        splits=[section],
        commands=commands,
        choice={
            "score": section.rank_by,
            "where": section.rank_where,
            "reason": None,
            "numbers": [],
            "others": [],
        },
        notes=[SINGLE_NOTE],
    )
