"""``vogflow audit``: rank the examples of the user's own model by VoG from its checkpoints,
write the rankings table, and print the hardest."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from vogflow.cli import options
from vogflow.cli.inputs import (
    ONE_SPLIT_KINDS,
    array_data,
    check_text_options,
    parse_data,
    resolve_checkpoints,
    text_data,
)
from vogflow.cli.models import check_model_spec, resolve_model, text_model
from vogflow.cli.output import check_out_file, hardest, print_table
from vogflow.cli.ranks import peer_rank
from vogflow.config.names import PRECISIONS, WINDOWS
from vogflow.errors import ConfigError

DESCRIPTION = """\
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

EPILOG = """\
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


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="rank your own model's data by VoG from its checkpoints",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=options.FORMATTER,
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
        type=options.positive,
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
        type=options.positive,
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
    p.add_argument("--batch-size", type=options.positive, default=256, help="examples per batch")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (default, exact); tf32 or bf16 trade exactness for speed on a GPU",
    )
    p.add_argument(
        "--stream",
        default="auto",
        type=options.stream_mode,
        metavar="{auto,true,false}",
        help="npz/imagefolder: read batches from disk (true), load into memory (false), or auto "
        "(default: stream only what would not comfortably fit in memory; the same scores)",
    )
    p.add_argument(
        "--workers",
        type=options.non_negative,
        default=2,
        metavar="N",
        help="processes decoding streamed examples (default: 2; 0 = in the main process)",
    )
    p.add_argument(
        "--processes",
        type=options.positive,
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
        type=options.window,
        default=3,
        help="checkpoints in the early and late windows (default: 3)",
    )
    p.add_argument(
        "--windows",
        type=options.windows,
        default=WINDOWS,
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
        "--show",
        type=options.non_negative,
        default=10,
        help="hardest examples to print (default: 10)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    if args.processes > 1 and "WORLD_SIZE" not in os.environ:
        from vogflow.parallel import launch as procgroup

        check_out_file(args.out)  # before starting N interpreters
        return procgroup.run_processes(args.processes, "vogflow.cli", args.argv)
    if peer_rank():
        # Rank 0 prints and writes; a peer's lines would repeat them N times.
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return _run_checked(args)
    return _run_checked(args)


def _run_checked(args: argparse.Namespace) -> int:
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


def _print_checkpoints(source: Any, note: str | None) -> None:
    n = len(source.checkpoints)
    print(f"checkpoints ({n}, in training order; the last is the final model):")
    for i, name in enumerate(source.names, 1):
        print(f"  {i:>3}  {name}")
    if note:
        print(note)
    if not source.complete:
        print(f"note: {source.where}: its manifest says training has not finished ({n} so far)")


def _tracked(args: argparse.Namespace) -> bool:
    """Whether to log the audit to MLflow; a store that cannot take it fails before the work."""
    from vogflow import tracking

    track = args.track and tracking.enabled()
    if args.track and not track:
        print("tracking is off (VOGFLOW_TRACKING=off): the audit is not logged to MLflow")
    if track:
        tracking.check_reachable(tracking.tracking_uri())
    return track


def _examples(
    args: argparse.Namespace, kind: str, data_path: str, split: str, source: Any, model: Any
) -> tuple[Any, str, Any]:
    """``(data, what it is, file paths or None)``: the examples as :func:`vogflow.api.audit`
    takes them."""
    if kind == "text":
        texts = text_data(args, data_path, source, model)
        return texts, f"{len(texts)} texts", None
    arrays = array_data(args, kind, data_path, split, source)
    data: Any = (arrays.x, arrays.y)
    if arrays.streamed:
        from vogflow.data.loaders import sequential

        data = sequential(arrays.x, arrays.y, batch_size=args.batch_size)
    return data, f"inputs of shape {arrays.input_shape}", arrays.paths


def _score(
    args: argparse.Namespace, model: Any, items: list, data: Any, split: str, inputs: str
) -> Any:
    """The rankings table, or None on a peer rank (rank 0 holds the table)."""
    from vogflow.api import audit

    try:
        return audit(
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


def _log(
    args: argparse.Namespace, table: Any, source: Any, model_name: str, data: dict, split: str
) -> None:
    from vogflow import tracking

    run_id = tracking.log_audit(
        table,
        params={
            "model": model_name,
            "checkpoints": ",".join(c.short for c in source.checkpoints),
            "data": data,
            "split": split,
            "window_size": args.window_size,
            "normalise": args.normalise,
        },
        run_name="audit",
        experiment=args.experiment,
    )
    print(f"logged to MLflow: run {run_id} ({tracking.tracking_uri()})")


def _print_results(args: argparse.Namespace, table: Any, out: Path) -> None:
    from vogflow.rankings import choice as rank_choice

    ranking = rank_choice.resolve(table, where=str(out))
    if args.show > 0:
        print(f"\n{ranking.line()}")
        print(f"hardest {min(args.show, len(table))} by {ranking.name} (rank 1 = hardest):")
        print_table(hardest(ranking.ranked(table), ranking.name, args.show))
    flagged = int(table["label_issue"].sum())
    print(
        f"\nlabel issues: {flagged} of {len(table)} labels probably wrong (column label_issue, "
        "with suggested_label, suggested_label_prob and label_prob as the evidence)"
    )


def _audit(
    args: argparse.Namespace, out_path: Path, kind: str, data_path: str, source: Any, note: Any
) -> int:
    _print_checkpoints(source, note)
    track = _tracked(args)
    if kind == "text":
        model, model_name = text_model(args.model, source)
    else:
        model, model_name = resolve_model(args.model, args.num_classes, source)
    if args.model is None:
        print(f"model: {model_name}")

    from vogflow.checkpoints.local import check_fit
    from vogflow.rankings.table import PATH_COLUMN, write_csv, write_parquet

    items = source.for_audit()
    check_fit(model, items, source.names)
    split = Path(data_path).name if kind in ONE_SPLIT_KINDS else args.split or "test"
    data, inputs, paths = _examples(args, kind, data_path, split, source, model)
    table = _score(args, model, items, data, split, inputs)
    if table is None:
        return 0
    if paths is not None:  # an image folder: where each example's file is, beside its index
        table.insert(1, PATH_COLUMN, list(paths))
    write = write_csv if out_path.suffix.lower() == ".csv" else write_parquet
    out = write(table, out_path)
    error = float(1 - table["correct"].mean())
    print(
        f"audited {len(table)} {split} examples of {args.data} with {len(source.checkpoints)} "
        f"checkpoints; final-model error {error:.3f}"
    )
    print(f"wrote {out} ({len(table)} rows, {len(table.columns)} columns)")
    if track:
        data_record = {"name": kind, "path": str(Path(data_path).resolve())}
        _log(args, table, source, model_name, data_record, split)
    _print_results(args, table, out)
    return 0
