"""Streaming input-gradient extraction: K checkpoints, one pass over the data, raw VoG out.

Data-major: the K models sit on the device together; each batch gets all K input gradients of
the selected pre-softmax logit, which are reduced at once to per-example raw VoG for every window
and label mode. Memory is O(batch x K x pixels) whatever the dataset size; nothing per checkpoint
is written out. The same forward passes give each checkpoint's prediction, loss, margin, EL2N and
max softmax probability, so later analyses never rerun the models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from vogflow.extraction import STATS, Extraction
from vogflow.progress import Progress
from vogflow.runtime import resolve_device
from vogflow.vog import LABEL_MODES, WINDOWS, window_indices


class GradientError(ValueError):
    """Extraction cannot produce a trustworthy score (bad models, data or gradients)."""


@contextlib.contextmanager
def frozen_eval(models: Sequence[nn.Module]) -> Iterator[None]:
    """Models in ``eval()`` with parameters not requiring grad; every flag restored afterwards."""
    modes = [[m.training for m in model.modules()] for model in models]
    grads = [[p.requires_grad for p in model.parameters()] for model in models]
    try:
        for model in models:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
        yield
    finally:
        for model, mode, req in zip(models, modes, grads, strict=True):
            for module, was_training in zip(model.modules(), mode, strict=True):
                module.training = was_training
            for p, r in zip(model.parameters(), req, strict=True):
                p.requires_grad_(r)


def _check_models(models: Sequence[nn.Module]) -> None:
    if len(models) < 2:
        raise GradientError(f"VoG needs at least 2 checkpoints, got {len(models)}")
    reference = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
    for t, model in enumerate(models[1:], start=2):
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if shapes != reference:
            diff = sorted(set(shapes.items()) ^ set(reference.items()))[:3]
            raise GradientError(
                f"checkpoint {t} has another architecture or class count than checkpoint 1 "
                f"(differing parameters: {diff})"
            )


def _per_checkpoint_stats(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    logits = logits.float()
    log_probs = torch.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    given = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    one_hot = torch.nn.functional.one_hot(y, logits.shape[1]).to(probs.dtype)
    return {
        "pred": logits.argmax(1),
        "loss": -log_probs.gather(1, y[:, None])[:, 0],
        "margin": given - others.max(1).values,
        "el2n": (probs - one_hot).norm(dim=1),
        "msp": probs.max(1).values,
    }


def _reduce_pixels(grad: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H*W)``: the signed channel mean; point inputs ``(B, D)`` unchanged."""
    if grad.dim() == 4:
        grad = grad.mean(1)
    return grad.reshape(grad.shape[0], -1)


def _precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def extract(
    models: Sequence[nn.Module],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_examples: int,
    num_batches: int | None = None,
    windows: Sequence[str] = WINDOWS,
    window_size: int = 3,
    label_modes: Sequence[str] = LABEL_MODES,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    progress: bool = True,
) -> Extraction:
    """Raw VoG of every example for each window and label mode, in one streaming pass.

    Args:
        models: the ``K`` checkpoints of one run, in training order (the last is "final").
        batches: ``(x, y)`` tensors in dataset order, never shuffled or augmented; ``x`` as fed to
            the model (normalised), ``y`` the labels for ``label`` mode and the statistics.
        num_examples: how many examples the batches hold (the outputs are allocated once).
        windows, window_size: the checkpoints each score uses (see ``vog.window_indices``).
        label_modes: ``label`` (gradient of the given label's logit) and/or ``pred`` (of the class
            the final checkpoint predicts, at every checkpoint).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        precision: ``fp32``; ``tf32`` or ``bf16`` trade exactness for speed on a GPU.
    """
    _check_models(models)
    for mode in label_modes:
        if mode not in LABEL_MODES:
            raise GradientError(f"unknown label mode {mode!r}; valid: {', '.join(LABEL_MODES)}")
    k, n = len(models), int(num_examples)
    chosen = {w: window_indices(k, w, size=window_size) for w in windows}
    dev = resolve_device(device) if isinstance(device, str) else device
    # The final checkpoint goes first: its prediction is the target of `pred` mode everywhere.
    order = [k - 1, *range(k - 1)]
    # Outputs are allocated once, on the device, and filled slice by slice: no per-batch host
    # syncs, and no small per-batch tensors pinning heap memory (peak memory stays flat in N).
    stats = {s: torch.zeros(k, n, device=dev, dtype=torch.long if s == "pred" else torch.float32)
             for s in STATS}  # fmt: skip
    vog = {f"{w}_{m}": torch.zeros(n, device=dev) for w in windows for m in label_modes}
    labels = torch.zeros(n, dtype=torch.long, device=dev)
    preds = torch.zeros(n, dtype=torch.long, device=dev)
    bad_inputs = torch.zeros(n, dtype=torch.bool, device=dev)
    bad_grads = torch.zeros(n, dtype=torch.bool, device=dev)
    window_idx = {w: torch.as_tensor(idx, device=dev) for w, idx in chosen.items()}
    seen = 0
    originals = [next(m.parameters()).device for m in models]
    bar = Progress(num_batches or 0, "gradients", unit="batch", enabled=progress)
    try:
        for model in models:
            model.to(dev)
        with frozen_eval(models), _tf32(precision == "tf32"):
            for x, y in batches:
                x = x.to(dev, non_blocking=True).float()
                y = y.to(dev, non_blocking=True).long()
                b = len(x)
                if b == 0:
                    continue
                if seen + b > n:
                    raise GradientError(f"the batches hold more than num_examples={n} examples")
                rows = slice(seen, seen + b)
                bad_inputs[rows] = ~torch.isfinite(x.reshape(b, -1)).all(dim=1)
                maps = {m: torch.empty(0) for m in label_modes}
                final_pred = None
                for t in order:
                    xi = x.detach().requires_grad_(True)
                    with _precision_context(precision, dev):
                        logits = models[t](xi)
                    if logits.dim() != 2:
                        raise GradientError(f"model output must be (batch, classes), got "
                                            f"{tuple(logits.shape)}")  # fmt: skip
                    if t == k - 1:
                        _check_labels(y, logits.shape[1])
                        final_pred = logits.detach().argmax(1)
                    for name, value in _per_checkpoint_stats(logits.detach(), y).items():
                        stats[name][t, rows] = value
                    targets = {"label": y, "pred": final_pred}
                    for j, mode in enumerate(label_modes):
                        selected = logits.gather(1, targets[mode][:, None]).sum()
                        (grad,) = torch.autograd.grad(
                            selected, xi, retain_graph=j < len(label_modes) - 1
                        )
                        pixels = _reduce_pixels(grad.float())  # (B, P)
                        if t == order[0]:
                            maps[mode] = torch.empty(k, *pixels.shape, device=dev)
                        maps[mode][t] = pixels
                        bad_grads[rows] |= ~torch.isfinite(pixels).all(dim=1)
                for mode in label_modes:
                    for w, idx in window_idx.items():
                        # Population std per pixel (divide by K), then the mean over pixels.
                        # Shifting by the window's first map keeps identical checkpoints exactly
                        # 0; the explicit form is many times faster than `std` on the CPU.
                        part = maps[mode][idx] - maps[mode][idx[:1]]
                        spread = (part - part.mean(0)).square_().mean(0).sqrt_()
                        vog[f"{w}_{mode}"][rows] = spread.mean(dim=1)
                labels[rows] = y
                preds[rows] = final_pred
                seen += b
                bar.update()
    finally:
        bar.close()
        for model, original in zip(models, originals, strict=True):
            model.to(original)
    if seen == 0:
        raise GradientError("the split is empty: there are no examples to score")
    if seen != n:
        raise GradientError(f"the batches held {seen} examples, not num_examples={n}")
    _raise_nonfinite("inputs", torch.nonzero(bad_inputs)[:, 0].tolist())
    _raise_nonfinite("input gradients", torch.nonzero(bad_grads)[:, 0].tolist())
    return Extraction(
        label=labels.cpu().numpy(),
        pred=preds.cpu().numpy(),
        vog_raw={key: v.cpu().double().numpy() for key, v in vog.items()},
        stats={name: v.cpu().numpy() for name, v in stats.items()},
        windows={w: idx.tolist() for w, idx in chosen.items()},
    )


def _check_labels(y: torch.Tensor, n_classes: int) -> None:
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= n_classes:
        raise GradientError(
            f"labels range over [{low}, {high}] but the model has {n_classes} classes"
        )


def _raise_nonfinite(what: str, rows: list[int]) -> None:
    """Fail naming every example (by row) whose inputs or gradients are not finite."""
    if rows:
        shown = ", ".join(map(str, rows[:20])) + (" ..." if len(rows) > 20 else "")
        raise GradientError(
            f"non-finite {what} for {len(rows)} example(s), indices {shown}: "
            "check those inputs and the checkpoints' weights"
        )


def tensor_batches(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """In-order ``(x, y)`` batches of in-memory arrays (no copies beyond each batch)."""
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    pin = torch.cuda.is_available()
    for i in range(0, len(y), batch_size):
        xb = x[i : i + batch_size]
        yield (xb.pin_memory() if pin else xb), y[i : i + batch_size]
