"""Text classification data for VoG, and the Hugging Face pieces that audit it.

:class:`TextData` holds texts and labels, tokenised once and padded per batch (right padding to the
batch's longest sequence): the extraction engine takes the gradient w.r.t. the input embeddings and
scores only real tokens (:mod:`vogflow.scoring.inputs`), so neither the batch nor the padding
changes a score. :func:`load_tokenizer` and :func:`build_model` rebuild a sequence classifier from a
checkpoint folder's ``config.json`` and tokenizer files, without downloading anything.

``transformers`` is imported inside the functions that need it, so ``import vogflow`` (and every
image audit) never pays for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vogflow.data.loaders import check_label_values
from vogflow.errors import DataError

HF_HINT = 'pip install -e ".[hf]"'
TEXT_SUFFIXES = (".csv", ".jsonl", ".json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
CONFIG = "config.json"
# Token inputs besides input_ids that a tokenizer may give and the model takes.
EXTRA_KEYS = ("token_type_ids",)
# Models whose position ids start after the padding id: the first pad_token_id + 1 rows of their
# position table are never a position (RoBERTa: 514 rows, 512 positions).
OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
     "data2vec-text", "xmod", "longformer", "ibert", "mpnet"}
)  # fmt: skip
# A tokenizer without a known limit reports a huge sentinel as its model_max_length.
NO_LIMIT = 1_000_000


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise DataError(f"text inputs need the transformers package: {HF_HINT}") from err
    return transformers


class TextData:
    """Texts and integer labels to audit, tokenised once with ``tokenizer``.

    Args:
        texts: one string per example (row ``i`` of the rankings table is ``texts[i]``).
        labels: class indices ``0..K-1``, one per text.
        tokenizer: a Hugging Face tokenizer (or a folder holding one: :func:`load_tokenizer`).
        max_length: truncate longer token sequences (default: the tokenizer's own limit).
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        tokenizer: Any,
        *,
        max_length: int | None = None,
    ) -> None:
        self.texts = [str(t) for t in texts]
        labels_t = torch.as_tensor(np.array(labels))  # a copy: pandas may hand a read-only view
        if len(labels_t) != len(self.texts):
            raise DataError(
                f"{len(self.texts)} texts but {len(labels_t)} labels; pass one label per text"
            )
        check_label_values(labels_t)
        self.labels = labels_t.long()
        if isinstance(tokenizer, str | Path):
            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        limit = getattr(tokenizer, "model_max_length", None)
        if max_length is None and isinstance(limit, int) and limit < NO_LIMIT:
            max_length = limit
        self.max_length = max_length
        encoded = tokenizer(self.texts, truncation=max_length is not None, max_length=max_length)
        self._ids = [list(ids) for ids in encoded["input_ids"]]
        self._extra = {k: [list(v) for v in encoded[k]] for k in EXTRA_KEYS if k in encoded}
        pad = getattr(tokenizer, "pad_token_id", None)
        # Padded positions are masked out of the model and of the score, so any id will do.
        self.pad_id = int(pad) if pad is not None else 0

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        tokenizer: Any,
        *,
        text_column: str = "text",
        label_column: str = "label",
        label2id: Mapping[str, int] | None = None,
        max_length: int | None = None,
    ) -> TextData:
        """The texts and labels of a ``.csv``, ``.jsonl`` or ``.json`` (records) file.

        Labels are class indices, or class names mapped through ``label2id`` (a model config's).
        """
        texts, labels = read_table(
            path, text_column=text_column, label_column=label_column, label2id=label2id
        )
        return cls(texts, labels, tokenizer, max_length=max_length)

    def batches(self, batch_size: int, rows: range | None = None) -> tuple[Any, int, int]:
        """``(batches, num_batches, num_examples)`` as :func:`vogflow.scoring.extract.batches_of`
        gives: ``({input_ids, attention_mask[, token_type_ids]}, labels)`` in order, each padded on
        the right to its own longest sequence. ``rows``: only that contiguous range (a shard)."""
        rows = range(len(self)) if rows is None else rows
        starts = range(rows.start, rows.stop, batch_size)

        def gen() -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
            for start in starts:
                stop = min(start + batch_size, rows.stop)
                yield self._padded(start, stop), self.labels[start:stop]

        return gen(), len(starts), len(rows)

    def _padded(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        ids = self._ids[start:stop]
        width = max(len(seq) for seq in ids)
        batch = {
            "input_ids": torch.full((len(ids), width), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros(len(ids), width, dtype=torch.long),
        }
        extra = {k: torch.zeros(len(ids), width, dtype=torch.long) for k in self._extra}
        for i, seq in enumerate(ids):
            batch["input_ids"][i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            batch["attention_mask"][i, : len(seq)] = 1
            for key, values in self._extra.items():
                extra[key][i, : len(seq)] = torch.as_tensor(values[start + i], dtype=torch.long)
        return {**batch, **extra}


def read_table(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label2id: Mapping[str, int] | None = None,
) -> tuple[list[str], np.ndarray]:
    """``(texts, labels)`` of a ``.csv``, ``.jsonl`` or ``.json`` file; labels as class indices."""
    import pandas as pd

    path = Path(path)
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(
            f"text data {str(path)!r}: unknown format {path.suffix or '(no suffix)'!r}; give a "
            f"{', '.join(TEXT_SUFFIXES)} file with {text_column!r} and {label_column!r} columns"
        )
    if not path.is_file():
        raise DataError(f"text data {str(path)!r} does not exist; check the path")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, keep_default_na=False)
        else:
            frame = pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
    except ValueError as err:  # pandas' parsers raise ValueError subclasses on a malformed file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"text data {str(path)!r} cannot be read ({first})") from err
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"text data {str(path)!r} has no column {', '.join(map(repr, missing))} (columns: "
            f"{', '.join(map(str, frame.columns))}); name the columns text and label, or pass "
            "text_column/label_column (--text-column/--label-column)"
        )
    if frame.empty:
        raise DataError(f"text data {str(path)!r} holds no rows")
    return frame[text_column].astype(str).tolist(), _class_indices(
        frame[label_column], label2id, where=f"{str(path)!r} column {label_column!r}"
    )


def _class_indices(column: Any, label2id: Mapping[str, int] | None, *, where: str) -> np.ndarray:
    values = column.to_numpy()
    if values.dtype.kind in "iuf":
        return values
    names = [str(v) for v in values]
    unknown = sorted(set(names) - set(label2id or {}))
    if unknown:
        known = ", ".join(sorted(label2id or {})) or "none"
        raise DataError(
            f"{where}: labels {', '.join(map(repr, unknown[:5]))} are not class indices and not "
            f"class names of the model (label2id: {known}); write the class indices 0..K-1"
        )
    return np.asarray([int(label2id[n]) for n in names], dtype=np.int64)


def named_labels(config: Any) -> dict[str, int] | None:
    """A model config's ``label2id`` when it names the classes (not the default ``LABEL_<i>``)."""
    mapping = dict(getattr(config, "label2id", None) or {})
    if not mapping or all(k == f"LABEL_{v}" for k, v in mapping.items()):
        return None
    return {str(k): int(v) for k, v in mapping.items()}


def has_tokenizer(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(folder: str | Path) -> Any:
    """The tokenizer saved in ``folder`` (``tokenizer.save_pretrained``), from local files only."""
    folder = Path(folder)
    if not has_tokenizer(folder):
        raise DataError(
            f"{str(folder)!r} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); pass "
            "the folder the tokenizer was saved to (--tokenizer FOLDER)"
        )
    transformers = _transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(
            f"the tokenizer in {str(folder)!r} cannot be loaded ({first}); save it again with "
            "tokenizer.save_pretrained(folder)"
        ) from err


def find_tokenizer(folders: Sequence[str | Path]) -> Path:
    """The first of ``folders`` that holds a tokenizer (for a Trainer's output: the final
    checkpoint's folder, then the output folder)."""
    for folder in folders:
        if has_tokenizer(folder):
            return Path(folder)
    shown = ", ".join(str(f) for f in folders)
    raise DataError(
        f"no tokenizer next to the checkpoints (looked in {shown}); pass --tokenizer FOLDER "
        "(a folder saved with tokenizer.save_pretrained)"
    )


def build_model(folder: str | Path) -> Any:
    """An untrained sequence classifier of the architecture ``folder/config.json`` describes
    (``AutoModelForSequenceClassification.from_config``: no weights are read or downloaded)."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise DataError(
            f"{str(folder)!r} has no {CONFIG}, so the model cannot be rebuilt; pass a Hugging "
            "Face checkpoint folder (save_pretrained writes it) or --model package.module:factory"
        )
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        return transformers.AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(
            f"{str(folder / CONFIG)!r} does not describe a sequence classifier ({first}); "
            "pass --model package.module:factory"
        ) from err


def checkpoint_folders(source: Any) -> list[Path]:
    """The folders of a Hugging Face source's checkpoints (``checkpoint-*/``), in order."""
    return [c.path.parent for c in source.checkpoints]


def position_limit(config: Any) -> int | None:
    """The most tokens the model's position embeddings take (None when its config does not say)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    if getattr(config, "model_type", None) in OFFSET_POSITIONS:
        positions -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return positions
