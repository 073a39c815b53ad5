"""One batch through the K checkpoints: each checkpoint's forward, statistics and input
gradients, reduced at once to the batch's raw VoG per window and label mode.

:class:`Outputs` holds a split's results, allocated once on the device and filled slice by slice;
:class:`BatchScorer` fills them one batch at a time (:mod:`vogflow.scoring.stream` runs the loop).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vogflow.data.loaders import check_label_values
from vogflow.errors import ConfigError
from vogflow.scoring.health import Health
from vogflow.scoring.inputs import Pixels, Tokens, kind_of
from vogflow.scoring.options import ExtractionOptions
from vogflow.scoring.results import STATS, Extraction


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


def _precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """CUDA's TF32 matmul and cuDNN modes set to ``enabled``, restored afterwards."""
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


def window_vog(
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


def _check_labels(y: torch.Tensor, n_classes: int) -> None:
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= n_classes:
        raise ConfigError(
            f"labels range over [{low}, {high}] but the model has {n_classes} classes"
        )


class Outputs:
    """A split's results, allocated once on the device and filled slice by slice: no per-batch
    host syncs, and no small per-batch tensors pinning heap memory (peak memory stays flat in N).
    """

    def __init__(self, k: int, n: int, keys: Sequence[str], dev: torch.device) -> None:
        self.k, self.n, self.dev = k, n, dev
        self.stats = {
            s: torch.zeros(k, n, device=dev, dtype=torch.long if s == "pred" else torch.float32)
            for s in STATS
        }
        self.vog = {key: torch.zeros(n, device=dev) for key in keys}
        # The softmax summed over checkpoints (allocated once the class count is known): its mean
        # is the evidence of the label-issue estimate, kept so it never needs the models again.
        self.prob_sum: torch.Tensor | None = None
        self.labels = torch.zeros(n, dtype=torch.long, device=dev)
        self.preds = torch.zeros(n, dtype=torch.long, device=dev)
        self.bad_inputs = torch.zeros(n, dtype=torch.bool, device=dev)
        self.bad_grads = torch.zeros(n, dtype=torch.bool, device=dev)
        self.moved = torch.zeros(n, dtype=torch.bool, device=dev)  # any nonzero input gradient

    def add_probs(self, rows: slice, logits: torch.Tensor) -> None:
        if self.prob_sum is None:
            self.prob_sum = torch.zeros(self.n, logits.shape[1], device=self.dev)
        self.prob_sum[rows] += torch.softmax(logits.detach().float(), dim=1)

    def mark(self, at: slice | torch.Tensor, nonzero: torch.Tensor, pixels: torch.Tensor) -> None:
        """Rows ``at`` had these input gradients: any nonzero, any non-finite."""
        self.moved[at] |= nonzero
        self.bad_grads[at] |= ~torch.isfinite(pixels).all(dim=1)

    def extraction(self, windows: dict[str, list[int]]) -> Extraction:
        return Extraction(
            label=self.labels.cpu().numpy(),
            pred=self.preds.cpu().numpy(),
            vog_raw={key: v.cpu().double().numpy() for key, v in self.vog.items()},
            stats={name: v.cpu().numpy() for name, v in self.stats.items()},
            windows=windows,
            probs=(self.prob_sum / self.k).cpu().numpy()
            if self.prob_sum is not None
            else np.zeros((0, 0), np.float32),
        )

    def health(self, seen: int, offset: int, windows: dict[str, list[int]]) -> Health:
        return Health(
            examples=seen,
            bad_inputs=(torch.nonzero(self.bad_inputs)[:, 0] + offset).tolist(),
            bad_grads=(torch.nonzero(self.bad_grads)[:, 0] + offset).tolist(),
            moved=bool(self.moved.any()),
            scored={key: bool(v.any()) for key, v in self.vog.items()},
            windows=windows,
        )


@dataclass
class _Batch:
    """One batch in flight: its inputs, rows and, once the final checkpoint has run, its targets.

    ``own``: the label modes that take their own gradients for every row; ``differ``: the rows
    (within the batch) whose ``pred`` gradients are taken as a sub-batch, the rest reusing
    ``label``'s.
    """

    kind: Pixels | Tokens
    x: Any
    y: torch.Tensor
    start: int
    size: int
    mask: torch.Tensor | None
    own: list[str]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    final_pred: torch.Tensor | None = None
    differ: Any = field(default_factory=list)

    @property
    def rows(self) -> slice:
        return slice(self.start, self.start + self.size)


class BatchScorer:
    """Scores batches into :class:`Outputs` with the ``K`` checkpoints already on ``dev``."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        options: ExtractionOptions,
        windows: dict[str, list[int]],
        *,
        num_examples: int,
        dev: torch.device,
        precision: str,
    ) -> None:
        self.models, self.options, self.dev, self.precision = models, options, dev, precision
        k = len(models)
        self.k, self.n = k, num_examples
        modes = options.label_modes
        self.out = Outputs(k, self.n, [f"{w}_{m}" for w in options.windows for m in modes], dev)
        # The final checkpoint goes first: its prediction is the target of `pred` mode everywhere.
        self.order = [k - 1, *range(k - 1)]
        self.window_idx = {w: torch.as_tensor(idx, device=dev) for w, idx in windows.items()}
        # `pred` mode is `label` mode wherever the final checkpoint predicts the label (the same
        # logit, so the same gradient, bit for bit): with both modes, only the rows where the two
        # differ get a `pred` forward and backward, as one gathered sub-batch; the rest reuse
        # `label`'s. Where most rows differ (an untrained model), a second backward through the
        # batch's graph costs less than a sub-batch's forward and backward, so that is used.
        self.share = "label" in modes and "pred" in modes

    def score(self, x: Any, y: Any, start: int, offset: int) -> int:
        """Score one batch whose first row is row ``start`` of the outputs (dataset index
        ``offset + start``); returns its size (0: an empty batch, skipped)."""
        y = torch.as_tensor(y)
        check_label_values(y, offset=offset + start)
        kind = kind_of(x)
        x = kind.prepare(x, self.dev, offset + start)
        if self.options.channels_last and torch.is_tensor(x) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.dev, non_blocking=True).long()
        b = kind.count(x)
        if b == 0:
            return 0
        if start + b > self.n:
            raise ConfigError(f"the batches hold more than num_examples={self.n} examples")
        batch = _Batch(kind, x, y, start, b, None, list(self.options.label_modes))
        self.out.bad_inputs[batch.rows] = kind.nonfinite(x)
        batch.mask = kind.mask(x)
        batch.maps = {m: torch.empty(0) for m in self.options.label_modes}
        for t in self.order:
            self._checkpoint(batch, t)
        self._window_scores(batch)
        self.out.labels[batch.rows] = y
        self.out.preds[batch.rows] = batch.final_pred
        return b

    def _checkpoint(self, batch: _Batch, t: int) -> None:
        """Checkpoint ``t``'s forward, statistics and input gradients of the batch."""
        model, rows = self.models[t], batch.rows
        xi = batch.kind.leaf(model, batch.x)
        logits = _logits(batch.kind, model, xi, batch.x, self.precision, self.dev)
        if t == self.k - 1:
            self._final(batch, logits)
        for name, value in _per_checkpoint_stats(logits.detach(), batch.y).items():
            self.out.stats[name][t, rows] = value
        self.out.add_probs(rows, logits)
        targets = {"label": batch.y, "pred": batch.final_pred}
        for j, mode in enumerate(batch.own):
            nonzero, pixels = _input_grad(
                batch.kind, logits, xi, targets[mode], retain=j < len(batch.own) - 1
            )
            self._store(batch, mode, t, pixels)
            self.out.mark(rows, nonzero, pixels)
        if len(batch.differ):
            differ = batch.differ
            sub = batch.kind.take(batch.x, differ)
            xs = batch.kind.leaf(model, sub)
            sub_logits = _logits(batch.kind, model, xs, sub, self.precision, self.dev)
            nonzero, pixels = _input_grad(
                batch.kind, sub_logits, xs, batch.final_pred[differ], retain=False
            )
            self._store(batch, "pred", t, pixels)
            self.out.mark(differ + batch.start, nonzero, pixels)

    def _final(self, batch: _Batch, logits: torch.Tensor) -> None:
        """The final checkpoint's prediction, and which rows need their own ``pred`` gradients."""
        _check_labels(batch.y, logits.shape[1])
        batch.final_pred = logits.detach().argmax(1)
        if self.share:
            # One host sync per batch (the sub-batch's size), not per checkpoint.
            differ = torch.nonzero(batch.final_pred != batch.y)[:, 0]
            if 2 * len(differ) <= batch.size:
                batch.own, batch.differ = ["label"], differ

    def _store(self, batch: _Batch, mode: str, t: int, pixels: torch.Tensor) -> None:
        if t == self.order[0]:
            batch.maps[mode] = torch.empty(self.k, *pixels.shape, device=self.dev)
        batch.maps[mode][t] = pixels

    def _window_scores(self, batch: _Batch) -> None:
        """The batch's raw VoG per window and label mode from its ``(K, B, P)`` maps."""
        vog, rows, mask, differ = self.out.vog, batch.rows, batch.mask, batch.differ
        for mode in batch.own:
            for w, idx in self.window_idx.items():
                vog[f"{w}_{mode}"][rows] = window_vog(batch.maps[mode], idx, mask)
        if not self.share or "pred" in batch.own:
            return
        sub_mask = None if mask is None or not len(differ) else mask[differ]
        for w, idx in self.window_idx.items():
            vog[f"{w}_pred"][rows] = vog[f"{w}_label"][rows]
            if len(differ):
                vog[f"{w}_pred"][differ + batch.start] = window_vog(
                    batch.maps["pred"], idx, sub_mask
                )
