"""The names every part agrees on: VoG windows, label modes, normalisations.

Apart from the equations (``vog.py``) so that reading a config or training a run does not depend
on the VoG math: editing an equation reruns the scoring, never the training.
"""

from __future__ import annotations

WINDOWS = ("early", "late", "all")
NORMALISATIONS = ("z", "none", "abs")
LABEL_MODES = ("label", "pred")
