"""The model an audit loads its checkpoints into: a factory (``package.module:factory``), a
torchvision model by name, the built-in architecture a manifest names, or, for text, the
classifier a Hugging Face checkpoint's ``config.json`` describes."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from vogflow.errors import ConfigError

TORCHVISION = "torchvision:"


def load_factory_model(spec: str) -> Any:
    """Import ``package.module:factory`` and call it with no arguments; returns the nn.Module."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"--model {spec!r} is not of the form package.module:factory; write e.g. "
            "--model mypkg.nets:build_model (a function returning the nn.Module)"
        )
    # A module in the current folder is importable without installing it; the folder goes
    # last, so that a stray pandas.py or torch.py there cannot shadow (and run instead of) the
    # installed packages that vogflow imports next.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"--model {spec!r}: cannot import {module_name!r} ({err}); install it, run from the "
            "folder that holds it, or add its folder to PYTHONPATH"
        ) from err
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            where = getattr(module, "__file__", None) or module_name
            raise ConfigError(
                f"--model {spec!r}: module {module_name!r} (from {where}) has no {attr!r}; name "
                "a function of that module that builds the model"
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise ConfigError(f"--model {spec!r}: {attr!r} is not callable; name a factory function")
    try:
        model = factory()
    except Exception as err:
        raise ConfigError(
            f"--model {spec!r}: calling {attr}() failed ({type(err).__name__}: {err}); the "
            "factory must build the model with no arguments"
        ) from err
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"--model {spec!r}: {attr}() returned {type(model).__name__}, not a torch.nn.Module; "
            "return the (untrained) model"
        )
    return model


def check_model_spec(spec: str | None, num_classes: int | None) -> None:
    """Refuse a malformed ``--model``/``--num-classes`` pair before any download or import."""
    if spec is not None and spec.startswith(TORCHVISION):
        if not spec[len(TORCHVISION) :]:
            raise ConfigError(
                f"--model {spec!r} names no model; write e.g. --model torchvision:resnet18"
            )
        return
    if num_classes is not None:
        what = f"--model {spec!r} builds its own model" if spec else "the manifest sets them"
        raise ConfigError(
            f"--num-classes applies to --model torchvision:<name> only ({what}); drop it"
        )


def build_torchvision(spec: str, num_classes: int | None, source: Any) -> Any:
    """``torchvision:<name>``: the torchvision classification model, untrained (weights=None)."""
    name = spec[len(TORCHVISION) :]
    if num_classes is None:
        num_classes = (source.manifest or {}).get("num_classes")
    if not num_classes:
        raise ConfigError(
            f"--model {spec!r} needs the number of classes: add --num-classes N (the size of "
            "the model's output layer the checkpoints were trained with)"
        )
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ConfigError(
            f"--model {spec!r}: torchvision has no classification model {name!r}; valid: "
            f"{', '.join(known[:12])}, ... (torchvision.models.list_models())"
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=int(num_classes))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"--model {spec!r}: torchvision cannot build it ({err})") from err


def resolve_model(spec: str | None, num_classes: int | None, source: Any) -> tuple[Any, str]:
    """The model to load the checkpoints into, and how it was made (for the record).

    A factory (``package.module:factory``), a torchvision model by name, or, without
    ``--model``, the built-in architecture the checkpoint folder's manifest names.
    """
    if spec is None:
        arch = source.builtin_architecture()
        if arch is None:
            if source.manifest is None:
                why = f"{source.where} has no manifest.json naming a built-in architecture"
            else:
                why = (
                    f"its manifest names {source.manifest.get('architecture')!r}, not a built-in "
                    "architecture"
                )
            raise ConfigError(
                f"--model is needed: {why}; pass --model package.module:factory or "
                "--model torchvision:<name> --num-classes N"
            )
        return source.build_model(), f"{arch} (from the manifest)"
    if spec.startswith(TORCHVISION):
        return build_torchvision(spec, num_classes, source), spec
    return load_factory_model(spec), spec


def text_model(spec: str | None, source: Any) -> tuple[Any, str]:
    """The sequence classifier of a text audit: the factory's, or one built from the final
    Hugging Face checkpoint folder's ``config.json`` (no weights downloaded)."""
    if spec is not None:
        if spec.startswith(TORCHVISION):
            raise ConfigError(f"--model {spec!r} builds an image model; text needs a text model")
        return load_factory_model(spec), spec
    from vogflow.data import text

    if source.kind != "huggingface":
        raise ConfigError(
            f"--model is needed: {source.where} is not a Hugging Face output folder "
            "(checkpoint-*/ with config.json); pass --model package.module:factory"
        )
    folder = text.checkpoint_folders(source)[-1]
    model = text.build_model(folder)
    return model, f"{type(model).__name__} (from {folder / text.CONFIG})"
