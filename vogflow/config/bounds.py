"""The bounds of single parameters, and the helpers every section validates with: seeds,
threads, devices, lists drawn from a set, the names ``vog.rank_by`` accepts.

Every error names the key, the bad value and what is allowed, and is raised before any work.
"""

from __future__ import annotations

import math
from typing import Any

from vogflow.config.names import BASELINES, LABEL_MODES, WINDOWS
from vogflow.errors import ConfigError

# Any score of the scorecard can rank the audit: a VoG variant (the configured normalisation,
# |z| or raw), a baseline from the same checkpoints, each alone or averaged over the seed runs.
SCORE_NAMES = frozenset(
    [f"{w}_{m}" for w in WINDOWS for m in LABEL_MODES]
    + [
        f"vog_{w}_{m}{kind}{mean}"
        for w in WINDOWS
        for m in LABEL_MODES
        for kind in ("", "_abs", "_raw")
        for mean in ("", "_seedmean")
    ]
    + [f"hard_{b}{mean}" for b in BASELINES for mean in ("", "_seedmean")]
)
RANK_BY_FORMS = (
    "'auto', <window>_<mode> (e.g. late_label), vog_<window>_<mode>[_abs|_raw][_seedmean] "
    f"(windows {'/'.join(WINDOWS)}, modes {'/'.join(LABEL_MODES)}) or "
    f"hard_<baseline>[_seedmean] (baselines {'/'.join(BASELINES)})"
)


def choice(*allowed: str) -> dict[str, Any]:
    """A field's metadata listing its allowed values (checked when the section is built)."""
    return {"choices": allowed}


def check(cond: bool, key: str, value: Any, allowed: str) -> None:
    """Refuse ``value`` of ``key`` unless ``cond``, saying what is ``allowed``."""
    if not cond:
        raise ConfigError(f"{key}: {value!r} is not allowed; expected {allowed}")


def check_positive(key: str, value: float) -> None:
    # `.inf` and `.nan` are valid YAML floats: a learning rate of inf passes `> 0`.
    check(math.isfinite(value) and value > 0, key, value, "a finite number > 0")


# torch's generators take a 64-bit seed and the seeds derived per epoch are 63-bit; numpy's
# generators refuse negative ones. Past either bound a stage fails after its outputs are gone.
MAX_SEED = 2**63 - 1
# Far above any CPU's core count, far below the operating system's thread limit, past which
# OpenMP crashes the process without a message.
MAX_THREADS = 1024


def check_seed(key: str, value: int) -> None:
    check(0 <= value <= MAX_SEED, key, value, f"an integer in [0, 2**63 - 1] ({MAX_SEED})")


def check_device(key: str, value: str) -> None:
    ok = value in ("auto", "cpu", "cuda") or value.startswith("cuda:")
    check(ok, key, value, "'auto', 'cpu', 'cuda' or 'cuda:N'")


def check_subset(key: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in allowed]
    check(
        not bad and len(values) > 0,
        key,
        list(values),
        f"a non-empty list drawn from: {', '.join(allowed)}",
    )
