"""The names every part agrees on: VoG windows, label modes, normalisations, splits,
built-in models.

Apart from the equations (``vog.py``) so that reading a config or training a run does not depend
on the VoG math: editing an equation reruns the scoring, never the training.
"""

from __future__ import annotations

WINDOWS = ("early", "late", "all")
NORMALISATIONS = ("z", "none", "abs")
LABEL_MODES = ("label", "pred")
# Float precision of the gradient pass (fp32 exact; tf32 and bf16 only on a GPU).
PRECISIONS = ("fp32", "tf32", "bf16")
SPLITS = ("train", "test")
# The built-in models (vogflow.models.architectures builds them).
MODELS = ("mlp", "lenet", "resnet18", "resnet50")
# The hardness baselines scored from the same checkpoints (``hard_<name>`` columns).
BASELINES = (
    "loss",
    "margin",
    "el2n",
    "msp",
    "forgetting",
    "aum",
    "datamap_confidence",
    "datamap_variability",
    "disagree",
)


def window_problem(k: int, size: int) -> str | None:
    """Why early and late windows of ``size`` checkpoints, out of ``k``, would measure nothing of
    their own (None when they do): the one rule behind the audit's, the CLI's and the pipeline's
    refusal. With ``k <= size`` each holds every checkpoint, so early = late = all."""
    if k <= size:
        return (
            f"the early and late windows of {size} checkpoints would each hold all {k}, so the "
            "early, late and all windows would be the same checkpoints"
        )
    return None
