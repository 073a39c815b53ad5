"""The K checkpoints as the engine holds them: refused when they cannot give a trustworthy VoG
(:func:`check_models`), frozen in eval mode and placed on the device for one pass, every flag,
device and layout restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from vogflow.errors import ConfigError
from vogflow.scoring.health import listed
from vogflow.scoring.options import ExtractionOptions
from vogflow.scoring.vog import check_checkpoint_count

# Counts optimiser steps; never shapes the output, so it cannot make two checkpoints differ.
IGNORED_STATE = ("num_batches_tracked",)


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


def _in_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolution weights are already laid out channels-last."""
    return any(
        p.dim() == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous()
        for p in model.parameters()
    )


@contextlib.contextmanager
def placed(models: Sequence[nn.Module], dev: torch.device, channels_last: bool) -> Iterator[None]:
    """Models on ``dev`` (channels-last with ``channels_last``); the caller's models go back to
    their device and, if it was changed, their layout afterwards."""
    originals = [next(m.parameters()).device for m in models]
    layouts = [channels_last and _in_channels_last(m) for m in models]
    try:
        for model in models:
            if channels_last:
                model.to(dev, memory_format=torch.channels_last)
            else:
                model.to(dev)
        yield
    finally:
        for model, original, was_last in zip(models, originals, layouts, strict=True):
            if channels_last and not was_last:
                model.to(original, memory_format=torch.contiguous_format)
            else:
                model.to(original)


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


def _check_architecture(states: Sequence[Mapping[str, torch.Tensor]]) -> None:
    reference = {k: tuple(v.shape) for k, v in states[0].items()}
    for t, state in enumerate(states[1:], start=2):
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if shapes != reference:
            diff = sorted(set(shapes.items()) ^ set(reference.items()))[:3]
            raise ConfigError(
                f"checkpoint {t} has another architecture or class count than checkpoint 1 "
                f"(differing parameters: {diff})"
            )


def check_models(models: Sequence[nn.Module], options: ExtractionOptions) -> dict[str, list[int]]:
    """Refuse checkpoints that cannot give a trustworthy VoG; return each window's positions.

    Refused: fewer than 2, another architecture than the first, a window that does not fit
    (see ``vog.window_indices``), and the same weights at two positions (a window of copies
    scores 0 everywhere; a copy elsewhere adds a zero-spread term that lowers every VoG).
    """
    check_checkpoint_count(len(models), error=ConfigError)
    states = [model.state_dict() for model in models]
    _check_architecture(states)
    chosen = options.window_positions(len(models))
    groups = duplicate_checkpoints(states)
    for w, idx in chosen.items():
        if any(set(idx) <= set(group) for group in groups):
            raise ConfigError(
                f"every checkpoint of the {w!r} window ({listed(idx)}, counted from 1) holds "
                "the same weights, so its VoG would be 0 for every example; pass checkpoints "
                "saved at different points of training"
            )
    if groups:
        shown = ", ".join(" = ".join(f"#{i + 1}" for i in g) for g in groups)
        raise ConfigError(
            f"identical checkpoints {shown} (positions counted from 1): a copy adds a zero-spread "
            "term that lowers every VoG; pass each checkpoint once"
        )
    return chosen
