"""The parameters of the paper's own studies: the toy problem, the stability of rankings across
runs, memorization under shuffled labels, and out-of-distribution detection (corruptions and
detectors)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vogflow.config.bounds import check, check_positive, check_seed, check_subset, choice
from vogflow.config.names import SPLITS, WINDOWS

CORRUPTIONS = (
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)
DETECTORS = (
    "vog",
    "msp",
    "kde",
    "pca",
    "kpca",
    "svdd",
    "mve",
    "gaussian",
    "ae",
)


@dataclass(frozen=True)
class ToyConfig:
    n_points: int = 400
    separation: float = 3.0  # distance between the two cluster centres, in cluster stds
    hidden: int = 16
    epochs: int = 15
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0

    def validate(self, prefix: str) -> None:
        check(self.n_points >= 10, f"{prefix}.n_points", self.n_points, "an integer >= 10")
        check_positive(f"{prefix}.separation", self.separation)
        check(self.hidden >= 1, f"{prefix}.hidden", self.hidden, "an integer >= 1")
        # A checkpoint per epoch, and VoG is a spread over checkpoints.
        check(self.epochs >= 2, f"{prefix}.epochs", self.epochs, "an integer >= 2")
        check(self.batch_size >= 1, f"{prefix}.batch_size", self.batch_size, "an integer >= 1")
        check_positive(f"{prefix}.lr", self.lr)
        check_seed(f"{prefix}.seed", self.seed)


@dataclass(frozen=True)
class StabilityConfig:
    seed_runs: tuple[str, ...] = ("main", "seed1", "seed2", "seed3", "seed4")
    batch_runs: tuple[str, ...] = ("main", "bs32", "bs128", "bs256", "bs512")
    split: str = field(default="test", metadata=choice(*SPLITS))
    window: str = field(default="late", metadata=choice(*WINDOWS))
    top_fraction: float = 0.1

    def validate(self, prefix: str) -> None:
        for key in ("seed_runs", "batch_runs"):
            runs = getattr(self, key)
            # Stability is an agreement between runs: one run has nothing to agree with, and a
            # run listed twice agrees with itself perfectly.
            check(
                len(runs) >= 2 and len(set(runs)) == len(runs),
                f"{prefix}.{key}",
                list(runs),
                "at least 2 different run names",
            )
        check(
            0 < self.top_fraction < 1,
            f"{prefix}.top_fraction",
            self.top_fraction,
            "a share strictly between 0 and 1",
        )


@dataclass(frozen=True)
class MemorizationConfig:
    run: str = "shuffled"
    window: str = field(default="all", metadata=choice(*WINDOWS))

    def validate(self, prefix: str) -> None:
        pass


@dataclass(frozen=True)
class OodConfig:
    run: str = "main"
    corruptions: tuple[str, ...] = CORRUPTIONS
    detectors: tuple[str, ...] = DETECTORS
    n_examples: int = 300  # clean test examples (and as many corrupted) per corruption
    window: str = field(default="late", metadata=choice(*WINDOWS))
    seed: int = 0
    mnist_c_path: str = ""  # optional folder in the published MNIST-C layout

    def validate(self, prefix: str) -> None:
        check_subset(f"{prefix}.corruptions", self.corruptions, CORRUPTIONS)
        check_subset(f"{prefix}.detectors", self.detectors, DETECTORS)
        check(self.n_examples >= 10, f"{prefix}.n_examples", self.n_examples, "an integer >= 10")
        check_seed(f"{prefix}.seed", self.seed)
