"""What the input gradient is taken with respect to, for each kind of input, and how it becomes the
per-example map ``(B, P)`` whose spread over checkpoints is VoG.

- Pixels and points (a tensor ``(B, C, H, W)`` or ``(B, D)``): the gradient w.r.t. the input
  itself, averaged over colour channels (signed); every position counts.
- Tokens (a mapping with ``input_ids`` and ``attention_mask``, as a Hugging Face tokenizer or
  collator gives it): the gradient w.r.t. the input embeddings, each checkpoint's own embedding of
  the ids, kept whole ``(L, E)``: each embedding coordinate of each token is one "pixel", and the
  VoG is the mean of their spreads over the real tokens (``attention_mask == 1``), so the amount
  of padding never changes a score.

Why the embedding dimension is not averaged like colour channels: most text encoders (BERT,
RoBERTa, DistilBERT, ELECTRA) feed the embeddings straight into a LayerNorm, which ignores a
constant added to every coordinate; the gradient w.r.t. its input then sums to exactly 0 over the
embedding dimension, and a signed mean there would be rounding noise for every token.

Models that read their output at the last real token (decoder classifiers: GPT-2, Llama,
Mistral, Qwen) find it from ``input_ids``, which an ``inputs_embeds`` forward does not pass: with
padding they would score a padding position. Whether a model's logits move with padding is tried
once per checkpoint on the batch's most padded row; a model whose logits do is run on each length
group of the batch without any padding instead (the same rows, the same gradients).

Torch only: the token kind needs nothing of ``transformers`` beyond the model's own
``get_input_embeddings()`` and ``forward(inputs_embeds=..., attention_mask=...)``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vogflow.errors import DataError

# Passed to the model beside the embeddings; anything else a collator leaves in a batch (labels,
# the raw text, lengths) is not an input of the forward pass.
TOKEN_KEYS = ("attention_mask", "token_type_ids")


class Pixels:
    """Tensors fed to the model as they are: images ``(B, C, H, W)`` or points ``(B, D)``."""

    def prepare(self, x: torch.Tensor, dev: torch.device, offset: int) -> torch.Tensor:
        return x.to(dev, non_blocking=True).float()

    def count(self, x: torch.Tensor) -> int:
        return len(x)

    def nonfinite(self, x: torch.Tensor) -> torch.Tensor:
        return ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)

    def take(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return x[rows]

    def leaf(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x.detach().requires_grad_(True)

    def forward(self, model: nn.Module, leaf: torch.Tensor, x: torch.Tensor) -> Any:
        return model(leaf)

    def reduce(self, grad: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, H*W)``: the signed channel mean; points ``(B, D)`` unchanged."""
        if grad.dim() == 4:
            grad = grad.mean(1)
        return grad.reshape(grad.shape[0], -1)

    def mask(self, x: torch.Tensor) -> None:
        return None


class Tokens:
    """Token ids with their attention mask; the gradient is taken w.r.t. the input embeddings."""

    def prepare(
        self, x: Mapping[str, Any], dev: torch.device, offset: int
    ) -> dict[str, torch.Tensor]:
        if "input_ids" not in x:
            raise DataError(
                f"a batch of token inputs has no 'input_ids' (keys: {', '.join(map(str, x))}); "
                "pass the tokenizer's output (input_ids, attention_mask)"
            )
        ids = torch.as_tensor(x["input_ids"])
        if ids.dim() != 2 or ids.is_floating_point():
            raise DataError(
                f"input_ids must be integer token ids of shape (batch, length), got "
                f"{tuple(ids.shape)} {ids.dtype}; pass the tokenizer's padded output"
            )
        batch = {"input_ids": ids.to(dev, non_blocking=True).long()}
        for key in TOKEN_KEYS:
            if key in x:
                batch[key] = torch.as_tensor(x[key]).to(dev, non_blocking=True).long()
        # Without a mask every position is a real token (nothing was padded).
        mask = batch.setdefault("attention_mask", torch.ones_like(batch["input_ids"]))
        if mask.shape != ids.shape:
            raise DataError(
                f"attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(ids.shape)}; "
                "pass both from the same tokenizer call"
            )
        empty = torch.nonzero(mask.sum(1) == 0)[:, 0]
        if len(empty):
            shown = ", ".join(str(offset + int(i)) for i in empty[:5])
            raise DataError(
                f"{len(empty)} example(s) have no token with attention_mask=1 (indices {shown}): "
                "there is no position to score; drop them or tokenise them again"
            )
        return batch

    def count(self, x: Mapping[str, torch.Tensor]) -> int:
        return len(x["input_ids"])

    def nonfinite(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # Token ids are integers; a bad embedding shows up as a non-finite gradient instead.
        return torch.zeros(len(x["input_ids"]), dtype=torch.bool, device=x["input_ids"].device)

    def take(self, x: Mapping[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[rows] for k, v in x.items()}

    def leaf(self, model: nn.Module, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        embed = getattr(model, "get_input_embeddings", None)
        table = embed() if callable(embed) else None
        if not isinstance(table, nn.Embedding):
            raise DataError(
                f"token inputs need a model with get_input_embeddings() returning its "
                f"nn.Embedding (a Hugging Face model); {type(model).__name__} has none"
            )
        ids = x["input_ids"]
        low, high = torch.aminmax(ids)
        low, high = int(low), int(high)
        if low < 0 or high >= table.num_embeddings:
            raise DataError(
                f"token ids range over [{low}, {high}] but the model embeds "
                f"{table.num_embeddings} ids; tokenise with the checkpoints' own tokenizer"
            )
        return table(ids).detach().requires_grad_(True)

    def forward(self, model: nn.Module, leaf: torch.Tensor, x: Mapping[str, torch.Tensor]) -> Any:
        extra = {k: v for k, v in x.items() if k in TOKEN_KEYS}
        mask = x["attention_mask"]
        if bool(mask.all()) or not _moves_with_padding(model, leaf, extra):
            return _logits(model(inputs_embeds=leaf, **extra))
        return _unpadded(model, leaf, extra)

    def reduce(self, grad: torch.Tensor) -> torch.Tensor:
        """``(B, L, E) -> (B, L*E)``: every coordinate kept (see the module docstring)."""
        return grad.reshape(grad.shape[0], -1)

    def mask(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, L)``: 1 at real tokens; each covers ``E`` consecutive columns of a map."""
        return x["attention_mask"].float()


def _logits(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


def _real_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's first real position and its number of real tokens, which must be one run
    (right or left padding)."""
    lengths = mask.sum(1)
    starts = mask.argmax(1)
    span = torch.arange(mask.shape[1], device=mask.device)
    run = (span >= starts[:, None]) & (span < (starts + lengths)[:, None])
    if not torch.equal(run, mask.bool()):
        raise DataError(
            "attention_mask has gaps inside a row: this model's output depends on padding, so "
            "each text must be one run of real tokens (pad on the right or on the left)"
        )
    return starts, lengths


def _trimmed(t: torch.Tensor, rows: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    # Advanced indexing keeps the autograd path from the gathered positions back to `t`.
    positions = start[:, None] + torch.arange(length, device=t.device)
    return t[rows[:, None], positions]


def _unpadded(
    model: nn.Module, leaf: torch.Tensor, extra: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Logits of every row with its padding cut off: one forward per length in the batch."""
    starts, lengths = _real_positions(extra["attention_mask"])
    parts, order = [], []
    for length in torch.unique(lengths).tolist():
        rows = torch.nonzero(lengths == length)[:, 0]
        start = starts[rows]
        inputs = {k: _trimmed(v, rows, start, length) for k, v in extra.items()}
        parts.append(_logits(model(inputs_embeds=_trimmed(leaf, rows, start, length), **inputs)))
        order.append(rows)
    logits = torch.cat(parts)
    return logits[torch.argsort(torch.cat(order))]


# model -> whether its logits change when its input is padded (tried once per model).
_PADDING_MOVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _moves_with_padding(
    model: nn.Module, leaf: torch.Tensor, extra: Mapping[str, torch.Tensor]
) -> bool:
    if model not in _PADDING_MOVES:
        mask = extra["attention_mask"]
        row = torch.argmin(mask.sum(1))[None]
        with torch.no_grad():
            padded = _logits(
                model(inputs_embeds=leaf[row], **{k: v[row] for k, v in extra.items()})
            )
            bare = _unpadded(model, leaf[row], {k: v[row] for k, v in extra.items()})
        _PADDING_MOVES[model] = not torch.allclose(padded, bare, rtol=1e-4, atol=1e-5)
    return _PADDING_MOVES[model]


PIXELS = Pixels()
TOKENS = Tokens()


def kind_of(x: Any) -> Pixels | Tokens:
    """Tokens for a mapping (a tokenizer's or collator's output), pixels for a tensor."""
    return TOKENS if isinstance(x, Mapping) else PIXELS
