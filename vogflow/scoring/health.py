"""Whether a stream's scores can be trusted: what each part saw (:class:`Health`), and the
whole-split refusals (:func:`check_health`) run once the parts are merged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vogflow.errors import ConfigError


def listed(idx: Sequence[int]) -> str:
    """Checkpoint positions as the user counts them: ``#1, #2``."""
    return ", ".join(f"#{i + 1}" for i in idx)


@dataclass
class Health:
    """What :func:`check_health` judges a stream by; parts of one split merge with :meth:`merge`.

    ``bad_inputs``/``bad_grads``: dataset indices with non-finite inputs or input gradients;
    ``moved``: any input gradient nonzero; ``scored[key]``: any ``vog_raw[key]`` nonzero.
    """

    examples: int
    bad_inputs: list[int]
    bad_grads: list[int]
    moved: bool
    scored: dict[str, bool]
    windows: dict[str, list[int]]

    @classmethod
    def merge(cls, parts: Sequence[Health]) -> Health:
        return cls(
            examples=sum(p.examples for p in parts),
            bad_inputs=[i for p in parts for i in p.bad_inputs],
            bad_grads=[i for p in parts for i in p.bad_grads],
            moved=any(p.moved for p in parts),
            scored={k: any(p.scored[k] for p in parts) for k in parts[0].scored},
            windows=parts[0].windows,
        )


def check_health(health: Health) -> None:
    """Refuse a split whose scores cannot be trusted: empty, non-finite inputs or gradients, no
    input gradient at all, or a window whose VoG is 0 everywhere
    (see :func:`vogflow.scoring.stream.extract`)."""
    if health.examples == 0:
        raise ConfigError("the split is empty: there are no examples to score")
    _raise_nonfinite("inputs", health.bad_inputs)
    _raise_nonfinite("input gradients", health.bad_grads)
    if not health.moved:
        raise ConfigError(
            "every input gradient is zero, for every example at every checkpoint: the model's "
            "output ignores its input, so every VoG would be 0 and the ranking mere index order; "
            "check that forward() uses its input and that the checkpoints hold trained weights"
        )
    for key, scored in health.scored.items():
        if not scored:
            window = key.rsplit("_", 1)[0]
            raise ConfigError(
                f"vog_{key} is 0 for every example: the {window!r} window's checkpoints "
                f"({listed(health.windows[window])}) give identical input gradients (only weights "
                "that do not shape them changed), so it ranks nothing; use checkpoints from "
                "other epochs"
            )


def _raise_nonfinite(what: str, rows: list[int]) -> None:
    """Fail naming every example (by row) whose inputs or gradients are not finite."""
    if rows:
        shown = ", ".join(map(str, rows[:20])) + (" ..." if len(rows) > 20 else "")
        raise ConfigError(
            f"non-finite {what} for {len(rows)} example(s), indices {shown}: "
            "check those inputs and the checkpoints' weights"
        )
