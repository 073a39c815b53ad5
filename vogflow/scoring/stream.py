"""Streaming input-gradient extraction: K checkpoints, one pass over the data, raw VoG out.

Data-major: the K models sit on the device together; each batch gets all K input gradients of
the selected pre-softmax logit, which are reduced at once to per-example raw VoG for every window
and label mode. Memory is O(batch x K x pixels) whatever the dataset size; nothing per checkpoint
is written out. The same forward passes give each checkpoint's prediction, loss, margin, EL2N and
max softmax probability, so later analyses never rerun the models.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vogflow.common.progress import Progress
from vogflow.common.runtime import resolve_device
from vogflow.data.loaders import check_label_values
from vogflow.errors import ConfigError
from vogflow.scoring.inputs import Pixels, Tokens, kind_of
from vogflow.scoring.results import STATS, Extraction
from vogflow.scoring.vog import LABEL_MODES, WINDOWS, window_indices


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


PRECISIONS = ("fp32", "tf32", "bf16")
# Counts optimiser steps; never shapes the output, so it cannot make two checkpoints differ.
IGNORED_STATE = ("num_batches_tracked",)


def _fingerprint(state: Mapping[str, torch.Tensor]) -> bytes:
    # A few leading values of every tensor: equal fingerprints are confirmed by a full compare,
    # so this only has to be cheap (it runs on every extraction), not collision-free.
    parts = []
    for key, value in state.items():
        if not key.endswith(IGNORED_STATE):
            parts.append(key.encode())
            parts.append(value.detach().reshape(-1)[:64].float().cpu().numpy().tobytes())
    return b"\0".join(parts)


def _same_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.items() if not k.endswith(IGNORED_STATE))


def duplicate_checkpoints(states: Sequence[Mapping[str, torch.Tensor]]) -> list[list[int]]:
    """Groups of positions (0-based, in the given order) of checkpoints with identical weights.

    Each group has 2 or more members; an empty list means every checkpoint is distinct. BatchNorm's
    ``num_batches_tracked`` is ignored. Cost: a few values per tensor, plus a full comparison
    only between checkpoints whose leading values agree.
    """
    buckets: dict[bytes, list[int]] = {}
    for i, state in enumerate(states):
        buckets.setdefault(_fingerprint(state), []).append(i)
    groups = []
    for members in buckets.values():
        while len(members) > 1:
            first, rest = members[0], members[1:]
            same = [j for j in rest if _same_weights(states[first], states[j])]
            if same:
                groups.append([first, *same])
            members = [j for j in rest if j not in same]
    return sorted(groups)


def _positions(group: Sequence[int]) -> str:
    return " = ".join(f"#{i + 1}" for i in group)


def _listed(idx: Sequence[int]) -> str:
    return ", ".join(f"#{i + 1}" for i in idx)


def check_models(
    models: Sequence[nn.Module], *, windows: Sequence[str] = WINDOWS, window_size: int = 3
) -> dict[str, list[int]]:
    """Refuse checkpoints that cannot give a trustworthy VoG; return each window's positions.

    Refused: fewer than 2, another architecture than the first, a window that does not fit
    (see ``vog.window_indices``), and the same weights at two positions (a window of copies
    scores 0 everywhere; a copy elsewhere adds a zero-spread term that lowers every VoG).
    """
    if len(models) < 2:
        raise ConfigError(f"VoG needs at least 2 checkpoints, got {len(models)}")
    states = [model.state_dict() for model in models]
    reference = {k: tuple(v.shape) for k, v in states[0].items()}
    for t, state in enumerate(states[1:], start=2):
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if shapes != reference:
            diff = sorted(set(shapes.items()) ^ set(reference.items()))[:3]
            raise ConfigError(
                f"checkpoint {t} has another architecture or class count than checkpoint 1 "
                f"(differing parameters: {diff})"
            )
    if not windows:
        raise ConfigError("windows is empty; pass some of: " + ", ".join(WINDOWS))
    try:
        chosen = {w: window_indices(len(models), w, size=window_size).tolist() for w in windows}
    except ValueError as err:
        raise ConfigError(str(err)) from err
    groups = duplicate_checkpoints(states)
    for w, idx in chosen.items():
        if any(set(idx) <= set(group) for group in groups):
            raise ConfigError(
                f"every checkpoint of the {w!r} window ({_listed(idx)}, counted from 1) holds "
                "the same weights, so its VoG would be 0 for every example; pass checkpoints "
                "saved at different points of training"
            )
    if groups:
        shown = ", ".join(_positions(g) for g in groups)
        raise ConfigError(
            f"identical checkpoints {shown} (positions counted from 1): a copy adds a zero-spread "
            "term that lowers every VoG; pass each checkpoint once"
        )
    return chosen


def check_precision(precision: str, device: torch.device) -> str:
    """The precision extraction will run at on ``device``; bf16 on the CPU is refused.

    ``tf32`` is a GPU matmul mode: on the CPU it runs fp32 anyway, said with a warning.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: {precision!r} is unknown; valid: {', '.join(PRECISIONS)}")
    if device.type == "cuda" or precision == "fp32":
        return precision
    if precision == "bf16":
        raise ConfigError(
            f"precision: 'bf16' is refused on the {device.type} device (it rounds every gradient "
            "and gains no speed there); use precision='fp32' on the CPU, or a CUDA device"
        )
    warnings.warn(
        f"precision 'tf32' has no effect on the {device.type} device; running fp32",
        stacklevel=3,
    )
    return "fp32"


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


def _in_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolution weights are already laid out channels-last."""
    return any(
        p.dim() == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous()
        for p in model.parameters()
    )


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


def _logits(
    kind: Pixels | Tokens,
    model: nn.Module,
    leaf: torch.Tensor,
    x: Any,
    precision: str,
    dev: torch.device,
) -> torch.Tensor:
    with _precision_context(precision, dev):
        logits = kind.forward(model, leaf, x)
    if logits.dim() != 2:
        raise ConfigError(f"model output must be (batch, classes), got {tuple(logits.shape)}")
    if not logits.requires_grad:
        raise ConfigError(
            "the model's output is not differentiable w.r.t. its input "
            "(forward() detaches it or runs under no_grad), so there is no input "
            "gradient to take; remove the detach/no_grad from forward()"
        )
    return logits


def _input_grad(
    kind: Pixels | Tokens,
    logits: torch.Tensor,
    leaf: torch.Tensor,
    target: torch.Tensor,
    *,
    retain: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's gradient of its ``target`` logit w.r.t. its input (``leaf``): ``(B,)`` whether
    it is nonzero anywhere, and ``(B, P)`` its map (``kind.reduce``: the channel mean of an
    image, the embedding mean of each token).

    One backward for the whole batch: rows are independent in eval mode, so the gradient of the
    sum of the gathered logits is every row's own gradient.
    """
    selected = logits.gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(selected, leaf, retain_graph=retain)
    return grad.reshape(len(grad), -1).ne(0).any(dim=1), kind.reduce(grad.float())


def _window_vog(
    maps: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(K, B, P)`` maps -> ``(B,)`` raw VoG over the checkpoints ``idx``.

    Population std per pixel (divide by K), then the mean over pixels; with ``mask`` ``(B, L)``
    (token inputs: each of the ``L`` positions spans ``P / L`` consecutive columns, its embedding
    coordinates), the mean over the positions where the mask is 1 only, so padding never counts.
    Shifting by the window's first map keeps identical checkpoints exactly 0; the explicit form
    is many times faster than ``std`` on the CPU.
    """
    part = maps[idx] - maps[idx[:1]]
    spread = (part - part.mean(0)).square_().mean(0).sqrt_()
    if mask is None:
        return spread.mean(dim=1)
    per_token = spread.reshape(*mask.shape, -1).mean(dim=2)
    return (per_token * mask).sum(dim=1) / mask.sum(dim=1)


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
    input gradient at all, or a window whose VoG is 0 everywhere (see :func:`extract`)."""
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
                f"({_listed(health.windows[window])}) give identical input gradients (only weights "
                "that do not shape them changed), so it ranks nothing; use checkpoints from "
                "other epochs"
            )


def extract(
    models: Sequence[nn.Module],
    batches: Iterable[tuple[Any, torch.Tensor]],
    *,
    num_examples: int,
    num_batches: int | None = None,
    windows: Sequence[str] = WINDOWS,
    window_size: int = 3,
    label_modes: Sequence[str] = LABEL_MODES,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    channels_last: bool = False,
    progress: bool = True,
) -> Extraction:
    """Raw VoG of every example for each window and label mode, in one streaming pass.

    Args:
        models: the ``K`` checkpoints of one run, in training order (the last is "final").
        batches: ``(x, y)`` in dataset order, never shuffled or augmented; ``x`` a tensor as fed
            to the model (normalised), or a mapping of token ids (``input_ids``,
            ``attention_mask``; the gradient is then taken w.r.t. the input embeddings: see
            :mod:`vogflow.scoring.inputs`); ``y`` the labels for ``label`` mode and the statistics.
        num_examples: how many examples the batches hold (the outputs are allocated once).
        windows, window_size: the checkpoints each score uses (see ``vog.window_indices``).
        label_modes: ``label`` (gradient of the given label's logit) and/or ``pred`` (of the class
            the final checkpoint predicts, at every checkpoint). With both, ``pred`` costs a
            forward and backward of only the rows whose prediction is not their label: the rest
            are ``label``'s gradients, bit for bit.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
        precision: ``fp32``; ``tf32`` or ``bf16`` trade exactness for speed on a GPU (bf16 is
            refused on the CPU; tf32 there runs fp32 with a warning).
        channels_last: run image models and ``(N, C, H, W)`` batches in the channels-last memory
            layout, which cuDNN's fastest convolutions use on recent GPUs; the same values in
            another layout, so scores agree with the default to float rounding.

    Refused as degenerate (:class:`ConfigError`): see :func:`check_models`; labels that are
    not whole numbers; a model whose input gradients are all zero (its output ignores its
    input); a window whose VoG is 0 for every example.
    """
    extraction, health = stream(
        models,
        batches,
        num_examples=num_examples,
        num_batches=num_batches,
        windows=windows,
        window_size=window_size,
        label_modes=label_modes,
        device=device,
        precision=precision,
        channels_last=channels_last,
        progress=progress,
    )
    check_health(health)
    return extraction


def stream(
    models: Sequence[nn.Module],
    batches: Iterable[tuple[Any, torch.Tensor]],
    *,
    num_examples: int,
    num_batches: int | None = None,
    windows: Sequence[str] = WINDOWS,
    window_size: int = 3,
    label_modes: Sequence[str] = LABEL_MODES,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    channels_last: bool = False,
    progress: bool = True,
    offset: int = 0,
) -> tuple[Extraction, Health]:
    """:func:`extract` without the whole-split checks: one part of a split, and its health.

    ``offset``: the dataset index of the first example, so that messages and ``Health`` name
    dataset indices when the batches are a slice of the split (a shard). An empty part is fine.
    """
    check_label_modes(label_modes)
    chosen = check_models(models, windows=windows, window_size=window_size)
    k, n = len(models), int(num_examples)
    dev = resolve_device(device) if isinstance(device, str) else device
    precision = check_precision(precision, dev)
    # The final checkpoint goes first: its prediction is the target of `pred` mode everywhere.
    order = [k - 1, *range(k - 1)]
    # Outputs are allocated once, on the device, and filled slice by slice: no per-batch host
    # syncs, and no small per-batch tensors pinning heap memory (peak memory stays flat in N).
    stats = {
        s: torch.zeros(k, n, device=dev, dtype=torch.long if s == "pred" else torch.float32)
        for s in STATS
    }
    vog = {f"{w}_{m}": torch.zeros(n, device=dev) for w in windows for m in label_modes}
    # The softmax summed over checkpoints (allocated once the class count is known): its mean is
    # the evidence of the label-issue estimate, kept so it never needs the models again.
    prob_sum: torch.Tensor | None = None
    labels = torch.zeros(n, dtype=torch.long, device=dev)
    preds = torch.zeros(n, dtype=torch.long, device=dev)
    bad_inputs = torch.zeros(n, dtype=torch.bool, device=dev)
    bad_grads = torch.zeros(n, dtype=torch.bool, device=dev)
    moved = torch.zeros(n, dtype=torch.bool, device=dev)  # any nonzero input gradient
    window_idx = {w: torch.as_tensor(idx, device=dev) for w, idx in chosen.items()}
    # `pred` mode is `label` mode wherever the final checkpoint predicts the label (the same
    # logit, so the same gradient, bit for bit): with both modes, only the rows where the two
    # differ get a `pred` forward and backward, as one gathered sub-batch; the rest reuse
    # `label`'s. Where most rows differ (an untrained model), a second backward through the
    # batch's graph costs less than a sub-batch's forward and backward, so that is used instead.
    share = "label" in label_modes and "pred" in label_modes
    seen = 0
    originals = [next(m.parameters()).device for m in models]
    layouts = [channels_last and _in_channels_last(m) for m in models]
    bar = Progress(num_batches or 0, "gradients", unit="batch", enabled=progress)
    try:
        for model in models:
            if channels_last:
                model.to(dev, memory_format=torch.channels_last)
            else:
                model.to(dev)
        # enable_grad: a caller inside `torch.no_grad()` would otherwise get no input gradients.
        with frozen_eval(models), _tf32(precision == "tf32"), torch.enable_grad():
            for x, y in batches:
                y = torch.as_tensor(y)
                check_label_values(y, offset=offset + seen)
                kind = kind_of(x)
                x = kind.prepare(x, dev, offset + seen)
                if channels_last and torch.is_tensor(x) and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(dev, non_blocking=True).long()
                b = kind.count(x)
                if b == 0:
                    continue
                if seen + b > n:
                    raise ConfigError(f"the batches hold more than num_examples={n} examples")
                rows = slice(seen, seen + b)
                bad_inputs[rows] = kind.nonfinite(x)
                mask = kind.mask(x)
                maps = {m: torch.empty(0) for m in label_modes}
                final_pred, own, differ = None, list(label_modes), []
                for t in order:
                    xi = kind.leaf(models[t], x)
                    logits = _logits(kind, models[t], xi, x, precision, dev)
                    if t == k - 1:
                        _check_labels(y, logits.shape[1])
                        final_pred = logits.detach().argmax(1)
                        if share:
                            # One host sync per batch (the sub-batch's size), not per checkpoint.
                            differ = torch.nonzero(final_pred != y)[:, 0]
                            if 2 * len(differ) <= b:
                                own = ["label"]
                            else:
                                differ = []
                    for name, value in _per_checkpoint_stats(logits.detach(), y).items():
                        stats[name][t, rows] = value
                    if prob_sum is None:
                        prob_sum = torch.zeros(n, logits.shape[1], device=dev)
                    prob_sum[rows] += torch.softmax(logits.detach().float(), dim=1)
                    targets = {"label": y, "pred": final_pred}
                    for j, mode in enumerate(own):
                        nonzero, pixels = _input_grad(
                            kind, logits, xi, targets[mode], retain=j < len(own) - 1
                        )
                        if t == order[0]:
                            maps[mode] = torch.empty(k, *pixels.shape, device=dev)
                        maps[mode][t] = pixels
                        moved[rows] |= nonzero
                        bad_grads[rows] |= ~torch.isfinite(pixels).all(dim=1)
                    if len(differ):
                        sub = kind.take(x, differ)
                        xs = kind.leaf(models[t], sub)
                        sub_logits = _logits(kind, models[t], xs, sub, precision, dev)
                        nonzero, pixels = _input_grad(
                            kind, sub_logits, xs, final_pred[differ], retain=False
                        )
                        if t == order[0]:
                            maps["pred"] = torch.empty(k, *pixels.shape, device=dev)
                        maps["pred"][t] = pixels
                        at = differ + seen
                        moved[at] |= nonzero
                        bad_grads[at] |= ~torch.isfinite(pixels).all(dim=1)
                for mode in own:
                    for w, idx in window_idx.items():
                        vog[f"{w}_{mode}"][rows] = _window_vog(maps[mode], idx, mask)
                if share and "pred" not in own:
                    sub_mask = None if mask is None or not len(differ) else mask[differ]
                    for w, idx in window_idx.items():
                        vog[f"{w}_pred"][rows] = vog[f"{w}_label"][rows]
                        if len(differ):
                            vog[f"{w}_pred"][differ + seen] = _window_vog(
                                maps["pred"], idx, sub_mask
                            )
                labels[rows] = y
                preds[rows] = final_pred
                seen += b
                bar.update()
    finally:
        bar.close()
        for model, original, was_last in zip(models, originals, layouts, strict=True):
            # The caller's model goes back to its device and, if it was changed, its layout.
            if channels_last and not was_last:
                model.to(original, memory_format=torch.contiguous_format)
            else:
                model.to(original)
    if seen != n:
        raise ConfigError(f"the batches held {seen} examples, not num_examples={n}")
    extraction = Extraction(
        label=labels.cpu().numpy(),
        pred=preds.cpu().numpy(),
        vog_raw={key: v.cpu().double().numpy() for key, v in vog.items()},
        stats={name: v.cpu().numpy() for name, v in stats.items()},
        windows=chosen,
        probs=(prob_sum / k).cpu().numpy()
        if prob_sum is not None
        else np.zeros((0, 0), np.float32),
    )
    health = Health(
        examples=seen,
        bad_inputs=(torch.nonzero(bad_inputs)[:, 0] + offset).tolist(),
        bad_grads=(torch.nonzero(bad_grads)[:, 0] + offset).tolist(),
        moved=bool(moved.any()),
        scored={key: bool(v.any()) for key, v in vog.items()},
        windows=chosen,
    )
    return extraction, health


def check_label_modes(label_modes: Sequence[str]) -> None:
    """Refuse an empty, repeated or unknown label mode."""
    bad = [m for m in label_modes if m not in LABEL_MODES]
    if bad or not label_modes or len(set(label_modes)) != len(label_modes):
        raise ConfigError(
            f"label_modes: {list(label_modes)!r} is not allowed; pass a non-empty list without "
            f"repeats drawn from: {', '.join(LABEL_MODES)}"
        )


def _check_labels(y: torch.Tensor, n_classes: int) -> None:
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= n_classes:
        raise ConfigError(
            f"labels range over [{low}, {high}] but the model has {n_classes} classes"
        )


def _raise_nonfinite(what: str, rows: list[int]) -> None:
    """Fail naming every example (by row) whose inputs or gradients are not finite."""
    if rows:
        shown = ", ".join(map(str, rows[:20])) + (" ..." if len(rows) > 20 else "")
        raise ConfigError(
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
