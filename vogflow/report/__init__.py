"""The audit report: one self-contained HTML page a person reads to act on an audit.

``content`` turns a rankings table into the page's sections (label issues, the hardest and
easiest examples, the per-class summary); ``images`` loads the examples' pictures as inline PNG
data URIs; ``pipeline`` gathers a pipeline audit's files (claims, the scorecard's choice, OoD)
and ``page`` renders it all into one HTML file with inline CSS and no script, so the page opens
offline, from a mail attachment or MLflow's artifact viewer alike. No MLflow here.
"""

from vogflow.report.content import (
    LABEL_ISSUE_COLUMNS,
    NOT_ESTIMATED,
    Report,
    SplitSection,
    ranking,
    split_section,
)
from vogflow.report.page import render, write

__all__ = [
    "LABEL_ISSUE_COLUMNS",
    "NOT_ESTIMATED",
    "Report",
    "SplitSection",
    "render",
    "ranking",
    "split_section",
    "write",
]
