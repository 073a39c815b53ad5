"""``vogflow compare``: two audits end to end: resolve both, read one split of each, compare
them with :mod:`vogflow.rankings.compare` (the math on two tables), write the report files, log
the comparison to MLflow, print it.

Heavy libraries are imported inside the functions, so ``vogflow --help`` answers at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vogflow.cli import options
from vogflow.cli.output import print_table
from vogflow.errors import ConfigError

DESCRIPTION = """\
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

EPILOG = """\
examples:
  vogflow compare models:/vogflow-main/1 models:/vogflow-main/2
  vogflow compare models:/vogflow-main@champion models:/vogflow-main/latest \\
      --split train --score all_pred
  vogflow compare 3f2a9c... 9b71e0... --run seed1 --out compare/"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare the audits of two model versions",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=options.FORMATTER,
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
        type=options.fraction,
        default=0.1,
        help="hardest share whose overlap is measured (default: 0.1)",
    )
    p.add_argument(
        "--movers",
        type=options.positive,
        default=25,
        help="examples that moved most to report (default: 25)",
    )
    p.add_argument(
        "--show", type=options.non_negative, default=10, help="movers to print (default: 10)"
    )
    p.add_argument(
        "--n-boot",
        type=options.non_negative,
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
    p.set_defaults(func=run)


def _read_split(ref: Any, other: Any, split: str) -> Any:
    from vogflow import tracking

    try:
        return tracking.read_rankings(ref, split)
    except tracking.TrackingError as err:
        shared = sorted(set(tracking.rankings_splits(ref)) & set(tracking.rankings_splits(other)))
        hint = f"splits both audits share: {', '.join(shared)}" if shared else "no shared split"
        raise ConfigError(f"{err} ({hint})") from err


def _data_config(params: dict[str, str]) -> Any:
    """The audit's ``DataConfig`` rebuilt from its logged ``data.*`` params."""
    import dataclasses

    from vogflow.config.schema import DataConfig

    values: dict[str, Any] = {}
    for f in dataclasses.fields(DataConfig):
        raw = params.get(f"data.{f.name}")
        if raw is not None:
            values[f.name] = type(f.default)(raw) if f.default is not None else raw
    return DataConfig(**values)


def _mover_images(refs: Sequence[Any], split: str, index: Any, labels: Any) -> tuple[Any, str]:
    """Display images of the movers from the audit's own dataset, or ``(None, why not)``."""
    from vogflow import tracking

    why = "no audit logged its data params (e.g. a train stage run)"
    for ref in refs:
        params = tracking.audit_params(ref)
        if "data.name" not in params:
            continue
        try:
            from vogflow.data import load_dataset

            cfg = _data_config(params)
            dataset = load_dataset(cfg, tracking.project_root())
            part = dataset.split(split)
        except Exception as err:  # images are optional: any failure only skips the grid
            name = params["data.name"]
            why = f"dataset {name!r} could not be loaded ({type(err).__name__}: {err})"
            continue
        if len(part) <= int(index.max()) or (part.y[index] != labels).any():
            why = f"the {cfg.name!r} data on disk no longer matches the audit's labels"
            continue
        images = dataset.denormalise(part.x[index])
        if images.ndim not in (3, 4):
            return None, f"the {cfg.name!r} examples are not images"
        return images, ""
    return None, why


def _write_outputs(
    folder: Path, result: Any, report: dict, refs: Sequence[Any], args: Any, names: tuple[str, str]
) -> list[str]:
    """compare.json, movers.csv and the figures in ``folder``; returns notes for the report."""
    from vogflow import figures
    from vogflow.common.atomic import write_json, write_text
    from vogflow.figures.curves import compare_curves
    from vogflow.figures.grids import movers_grid

    notes: list[str] = []
    write_text(folder / "movers.csv", result.movers.to_csv(index=False, float_format="%.6g"))

    def curve(c: dict) -> dict:
        lo, hi = zip(*c["error_interval"], strict=True) if c["error_interval"] else ((), ())
        return {"error": c["error"], "lo": list(lo), "hi": list(hi)}

    deciles = report["deciles"]
    # The legend names the model versions (or audits) rather than bare A and B.
    legend = tuple(
        f"{n}: {r.model or r.audit_run_id[:12]}" for n, r in zip(names, refs, strict=True)
    )
    fig = compare_curves(
        curve(deciles["a"]),
        curve(deciles["b"]),
        names=legend,
        title=f"{args.split} error per {report['column']} decile",
    )
    figures.save(fig, folder / "figures" / "deciles.png")
    if args.no_images:
        notes.append("movers grid skipped (--no-images)")
    elif len(result.movers):
        movers = result.movers
        index = movers["index"].to_numpy()
        images, why = _mover_images(refs, args.split, index, movers["label"].to_numpy())
        if images is None:
            notes.append(f"movers grid skipped: {why}")
        else:
            fig = movers_grid(
                images,
                movers["rank_a"].to_numpy(),
                movers["rank_b"].to_numpy(),
                labels=movers["label"].to_numpy(),
                title=f"top movers by {report['column']} rank: A -> B (1 = hardest)",
            )
            figures.save(fig, folder / "figures" / "movers.png")
    report["notes"] = notes
    write_json(folder / "compare.json", report)
    return notes


def _print_compare(report: dict, refs: Sequence[Any], movers: Any, show: int, split: str) -> None:
    for name, ref in zip("AB", refs, strict=True):
        print(f"{name}  {ref.describe()}")
    n = report["n"]
    print(f"{split} split, {n} examples")
    print(f"ranked by {report['column']} ({report['reason']}); higher = harder\n")
    a, b = report["deciles"]["a"], report["deciles"]["b"]
    overlap = report["top_overlap"]
    rows = [
        ("", "A", "B"),
        (f"{split} error", f"{report['error']['a']:.3f}", f"{report['error']['b']:.3f}"),
        ("decile-error trend", f"{a['spearman']:+.2f}", f"{b['spearman']:+.2f}"),
    ]
    for label, va, vb in rows:
        print(f"{label:<20}{va:>8}{vb:>8}")
    print(f"{'spearman':<20}{report['spearman']:>8.3f}")
    print(f"{'kendall':<20}{report['kendall']:>8.3f}")
    pct = round(100 * overlap["fraction"])
    print(
        f"{f'top-{pct}% jaccard':<20}{overlap['jaccard']:>8.3f}   ({overlap['shared']} of "
        f"{overlap['k']} shared; chance {overlap['chance']:.3f})"
    )
    bins = len(a["error"])
    print(f"\n{split} error per VoG decile (0 = lowest VoG):")
    print("decile " + "".join(f"{i:>6}" for i in range(bins)))
    for name, c in (("A", a), ("B", b)):
        print(f"{name:<7}" + "".join(f"{e:>6.2f}" for e in c["error"]))
    if len(movers) and show > 0:
        print(f"\ntop {min(show, len(movers))} movers (rank 1 = hardest; shift > 0 = easier in B):")
        print_table(movers.head(show))


def _log_compare(folder: Path, report: dict, refs: Sequence[Any], args: Any) -> str:
    from vogflow import tracking

    dec, overlap = report["deciles"], report["top_overlap"]
    return tracking.log_compare(
        folder,
        a=args.a,
        b=args.b,
        params={
            "split": args.split,
            "score": report["column"],
            "run": args.run or "",
            "top_fraction": args.top_fraction,
            "movers": args.movers,
            "n_boot": args.n_boot,
            "seed": args.seed,
            "a_audit": refs[0].audit_run_id,
            "b_audit": refs[1].audit_run_id,
        },
        metrics={
            "n": report["n"],
            "spearman": report["spearman"],
            "kendall": report["kendall"],
            "top_jaccard": overlap["jaccard"],
            "top_shared": overlap["shared"],
            "error_a": report["error"]["a"],
            "error_b": report["error"]["b"],
            "decile_trend_a": dec["a"]["spearman"],
            "decile_trend_b": dec["b"]["spearman"],
        },
        curves={"decile_error_a": dec["a"]["error"], "decile_error_b": dec["b"]["error"]},
        tags={
            "vogflow.compare.a_audit": refs[0].audit_run_id,
            "vogflow.compare.b_audit": refs[1].audit_run_id,
        },
        experiment=args.experiment,
        run_name=f"compare {args.a} vs {args.b} ({args.split})",
    )


def _ref_record(ref: Any) -> dict[str, Any]:
    return {
        "ref": ref.ref,
        "audit_run_id": ref.audit_run_id,
        "run": ref.run,
        "source_run_id": ref.source_run_id,
        "model": ref.model,
    }


def check_out_folder(value: str) -> Path:
    """``--out``: a folder for the report files (created if missing) that takes files."""
    import tempfile

    folder = Path(value)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"--out {value!r} is a file, not a folder; name a folder for compare.json, "
            "movers.csv and figures/ (it is created if missing)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"--out {value!r}: cannot write there ({err.strerror or err}); choose a writable folder"
        ) from err
    return folder


def _rankings(tables: list, refs: list, score: str | None, split: str) -> list:
    """One score for both audits: the one asked for, else A's ranking (the audit's choice);
    B is ranked by the same name, so the two rankings are comparable."""
    from vogflow import tracking
    from vogflow.rankings import choice as rank_choice

    def seeds(ref: Any, name: str | None) -> dict:
        wanted = name is not None and name.endswith(rank_choice.SEEDMEAN)
        return tracking.seed_rankings(ref, split) if wanted else {}

    a = rank_choice.resolve(
        tables[0], score, seed_tables=seeds(refs[0], score), where=f"A ({refs[0].describe()})"
    )
    b = rank_choice.resolve(
        tables[1], a.name, seed_tables=seeds(refs[1], a.name), where=f"B ({refs[1].describe()})"
    )
    return [a, b]


def run(args: Any) -> int:
    """Compare the audits ``args.a`` and ``args.b`` (the ``vogflow compare`` arguments): resolve
    both, read one split of each, compute with :func:`vogflow.rankings.compare.compare`, write the
    report files, log the comparison to MLflow, print it; returns the exit code (0).
    """
    import tempfile

    from vogflow import tracking
    from vogflow.rankings import compare

    if args.out:
        check_out_folder(args.out)  # before resolving, downloading and comparing anything
    refs = [tracking.resolve_audit(ref, run=args.run) for ref in (args.a, args.b)]
    tables = [_read_split(refs[0], refs[1], args.split), _read_split(refs[1], refs[0], args.split)]
    rankings = _rankings(tables, refs, args.score, args.split)
    column = rankings[0].name
    names = ("A", "B")
    result = compare.compare(
        rankings[0].ranked(tables[0]),
        rankings[1].ranked(tables[1]),
        column=column,
        top_fraction=args.top_fraction,
        n_movers=args.movers,
        n_boot=args.n_boot,
        seed=args.seed,
        names=names,
    )
    report = {
        "a": _ref_record(refs[0]),
        "b": _ref_record(refs[1]),
        "split": args.split,
        "score": column,
        "reason": rankings[0].reason,
        **result.report,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out) if args.out else Path(tmp)
        notes = _write_outputs(folder, result, report, refs, args, names)
        # Logged before anything is printed, so an interrupted terminal never loses the record.
        run_id = _log_compare(folder, report, refs, args) if tracking.enabled() else None
    _print_compare(report, refs, result.movers, args.show, args.split)
    for note in notes:
        print(note)
    if run_id is None:
        print("\ntracking is off (VOGFLOW_TRACKING=off): the comparison is not logged")
    else:
        print(f"\nlogged the comparison: {tracking.compare_run_url(run_id)}")
    if args.out:
        print(f"wrote {folder}/compare.json, movers.csv and figures/")
    return 0
