"""Small random models and checkpoints, and VoG written out directly from the paper: what the
engine's results are checked against."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """A user-style model with BatchNorm and dropout (modes matter for gradients)."""

    def __init__(self, channels: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(5 * 6 * 6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(h.flatten(1)))


def perturbed_checkpoints(model: nn.Module, k: int, seed: int = 0) -> list[dict]:
    """K distinct state dicts: the model's weights plus seeded noise, BatchNorm stats varied too."""
    gen = torch.Generator().manual_seed(seed)
    states = []
    for _ in range(k):
        state = {}
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                noise = torch.randn(value.shape, generator=gen) * 0.3
                state[name] = value + noise if "running_var" not in name else value + noise.abs()
            else:
                state[name] = value.clone()
        states.append(state)
    return states


def models_from(factory, states: list[dict]) -> list[nn.Module]:
    models = []
    for state in states:
        m = factory()
        m.load_state_dict(state)
        models.append(m)
    return models


def direct_gradients(models: list[nn.Module], x: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """(K, N, C, H, W) logit gradients, one example and one checkpoint at a time, in eval mode."""
    out = []
    for model in models:
        model.eval()
        per_example = []
        for i in range(len(x)):
            xi = x[i : i + 1].clone().requires_grad_(True)
            logit = model(xi)[0, int(classes[i])]
            (g,) = torch.autograd.grad(logit, xi)
            per_example.append(g[0].double().numpy())
        out.append(np.stack(per_example))
    return np.stack(out)


def direct_vog(grads: np.ndarray) -> np.ndarray:
    """The paper's eqs. 2-4 written out with loops: channel mean, population std, pixel mean."""
    k, n = grads.shape[:2]
    scores = np.zeros(n)
    for i in range(n):
        maps = [grads[t, i].mean(axis=0) if grads.ndim == 5 else grads[t, i] for t in range(k)]
        mu = sum(maps) / k
        var = sum((s - mu) ** 2 for s in maps) / k
        scores[i] = np.sqrt(var).mean()
    return scores
