"""Model architectures by name; input shape and class count always come from the dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vogflow.config.names import MODELS
from vogflow.config.sizes import check_model_fits
from vogflow.errors import ConfigError


class MLP(nn.Module):
    """One hidden layer (the paper's toy-problem model)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        in_features = 1
        for d in input_shape:
            in_features *= d
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet(nn.Module):
    """LeNet-5 with 'same' convolutions, so it fits 8x8 digits as well as 28x28 and 32x32 images."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"model.name: 'lenet' needs (C, H, W) images, got {input_shape}")
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 16 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    # The CIFAR stem: a 3x3 stride-1 convolution and no max-pool keep 32x32 inputs informative.
    model.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _resnet50(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    from torchvision.models import resnet50

    model = resnet50(weights=None, num_classes=num_classes)
    if input_shape[0] != 3:
        model.conv1 = nn.Conv2d(input_shape[0], 64, 7, stride=2, padding=3, bias=False)
    return model


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda shape, n, hidden=64: MLP(shape, n, hidden),
    "lenet": lambda shape, n, **_: LeNet(shape, n),
    "resnet18": lambda shape, n, **_: _resnet18(shape, n),
    "resnet50": lambda shape, n, **_: _resnet50(shape, n),
}
assert set(_BUILDERS) == set(MODELS)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Instantiate architecture ``name`` for ``input_shape`` inputs and ``num_classes`` outputs."""
    if name not in _BUILDERS:
        raise ConfigError(f"model.name: {name!r} is not allowed; valid: {', '.join(MODELS)}")
    if len(input_shape) not in (1, 3):
        raise ConfigError(f"input shape {input_shape}: expected (D,) points or (C, H, W) images")
    if name != "mlp" and len(input_shape) != 3:
        raise ConfigError(
            f"model.name: {name!r} needs (C, H, W) images but the data is {input_shape}; "
            "use 'mlp' for point data"
        )
    # A manifest or params asking for more than memory holds fail here in one line, not in the
    # allocator's traceback.
    check_model_fits(name, tuple(input_shape), int(num_classes), key=_size_key(name), **options)
    return _BUILDERS[name](tuple(input_shape), int(num_classes), **options)


def _size_key(name: str) -> str:
    return "model.hidden" if name == "mlp" else "model.name"


@torch.no_grad()
def penultimate_features(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Inputs of the model's last linear layer, ``(N, D)``, in eval mode (mode restored).

    The feature space of class-conditional Gaussian (Mahalanobis) OoD detection.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer to take features from")
    captured: list[torch.Tensor] = []
    hook = linears[-1].register_forward_hook(lambda _m, inp, _out: captured.append(inp[0].cpu()))
    was_training = model.training
    model.eval().to(device)
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(device))
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured).flatten(1)
