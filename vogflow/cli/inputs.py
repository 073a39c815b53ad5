"""What ``vogflow audit`` reads: the checkpoints of ``--checkpoints`` (through the one resolver,
:func:`vogflow.checkpoints.sources.resolve`) and the examples of ``--data``, with the options that
apply to the data kind."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vogflow.errors import CheckpointError, ConfigError

DATA_KINDS = ("npz", "imagefolder", "text")
# Data kinds that hold one split per file: --split cannot choose among them.
ONE_SPLIT_KINDS = ("text",)
ORDER_NOTE = (
    "note: checkpoints are used in the order given, which differs from the numbers in "
    "their names; quote a glob (e.g. 'ckpts/*.pt') to sort them by number"
)


def _unmatched(items: Sequence[str]) -> str | None:
    """The first path or pattern of ``items`` that names nothing on disk (URIs aside)."""
    import glob

    from vogflow.checkpoints.local import RUNS_PREFIX, is_model_uri

    for item in items:
        if is_model_uri(item) or item.startswith(RUNS_PREFIX):
            continue
        if not glob.glob(item, recursive=True):
            return item
    return None


def resolve_checkpoints(items: Sequence[str]) -> tuple[Any, str | None]:
    """The checkpoint source of ``--checkpoints``, and a note when a given order looks unintended.

    A quoted glob or a folder is sorted by the number in the file names; several paths, or
    several ``models:/`` URIs, keep the order given. How few checkpoints are too few is the
    audit's to say (:func:`vogflow.api.check_audit`).
    """
    from vogflow.checkpoints import sources
    from vogflow.checkpoints.files import natural_sort

    try:
        source = sources.resolve(list(items))
    except CheckpointError as err:
        missing = _unmatched(items)
        if missing is None:
            raise
        # The shell passes an unmatched unquoted glob through as it is: the quoting hint helps.
        raise ConfigError(
            f"--checkpoints {missing!r} matches no file; check the path, and quote a pattern "
            "(e.g. 'ckpts/*.pt')"
        ) from err
    note = None
    if len(items) > 1 and source.kind == "files":
        given = [str(c.path) for c in source.checkpoints]
        if [str(p) for p in natural_sort(given)] != given:
            note = ORDER_NOTE
    return source, note


def parse_data(spec: str) -> tuple[str, str]:
    """``npz:PATH``, ``imagefolder:PATH`` or ``text:PATH`` -> ``(kind, path)``."""
    kind, sep, path = spec.partition(":")
    if not sep:
        raise ConfigError(
            f"--data {spec!r} names no kind; write npz:PATH (an .npz with x_train, y_train, "
            "x_test, y_test), imagefolder:PATH (PATH/{train,test}/<class>/*.png) or text:PATH "
            "(a .csv/.jsonl with text and label columns)"
        )
    if kind not in DATA_KINDS:
        raise ConfigError(
            f"--data {spec!r}: unknown data kind {kind!r}; valid kinds: {', '.join(DATA_KINDS)} "
            "(e.g. npz:data/mine.npz)"
        )
    if not path:
        raise ConfigError(f"--data {spec!r} gives no path; write {kind}:PATH")
    return kind, path


def check_text_options(args: argparse.Namespace, kind: str) -> None:
    """Refuse options that do not apply to the data kind, before any work."""
    if kind in ONE_SPLIT_KINDS and args.split is not None:
        raise ConfigError(
            f"--split {args.split}: a {kind}: file holds one split (the examples to rank); drop "
            "--split, or point --data at the split's file"
        )
    text_only = {
        "--tokenizer": args.tokenizer is not None,
        "--max-length": args.max_length is not None,
        "--text-column": args.text_column != "text",
        "--label-column": args.label_column != "label",
    }
    given = [name for name, set_ in text_only.items() if set_]
    if kind != "text" and given:
        raise ConfigError(f"{', '.join(given)} apply to --data text:PATH only; drop them")
    file_only = {"--stream": args.stream != "auto", "--workers": args.workers != 2}
    given = [name for name, set_ in file_only.items() if set_]
    if kind == "text" and given:
        raise ConfigError(f"{', '.join(given)} apply to npz:/imagefolder: data only; drop them")


def array_data(args: argparse.Namespace, kind: str, data_path: str, split: str, source: Any) -> Any:
    """One split of an ``npz``/``imagefolder`` dataset, as the model was fed
    (:class:`vogflow.data.user_split.UserSplit`)."""
    from vogflow.data.user_split import load_user_split

    # As loaded (images in [0, 1]), not standardised with the training split's statistics: the
    # user's model was trained on its own inputs, and vogflow.audit() on the same arrays agrees.
    # Except when the manifest records what the model was fed: the pipeline's runs (and a
    # recorder told so) trained on inputs standardised with these statistics.
    normalisation = (source.manifest or {}).get("normalisation")
    data = load_user_split(
        kind,
        data_path,
        split,
        normalisation=normalisation,
        stream_mode=args.stream,
        workers=args.workers,
    )
    if normalisation:
        print(
            f"inputs standardised with the manifest's mean {normalisation['mean']} and std "
            f"{normalisation['std']}"
        )
    if data.streamed:
        print(f"streaming {len(data.y)} {split} examples from disk ({args.workers} workers)")
    return data


def text_data(args: argparse.Namespace, data_path: str, source: Any, model: Any) -> Any:
    """The texts of ``--data text:PATH``, tokenised by ``--tokenizer`` or the tokenizer saved
    with the checkpoints (the final checkpoint's folder, then the output folder)."""
    from vogflow.data import text

    if args.tokenizer is not None:
        folder = Path(args.tokenizer)
    else:
        last = text.checkpoint_folders(source)[-1]
        folder = text.find_tokenizer([last, last.parent])
    print(f"tokenizer: {folder}")
    config = getattr(model, "config", None)
    # Never longer than the model's position embeddings, whatever the tokenizer allows.
    positions = text.position_limit(config)
    if args.max_length is not None and positions is not None and args.max_length > positions:
        raise ConfigError(
            f"--max-length {args.max_length}: the model embeds at most {positions} positions; "
            f"pass --max-length {positions} or less"
        )
    tokenizer = text.load_tokenizer(folder)
    limit = getattr(tokenizer, "model_max_length", None)
    limits = [
        v for v in (positions, limit, args.max_length) if isinstance(v, int) and v < text.NO_LIMIT
    ]
    return text.TextData.from_file(
        data_path,
        tokenizer,
        text_column=args.text_column,
        label_column=args.label_column,
        label2id=text.named_labels(config),
        max_length=min(limits) if limits else None,
    )
