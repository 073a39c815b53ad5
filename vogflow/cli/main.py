"""The ``vogflow`` command line: audit your own model, compare two audits, list the hardest ones.

Each command lives in one function; heavy libraries (torch, mlflow, pandas, matplotlib) are imported
inside it, so ``vogflow --help`` answers at once. A bad value on the command line, or an error the
engine raises about the user's inputs, ends with one line naming the value and the fix, and exit
code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vogflow.errors import ConfigError, VogflowError

PROG = "vogflow"
DATA_KINDS = ("npz", "imagefolder", "text")
# Data kinds that hold one split per file: --split cannot choose among them.
ONE_SPLIT_KINDS = ("text",)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
TORCHVISION = "torchvision:"


# Errors that describe the user's inputs (not a bug): shown as one line, exit code 2. Matched by
# name so that catching them does not import torch or mlflow.
# ---------------------------------------------------------------------------------------------
# audit


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


def resolve_checkpoints(items: Sequence[str]) -> tuple[Any, str | None]:
    """The checkpoint source of ``--checkpoints``, and a note when a given order looks unintended.

    One ``runs:/`` URI, vogflow checkpoint folder (manifest.json) or Hugging Face output folder,
    or ``models:/`` URIs (one checkpoint each), are resolved by :mod:`vogflow.checkpoints.sources`;
    globs,
    plain folders and file lists as before.
    """
    from vogflow.checkpoints import sources

    if any(map(sources.is_model_uri, items)):
        # One checkpoint per models:/ URI: several of them, in the order given.
        source, note = sources.resolve(items), None
    elif len(items) == 1 and sources.is_source(items[0]):
        source, note = sources.resolve(items[0]), None
    else:
        paths, note = checkpoint_paths(items)
        source = sources.resolve(paths)
    if len(source.checkpoints) < 2:
        source.close()
        raise ConfigError(
            f"--checkpoints: found {len(source.checkpoints)} checkpoint "
            f"({', '.join(source.names)}); VoG is a spread over training and needs at least 2; "
            "pass a glob, several files or several models:/ URIs"
        )
    return source, note


def _stream_mode(value: str) -> bool | str:
    modes = {"auto": "auto", "true": True, "false": False}
    if value.lower() not in modes:
        raise argparse.ArgumentTypeError(f"{value!r} is not allowed; valid: auto, true, false")
    return modes[value.lower()]


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def checkpoint_paths(items: Sequence[str]) -> tuple[list[Path], str | None]:
    """Checkpoint files in training order, and a note when a given order looks unintended.

    One glob (quoted, so the shell does not expand it) or one folder: its files sorted by the
    number in the name (``epoch_2`` before ``epoch_10``). Several paths: the order given.
    """
    from vogflow.checkpoints.files import natural_sort

    paths: list[Path] = []
    for item in items:
        if _has_magic(item):
            found = [p for p in glob.glob(item, recursive=True) if Path(p).is_file()]
            if not found:
                raise ConfigError(
                    f"--checkpoints {item!r} matches no file; check the pattern and quote it "
                    "(e.g. 'ckpts/*.pt')"
                )
            paths += natural_sort(found)
        elif Path(item).is_dir():
            found = [p for p in Path(item).iterdir() if p.suffix in CHECKPOINT_SUFFIXES]
            if not found:
                raise ConfigError(
                    f"--checkpoints {item!r} is a folder with no {'/'.join(CHECKPOINT_SUFFIXES)} "
                    "files; point it at the checkpoints (e.g. 'ckpts/*.pt')"
                )
            paths += natural_sort(found)
        elif not Path(item).is_file():
            raise ConfigError(f"--checkpoints: {item!r} does not exist; check the path")
        else:
            paths.append(Path(item))
    if len(paths) < 2:
        raise ConfigError(
            f"--checkpoints: found {len(paths)} checkpoint ({', '.join(map(str, paths))}); VoG is "
            "a spread over training and needs at least 2; pass a glob or several files"
        )
    note = None
    if len(items) > 1 and [str(p) for p in natural_sort(paths)] != [str(p) for p in paths]:
        note = (
            "note: checkpoints are used in the order given, which differs from the numbers in "
            "their names; quote a glob (e.g. 'ckpts/*.pt') to sort them by number"
        )
    return paths, note


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


def _hardest(table: Any, column: str, k: int) -> Any:
    from vogflow.rankings.table import top_bottom

    top = top_bottom(table, column, k)
    return top[top["end"] == "hardest"].drop(columns="end").head(k)


def print_table(frame: Any) -> None:
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


OUT_SUFFIXES = (".parquet", ".csv")


def check_out_file(value: str, suffixes: Sequence[str] = OUT_SUFFIXES) -> Path:
    """``--out``: a path ending in one of ``suffixes`` (a .parquet or .csv table by default) whose
    folder takes files (created if missing), checked before any work."""
    import tempfile

    out = Path(value)
    what = "table " if suffixes == OUT_SUFFIXES else ""
    if out.suffix.lower() not in suffixes:
        raise ConfigError(
            f"--out {value!r}: unknown {what}format "
            f"{out.suffix or '(no suffix)'!r}; end the "
            f"name with {' or '.join(suffixes)}"
        )
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"--out {value!r}: cannot create the folder {str(folder)!r} ({err.strerror or err}); "
            "choose a writable folder"
        ) from err
    if out.is_dir():
        raise ConfigError(f"--out {value!r} is a folder; name the {what}file inside it")
    # A real write (not os.access): it also catches read-only mounts and holds as root.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"--out {value!r}: cannot write to the folder {str(folder)!r} ({err.strerror or err}); "
            "choose a writable folder"
        ) from err
    return out


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


def cmd_audit(args: argparse.Namespace) -> int:
    import os

    if args.processes > 1 and "WORLD_SIZE" not in os.environ:
        from vogflow.parallel import launch as procgroup

        check_out_file(args.out)  # before starting N interpreters
        return procgroup.run_processes(args.processes, "vogflow.cli", args.argv)
    if _peer_rank():
        # Rank 0 prints and writes; a peer's lines would repeat them N times.
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return _cmd_audit(args)
    return _cmd_audit(args)


def _peer_rank() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) != 0


def _rank0_reports(err: BaseException) -> bool:
    """Whether rank 0 says this peer's failure, having waited until it has (see procgroup):
    a failure settled between the ranks, or a refusal every rank meets alike (the same
    arguments). False if rank 0 was not refused: the peer then says its own."""
    from vogflow.parallel import launch as procgroup

    chain = [err, err.__cause__] if err.__cause__ is not None else [err]
    if any(procgroup.reported_by_rank0(e) for e in chain):
        procgroup.outlive_rank0()
        return True
    procgroup.await_rank0_report()
    return False


def _cmd_audit(args: argparse.Namespace) -> int:
    out_path = check_out_file(args.out)
    kind, data_path = parse_data(args.data)
    check_text_options(args, kind)
    if kind != "text":
        check_model_spec(args.model, args.num_classes)
    elif args.num_classes is not None:
        raise ConfigError("--num-classes applies to --model torchvision:<name> only; drop it")
    source, note = resolve_checkpoints(args.checkpoints)
    try:
        return _audit(args, out_path, kind, data_path, source, note)
    finally:
        source.close()


def _audit(
    args: argparse.Namespace, out_path: Path, kind: str, data_path: str, source: Any, note: Any
) -> int:
    n = len(source.checkpoints)
    print(f"checkpoints ({n}, in training order; the last is the final model):")
    for i, name in enumerate(source.names, 1):
        print(f"  {i:>3}  {name}")
    if note:
        print(note)
    if not source.complete:
        print(f"note: {source.where}: its manifest says training has not finished ({n} so far)")
    from vogflow import tracking

    track = args.track and tracking.enabled()
    if args.track and not track:
        print("tracking is off (VOGFLOW_TRACKING=off): the audit is not logged to MLflow")
    if track:
        # Fail before the heavy work when the store cannot take the result.
        tracking.check_reachable(tracking.tracking_uri())
    if kind == "text":
        model, model_name = text_model(args.model, source)
    else:
        model, model_name = resolve_model(args.model, args.num_classes, source)
    if args.model is None:
        print(f"model: {model_name}")

    from vogflow.api import audit
    from vogflow.checkpoints import sources
    from vogflow.rankings.table import write_csv, write_parquet

    items = source.for_audit()
    sources.check_fit(model, items, source.names)
    split = Path(data_path).name if kind in ONE_SPLIT_KINDS else args.split or "test"
    paths = None
    if kind == "text":
        data = text_data(args, data_path, source, model)
        inputs = f"{len(data)} texts"
    else:
        arrays = array_data(args, kind, data_path, split, source)
        paths = arrays.paths
        inputs = f"inputs of shape {arrays.input_shape}"
        data = (arrays.x, arrays.y)
        if arrays.streamed:
            from vogflow.data.loaders import sequential

            data = sequential(arrays.x, arrays.y, batch_size=args.batch_size)
    try:
        table = audit(
            model,
            items,
            data,
            windows=args.windows,
            window_size=args.window_size,
            normalise=args.normalise,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            channels_last=args.channels_last,
            progress=not args.quiet,
        )
        if table is None:  # a peer rank under --processes/torchrun: rank 0 holds the table
            return 0
    except RuntimeError as err:  # RunError included: the model failed on the data
        from vogflow.parallel.launch import lost_contact

        if lost_contact(err):
            raise
        text = str(err).strip()
        first = getattr(err, "first", "") or (text.splitlines() or [""])[0]
        first = first or type(err).__name__
        raise ConfigError(
            f"the model failed on the {split} {inputs} ({first}); check that --model builds "
            "the architecture the checkpoints and --data were made for"
        ) from err
    if paths is not None:  # an image folder: where each example's file is, beside its index
        from vogflow.rankings.table import PATH_COLUMN

        table.insert(1, PATH_COLUMN, list(paths))
    write = write_csv if out_path.suffix.lower() == ".csv" else write_parquet
    out = write(table, out_path)
    error = float(1 - table["correct"].mean())
    print(
        f"audited {len(table)} {split} examples of {args.data} with {n} "
        f"checkpoints; final-model error {error:.3f}"
    )
    print(f"wrote {out} ({len(table)} rows, {len(table.columns)} columns)")
    if track:
        run_id = tracking.log_audit(
            table,
            params={
                "model": model_name,
                "checkpoints": ",".join(c.short for c in source.checkpoints),
                "data": {"name": kind, "path": str(Path(data_path).resolve())},
                "split": split,
                "window_size": args.window_size,
                "normalise": args.normalise,
            },
            run_name="audit",
            experiment=args.experiment,
        )
        print(f"logged to MLflow: run {run_id} ({tracking.tracking_uri()})")
    from vogflow.rankings import choice as rank_choice

    ranking = rank_choice.resolve(table, where=str(out))
    if args.show > 0:
        print(f"\n{ranking.line()}")
        print(f"hardest {min(args.show, len(table))} by {ranking.name} (rank 1 = hardest):")
        print_table(_hardest(ranking.ranked(table), ranking.name, args.show))
    flagged = int(table["label_issue"].sum())
    print(
        f"\nlabel issues: {flagged} of {len(table)} labels probably wrong (column label_issue, "
        "with suggested_label, suggested_label_prob and label_prob as the evidence)"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# compare


def cmd_compare(args: argparse.Namespace) -> int:
    from vogflow.cli.compare import run_compare

    return run_compare(args)


# ---------------------------------------------------------------------------------------------
# top


SPLITS = ("train", "test")


def read_table_file(value: str) -> Any:
    """A local rankings table (.parquet or .csv); anything else is one line naming the file."""
    import pandas as pd

    from vogflow.rankings.table import BASE_COLUMNS

    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{value!r}: no such file; give a rankings .parquet file or an audit")
    try:
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as err:  # pyarrow and pandas raise many types for a file that is not one
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"{value!r} cannot be read as a {path.suffix.lstrip('.')} table ({first}); give a "
            "rankings table written by `vogflow audit` or the score stage"
        ) from err
    missing = [c for c in BASE_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(
            f"{value!r} is not a rankings table (missing columns {', '.join(missing)}); give a "
            "table written by `vogflow audit` or the score stage"
        )
    return table


def _file_split(value: str, asked: str | None) -> str | None:
    """The split a local table holds, from its name (``<split>.parquet``, as the pipeline writes).

    A table does not record its split, so ``--split`` can only confirm the name, never relabel it.
    """
    named = Path(value).stem if Path(value).stem in SPLITS else None
    if asked is not None and asked != named:
        holds = f"holds the {named} split" if named else "does not say which split it holds"
        raise ConfigError(
            f"--split {asked}: {value!r} {holds}, and a table file is one split; drop --split "
            "(it selects a split of an audit in MLflow)"
        )
    return named


def audit_table(audit: str, split: str | None, run: str | None) -> tuple[Any, str, str | None]:
    """``(table, where, split)`` of AUDIT: a local table file (its split named by the file, which
    ``split`` may only confirm) or an audit in MLflow (``split``, default test)."""
    if audit.lower().endswith((".parquet", ".csv")):
        return read_table_file(audit), audit, _file_split(audit, split)
    from vogflow import tracking

    split = split or "test"
    ref = tracking.resolve_audit(audit, run=run)
    return tracking.read_rankings(ref, split), ref.describe(), split


def cmd_top(args: argparse.Namespace) -> int:
    from vogflow.rankings import choice as rank_choice

    seeds: Any = None
    if args.audit.lower().endswith((".parquet", ".csv")):
        split = _file_split(args.audit, args.split)
        table, where = read_table_file(args.audit), args.audit
    else:
        from vogflow import tracking

        split = args.split or "test"
        ref = tracking.resolve_audit(args.audit, run=args.run)
        table, where = tracking.read_rankings(ref, split), ref.describe()
        if args.score and args.score.endswith(rank_choice.SEEDMEAN):
            seeds = tracking.seed_rankings(ref, split)
    ranking = rank_choice.resolve(table, args.score, seed_tables=seeds, where=where)
    print(f"{where}: {f'{split} split, ' if split else ''}{len(table)} examples")
    print(ranking.line())
    print(f"hardest {min(args.k, len(table))} by {ranking.name} (rank 1 = hardest):")
    print_table(_hardest(ranking.ranked(table), ranking.name, args.k))
    return 0


# ---------------------------------------------------------------------------------------------
# report, export


IMAGE_DATA = "npz:PATH, imagefolder:PATH or params:PARAMS_YAML (the pipeline's dataset)"


def parse_image_data(spec: str | None) -> tuple[str, str] | None:
    """``--data`` of report/export: where the examples' pictures are (None: not given)."""
    if spec is None:
        return None
    from vogflow.report.images import IMAGE_KINDS

    kind, sep, path = spec.partition(":")
    if not sep or kind not in IMAGE_KINDS or not path:
        raise ConfigError(f"--data {spec!r}: write {IMAGE_DATA}, the data the table was audited on")
    if not Path(path).exists():
        raise ConfigError(f"--data {spec!r}: {path!r} does not exist; check the path")
    return kind, path


def _table_split(audit: str, asked: str | None) -> str | None:
    """A table file's split: its name (train.parquet), else ``--split``; they must agree."""
    named = Path(audit).stem if Path(audit).stem in SPLITS else None
    if named and asked and asked != named:
        raise ConfigError(
            f"--split {asked}: {audit!r} holds the {named} split by its name; drop --split or "
            "give the table of that split"
        )
    return named or asked


def load_audit_with_images(args: argparse.Namespace) -> tuple[Any, str, str, Any]:
    """``(table, where, split, images)`` for report/export: the table of AUDIT, and the pictures
    of the split it was audited on (None without --data or for tabular data), checked to match."""
    data = parse_image_data(args.data)
    is_file = args.audit.lower().endswith((".parquet", ".csv"))
    split = _table_split(args.audit, args.split) if is_file else args.split
    table, where, _ = audit_table(args.audit, None if is_file else split, args.run)
    split = split or "test"
    images = None
    if data is not None:
        from vogflow.report.images import load

        images = load(*data, split)
        if images is not None and images.n != len(table):
            raise ConfigError(
                f"--data {args.data!r}: its {split} split has {images.n} examples but "
                f"{where} has {len(table)} rows; give the data and --split the table was "
                "audited on"
            )
    return table, where, split, images


def cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from vogflow.report import write
    from vogflow.report.single import build

    out = check_out_file(args.out, (".html", ".htm"))
    table, where, split, images = load_audit_with_images(args)
    data = f" --data {shlex.quote(args.data)}" if args.data else ""
    commands = [
        "vogflow " + shlex.join(args.argv),
        f"vogflow export {shlex.quote(args.audit)}{data} --split {split} "
        "--format label-studio --out relabel.json",
    ]
    report = build(
        table,
        where=where,
        split=split,
        data=args.data,
        images=images,
        score=args.score,
        k=args.k,
        commands=commands,
    )
    path = write(report, out)
    issues = report.splits[0].issues
    found = "not estimated" if issues is None else str(report.splits[0].issues_total)
    print(
        f"wrote {path}: {len(table)} {split} examples, ranked by {report.splits[0].rank_by}, "
        f"label issues {found}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vogflow.report import export

    suffix = (".csv",) if args.format == "csv" else (".json",)
    out = check_out_file(args.out, suffix)
    table, where, split, images = load_audit_with_images(args)
    rows, column, name = export.select(table, score=args.score, k=args.k, where=where)
    if args.format == "label-studio" and images is None and "text" not in table.columns:
        given = (
            f"--data {args.data!r} holds no pictures (tabular features)"
            if args.data
            else (f"pass --data {IMAGE_DATA}")
        )
        raise ConfigError(
            f"--format label-studio shows each example to an annotator: {given}; or export "
            "--format csv"
        )
    names = images.class_names if images is not None else None
    frame = export.records(rows, column, name, n=len(table), class_names=names)
    what = "label issues" if column is None else f"hardest by {name}"
    if args.format == "csv":
        from vogflow.rankings.table import write_csv

        path = write_csv(frame, out)
        print(f"wrote {path}: {len(frame)} {what} of {where} ({split})")
        return 0
    from vogflow.report.content import class_name

    labels = sorted({int(v) for v in table["label"]} | {int(v) for v in table["pred"]})
    count = len(names) if names is not None else max(labels) + 1
    classes = [class_name(i, names) for i in range(count)]
    tasks, config = export.write_label_studio(
        frame, out, classes=classes, images=images.uris if images is not None else None
    )
    print(f"wrote {tasks}: {len(frame)} Label Studio tasks ({what} of {where}, {split})")
    print(f"wrote {config}: the labeling config to import them with")
    return 0


# ---------------------------------------------------------------------------------------------
# parser


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative; give 0 or more")
    return number


def _windows(value: str) -> tuple[str, ...]:
    from vogflow.config.names import WINDOWS

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in WINDOWS]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected a comma-separated list without repeats of {', '.join(WINDOWS)}"
        )
    return names


def _window(value: str) -> int:
    number = int(value)
    if number < 2:
        raise argparse.ArgumentTypeError(
            f"{value!r}: a window needs at least 2 checkpoints (VoG is a spread)"
        )
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not strictly between 0 and 1")
    return number


MAIN_DESCRIPTION = """\
Rank every example of a classification dataset by difficulty with Variance of
Gradients (VoG): the spread of the input gradient of the class logit across
training checkpoints. Higher VoG = harder (atypical, ambiguous or mislabeled).
The full audit is a DVC pipeline (`dvc repro`) logged to MLflow; these commands
audit your own model and read audits back from MLflow."""

MAIN_EPILOG = """\
examples:
  vogflow audit --model mynets:build --checkpoints 'ckpts/*.pt' --data npz:data.npz \\
      --out rankings.parquet
  vogflow top models:/vogflow-main/3 -k 25
  vogflow compare models:/vogflow-main/2 models:/vogflow-main/3
  vogflow report rankings.parquet --data npz:data.npz --out report.html
  vogflow export rankings.parquet --data npz:data.npz --format label-studio \\
      --out relabel/tasks.json

Run `vogflow <command> --help` for each command's options. The MLflow store is
MLFLOW_TRACKING_URI, else mlflow.db at the project root."""

AUDIT_DESCRIPTION = """\
Audit your own model: import the factory (package.module:factory, called with no
arguments, must return the nn.Module), load each checkpoint into a copy of it in
training order (a quoted glob or a folder is sorted by the number in the file
name: epoch_2 before epoch_10; several paths are used in the order given),
compute VoG of every example of the chosen split for the early, late and all
windows in both label modes, class-normalise it, and write the rankings table
(one row per example, dataset order) atomically to --out (.parquet, or .csv; its
folder is checked before any work). The inputs go to the model as loaded (uint8
scaled to [0, 1], float kept), not standardised: as vogflow.audit() on the same
arrays. Prints the checkpoint order it used and the hardest examples.
Checkpoints are plain state_dicts (also under model / state_dict /
model_state_dict); they are loaded without running code.

Where checkpoints already are: a vogflow checkpoint folder (manifest.json, from
the pipeline or vogflow.checkpoints.recorder.CheckpointRecorder: the manifest's order, each
file checked against its sha256; --model may be left out for a built-in
architecture, and inputs are standardised as the manifest records), an MLflow
runs:/<run_id>/<path> folder (runs:/<run_id> alone: checkpoints/, else the
checkpoints a recorder logged as models of the run), MLflow models, one
checkpoint each (models:/<name>/<version>, models:/<name>@<alias>,
models:/<model_id>, several in training order; an exported .pt2 model is
refused: loading it can run pickled code), a Hugging Face output folder
(checkpoint-*/ with model.safetensors; needs `pip install safetensors`), or
Lightning .ckpt files (their state_dict, less a model. prefix). --model
torchvision:<name> builds an untrained torchvision model (weights=None) with
--num-classes outputs.

Image folders and .npz archives too large for memory stream from disk (--stream,
--workers: the same scores), and the table of an image folder carries each
example's file path. --processes N shares the extraction among N torchrun
processes (one GPU each on a GPU machine) with the table of one process.

Text: --data text:PATH (a .csv or .jsonl with text and label columns; labels are
class indices or the class names of the model's config) with Hugging Face
checkpoints: the model is built from the final checkpoint's config.json (or
--model), the tokenizer read from that folder, the output folder or --tokenizer.
VoG is taken w.r.t. the input embeddings, over real tokens only (padding never
counts); the table gets a text column."""

AUDIT_EPILOG = """\
examples:
  vogflow audit --model mynets:build --checkpoints 'ckpts/*.pt' \\
      --data npz:data/mine.npz --split test --out rankings.parquet
  vogflow audit --model mypkg.models:resnet18_10 --checkpoints ckpts/ \\
      --data imagefolder:data/images --split train --out train.parquet --track
  vogflow audit --model mynets:build --checkpoints e1.pt e5.pt e9.pt \\
      --data npz:data.npz --out r.parquet --window-size 2 --normalise abs
  vogflow audit --checkpoints runs/main/checkpoints --data npz:data.npz \\
      --out r.parquet
  vogflow audit --model torchvision:resnet18 --num-classes 10 \\
      --checkpoints runs:/3f2a9c.../checkpoints --data npz:cifar.npz --out r.csv
  vogflow audit --model mynets:build --checkpoints models:/mynet/1 models:/mynet/2 \\
      models:/mynet/3 --data npz:data.npz --out r.parquet
  vogflow audit --checkpoints out/ --data text:dev.csv --out dev.parquet

data kinds: npz:PATH (arrays x_train, y_train, x_test, y_test; images uint8 or
float in [0, 1], or tabular features (N, D) of any scale), imagefolder:PATH
(PATH/{train,test}/<class>/*.png|jpg) and text:PATH (one split: .csv or .jsonl
with text and label columns)."""

COMPARE_DESCRIPTION = """\
Compare the audits of two model versions on the same data. A and B are
registered model versions (models:/<name>/<version>, models:/<name>@<alias>,
models:/<name>/latest) or MLflow run ids of audits (a parent audit run, or a
child score run). Both rankings tables are read from the audits' MLflow
artifacts, aligned by example index (different sizes or labels fail), and
compared: Spearman and Kendall correlation of the score, overlap (Jaccard) of
the hardest 10%, each audit's error per VoG decile, and the examples whose rank
moved most. The result is printed and logged as a new MLflow run (tag
vogflow.kind=compare) with the JSON report, the movers CSV and the figures; the
movers grid is drawn when the audit's dataset can be loaded, skipped otherwise."""

COMPARE_EPILOG = """\
examples:
  vogflow compare models:/vogflow-main/1 models:/vogflow-main/2
  vogflow compare models:/vogflow-main@champion models:/vogflow-main/latest \\
      --split train --score all_pred
  vogflow compare 3f2a9c... 9b71e0... --run seed1 --out compare/"""

TOP_DESCRIPTION = """\
Print the hardest examples of an audit: the k highest scores of one split, rank 1
= hardest, with each example's index, label, prediction and score. AUDIT is a
registered model version (models:/<name>/<version> or @<alias>), an audit run id,
a child score run id, or a local rankings table (.parquet or .csv). --split picks
a split of an audit in MLflow; a table file holds one split, named by the file
(train.parquet, test.parquet), and --split may only confirm it."""

TOP_EPILOG = """\
examples:
  vogflow top models:/vogflow-main/3
  vogflow top 3f2a9c... --split train -k 50 --score early_label --run seed1
  vogflow top rankings.parquet -k 10"""


REPORT_DESCRIPTION = """\
Write the report of one audit table as a single self-contained HTML page (inline
images and style, no script, no network): what was audited, the score it is
ranked by and why, the label issues with their pictures, given and suggested
label, the hardest and easiest examples, a per-class summary, and the commands
that reproduce it. AUDIT is a rankings table (.parquet or .csv, as `vogflow
audit` writes it) or an audit in MLflow (as for `vogflow top`). --data gives the
examples' pictures: the data the table was audited on, and --split the split
(a file named train.parquet or test.parquet names its own). The pipeline writes
its own report (`dvc repro report`: results/report/index.html)."""

REPORT_EPILOG = """\
examples:
  vogflow report rankings.parquet --data npz:data/mine.npz --split test --out report.html
  vogflow report results/ranking/train.parquet --data params:params.yaml --out train.html
  vogflow report models:/vogflow-main/3 --split train --data params:params.yaml"""

EXPORT_DESCRIPTION = """\
Export examples for relabeling: the label issues of an audit table (default: the
rows with label_issue, the most doubtful given label first; -k keeps the first
k), or with --score the k highest of any score (default 25). --format csv writes
index, path (image folders), given label, suggested label, score and evidence;
--format label-studio writes Label Studio tasks JSON (each picture inline as a
PNG data URI in data.image, the given label pre-selected as a prediction, the
suggestion as a second one) and, beside it, the labeling config (.xml) to create
the project with. AUDIT, --data and --split as for `vogflow report`."""

EXPORT_EPILOG = """\
examples:
  vogflow export rankings.parquet --out label_issues.csv
  vogflow export rankings.parquet --data npz:data/mine.npz --split test \\
      --format label-studio --out relabel/tasks.json
  vogflow export results/ranking/train.parquet --score hard_loss -k 50 --out top50.csv"""


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG, description=MAIN_DESCRIPTION, epilog=MAIN_EPILOG, formatter_class=fmt
    )
    from vogflow import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    p = sub.add_parser(
        "audit",
        help="rank your own model's data by VoG from its checkpoints",
        description=AUDIT_DESCRIPTION,
        epilog=AUDIT_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="MODULE:FACTORY",
        help="factory building the model (mypkg.nets:build), or torchvision:<name> with "
        "--num-classes; optional for a checkpoint folder of a built-in architecture",
    )
    p.add_argument(
        "--num-classes",
        type=_positive,
        default=None,
        metavar="N",
        help="output classes of a --model torchvision:<name> (default: the manifest's)",
    )
    p.add_argument(
        "--checkpoints",
        required=True,
        nargs="+",
        metavar="PATH",
        help="a quoted glob, a folder (a vogflow checkpoint folder with manifest.json, a Hugging "
        "Face output folder of checkpoint-*/), runs:/<run_id>[/<path>], or files or models:/ "
        "URIs in training order",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="KIND:PATH",
        help="npz:PATH, imagefolder:PATH or text:PATH (.csv/.jsonl with text and label columns)",
    )
    p.add_argument(
        "--split",
        default=None,
        choices=("train", "test"),
        help="split of an npz/imagefolder dataset to rank (default: test)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="FOLDER",
        help="text: the tokenizer's folder (default: the one saved with the checkpoints)",
    )
    p.add_argument(
        "--max-length",
        type=_positive,
        default=None,
        metavar="N",
        help="text: truncate texts to N tokens (default: the model's and tokenizer's limit)",
    )
    p.add_argument("--text-column", default="text", help="text: the column of the texts")
    p.add_argument("--label-column", default="label", help="text: the column of the labels")
    p.add_argument(
        "--out", required=True, help="rankings table to write (.parquet, or .csv for a text table)"
    )
    p.add_argument("--track", action="store_true", help="also log the audit to MLflow")
    p.add_argument("--experiment", default="vogflow", help="MLflow experiment (with --track)")
    p.add_argument("--batch-size", type=_positive, default=256, help="examples per batch")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "tf32", "bf16"),
        help="fp32 (default, exact); tf32 or bf16 trade exactness for speed on a GPU",
    )
    p.add_argument(
        "--stream",
        default="auto",
        type=_stream_mode,
        metavar="{auto,true,false}",
        help="npz/imagefolder: read batches from disk (true), load into memory (false), or auto "
        "(default: stream only what would not comfortably fit in memory; the same scores)",
    )
    p.add_argument(
        "--workers",
        type=_non_negative,
        default=2,
        metavar="N",
        help="processes decoding streamed examples (default: 2; 0 = in the main process)",
    )
    p.add_argument(
        "--processes",
        type=_positive,
        default=1,
        metavar="N",
        help="processes sharing the extraction (torchrun, contiguous rows; one GPU each on a "
        "GPU machine); the same table as one process",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="image models and batches in the channels-last layout (faster on recent GPUs)",
    )
    p.add_argument(
        "--window-size",
        type=_window,
        default=3,
        help="checkpoints in the early and late windows (default: 3)",
    )
    p.add_argument(
        "--windows",
        type=_windows,
        default=("early", "late", "all"),
        help="comma-separated windows to score (default: early,late,all); 'all' alone for runs "
        "with no more checkpoints than --window-size, where early = late = all",
    )
    p.add_argument(
        "--normalise",
        default="z",
        choices=("z", "abs", "none"),
        help="class normalisation: signed z-score (default), |z| or none",
    )
    p.add_argument(
        "--show", type=_non_negative, default=10, help="hardest examples to print (default: 10)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "compare",
        help="compare the audits of two model versions",
        description=COMPARE_DESCRIPTION,
        epilog=COMPARE_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("a", metavar="A", help="models:/<name>/<version|@alias> or an audit run id")
    p.add_argument("b", metavar="B", help="the same for the other audit")
    p.add_argument("--split", default="test", help="split to compare (default: test)")
    p.add_argument(
        "--run",
        default=None,
        help="training run inside each audit (default: the registered one, main)",
    )
    p.add_argument(
        "--score",
        default=None,
        help="any score column or scorecard name, e.g. hard_aum, late_label (default: A's "
        "ranking, the audit's choice)",
    )
    p.add_argument(
        "--top-fraction",
        type=_fraction,
        default=0.1,
        help="hardest share whose overlap is measured (default: 0.1)",
    )
    p.add_argument(
        "--movers",
        type=_positive,
        default=25,
        help="examples that moved most to report (default: 25)",
    )
    p.add_argument("--show", type=_non_negative, default=10, help="movers to print (default: 10)")
    p.add_argument(
        "--n-boot",
        type=_non_negative,
        default=200,
        help="bootstrap resamples for the decile intervals (default: 200)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--out", default=None, help="also keep the report files in this folder")
    p.add_argument(
        "--no-images", action="store_true", help="do not load the dataset for the movers grid"
    )
    p.add_argument(
        "--experiment",
        default="vogflow",
        help="MLflow experiment of the compare run (default: vogflow)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "top",
        help="print the hardest examples of an audit",
        description=TOP_DESCRIPTION,
        epilog=TOP_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("audit", metavar="AUDIT", help="models:/... URI, run id or .parquet file")
    p.add_argument(
        "--split",
        default=None,
        choices=SPLITS,
        help="split of an audit in MLflow (default: test); a table file is the split in its name",
    )
    p.add_argument("-k", type=_positive, default=25, help="how many (default: 25)")
    p.add_argument(
        "--score",
        default=None,
        help="any score column or scorecard name, e.g. hard_aum, late_label, hard_aum_seedmean "
        "(default: the audit's ranking; a single run's table: the single-run default)",
    )
    p.add_argument("--run", default=None, help="training run inside the audit (default: main)")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser(
        "report",
        help="write an audit's report: one self-contained HTML page",
        description=REPORT_DESCRIPTION,
        epilog=REPORT_EPILOG,
        formatter_class=fmt,
    )
    _audit_source_options(p)
    p.add_argument("-k", type=_positive, default=12, help="hardest and easiest shown (default: 12)")
    p.add_argument("--score", default=None, help="score to rank by (default: the table's ranking)")
    p.add_argument("--out", default="report.html", help="the page to write (default: report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export",
        help="export label issues (or the top k of a score) for relabeling",
        description=EXPORT_DESCRIPTION,
        epilog=EXPORT_EPILOG,
        formatter_class=fmt,
    )
    _audit_source_options(p)
    p.add_argument(
        "--score", default=None, help="export the k highest of this score instead of label issues"
    )
    p.add_argument(
        "-k", type=_positive, default=None, help="how many (default: every label issue, or 25)"
    )
    p.add_argument("--format", default="csv", choices=("csv", "label-studio"))
    p.add_argument("--out", required=True, help="file to write (.csv, or .json for label-studio)")
    p.set_defaults(func=cmd_export)
    return parser


def _audit_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("audit", metavar="AUDIT", help="rankings .parquet/.csv, models:/... or run id")
    p.add_argument("--data", default=None, metavar="KIND:PATH", help=f"the pictures: {IMAGE_DATA}")
    p.add_argument(
        "--split",
        default=None,
        choices=SPLITS,
        help="split the table holds (default: the file's name, else test)",
    )
    p.add_argument(
        "--run", default=None, help="training run inside an MLflow audit (default: main)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``vogflow`` command; returns the exit code (2 = bad input, with a one-line why)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        args.argv = argv
    except SystemExit as exit_:  # --help, --version, or argparse's own usage error
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); stop quietly instead of a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except VogflowError as err:
        if _peer_rank() and _rank0_reports(err):  # rank 0 says it, in one line for all ranks
            return 2
        message = " ".join(str(err).split())
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        import os

        from vogflow.parallel.launch import lost_contact

        # Another rank went away without a word (killed): the launcher names it and the signal.
        if "WORLD_SIZE" in os.environ and lost_contact(err):
            from vogflow.parallel.launch import LOST_CONTACT

            return LOST_CONTACT
        raise
