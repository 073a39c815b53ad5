"""`vogflow audit` and `vogflow top` against hostile folders, inputs and files: one line, exit 2.

No MLflow store is involved: every case here fails (or succeeds) before tracking would matter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from numerics import assert_arrays_close, assert_tables_close
from processes import HUNG_AFTER_S

from vogflow.api import audit
from vogflow.cli import main as cli
from vogflow.rankings.table import read

N_TEST = 40

FACTORY = """
import pathlib

import torch
from torch import nn


def build():
    pathlib.Path("factory_called").write_text("yes")
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
"""

# Imported instead of the real pandas if the current folder comes first on sys.path.
PLANTED_PANDAS = """
import pathlib

pathlib.Path(__file__).with_name("PLANTED_PANDAS_RAN").write_text("code from the cwd ran")
raise ImportError("the planted pandas.py ran")
"""


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> dict:
    """A user's folder: a factory module (unique name per test), checkpoints and an npz."""
    name = f"factory_{request.node.name.split('[')[0][5:]}_{abs(hash(request.node.name)) % 10**6}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORY))
    gen = torch.Generator().manual_seed(3)
    base = tiny().state_dict()
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for epoch in (1, 2, 3, 4):
        state = {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        torch.save(state, ckpts / f"epoch_{epoch}.pt")
    rng = np.random.default_rng(0)
    # NCHW floats in [0, 1], far from standardised: mean about 0.5, std about 0.29.
    arrays = {
        "x_train": rng.random((30, 1, 8, 8), dtype=np.float32),
        "y_train": np.arange(30) % 3,
        "x_test": rng.random((N_TEST, 1, 8, 8), dtype=np.float32),
        "y_test": rng.integers(0, 3, N_TEST),
    }
    np.savez(tmp_path / "mine.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return {"root": tmp_path, "model": f"{name}:build", "ckpts": ckpts, "arrays": arrays}


def audit_args(project: dict, out: str, *extra: str) -> list[str]:
    return [
        "audit",
        "--model",
        project["model"],
        "--checkpoints",
        str(project["ckpts"]),
        "--data",
        f"npz:{project['root'] / 'mine.npz'}",
        "--out",
        out,
        "--quiet",
        "--device",
        "cpu",
        "--show",
        "0",
        *extra,
    ]


def one_line_error(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"vogflow {command}: error: ")
    return err


# --- sys.path: the user's folder never shadows installed packages -------------------------------


@pytest.mark.integration
def test_audit_does_not_import_a_planted_module_from_the_current_folder(project):
    root = project["root"]
    (root / "pandas.py").write_text(textwrap.dedent(PLANTED_PANDAS))
    # The console script, as a user runs it: its sys.path[0] is the script's folder, not the cwd.
    script = Path(sys.executable).with_name("vogflow")
    if not script.is_file():
        pytest.skip(f"no console script at {script}")
    env = {**os.environ, "VOGFLOW_TRACKING": "off", "PYTHONPATH": ""}
    proc = subprocess.run(
        [str(script), *audit_args(project, "r.parquet")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert not (root / "PLANTED_PANDAS_RAN").exists(), proc.stderr
    # The factory module beside it is still found (the folder is on the path, last).
    assert proc.returncode == 0, proc.stderr
    assert (root / "factory_called").exists()
    assert len(read(root / "r.parquet")) == N_TEST


# --- inputs as loaded: the CLI and the API give the same table ----------------------------------


def test_audit_feeds_inputs_unstandardised_like_the_api(project, capsys):
    out = project["root"] / "r.parquet"
    assert cli.main(audit_args(project, str(out))) == 0
    table = read(out)
    arrays = project["arrays"]
    paths = sorted(project["ckpts"].glob("*.pt"))
    direct = audit(
        tiny(), paths, (arrays["x_test"], arrays["y_test"]), progress=False, device="cpu"
    )
    assert_tables_close(table, direct)
    # Standardising (what the CLI used to do) gives another table: the check can fail.
    x = arrays["x_test"]
    standardised = (x - arrays["x_train"].mean()) / arrays["x_train"].std()
    other = audit(tiny(), paths, (standardised, arrays["y_test"]), progress=False, device="cpu")
    assert not np.allclose(other["vog_all_label_raw"], table["vog_all_label_raw"])


# --- --out: format by suffix, folder checked before any work -----------------------------------


def test_audit_out_csv_writes_csv(project):
    assert cli.main(audit_args(project, "r.csv")) == 0
    assert cli.main(audit_args(project, "r.parquet")) == 0
    text = (project["root"] / "r.csv").read_text()
    assert text.startswith("index,label,")  # not parquet bytes behind a .csv name
    csv = pd.read_csv(project["root"] / "r.csv")
    parquet = read(project["root"] / "r.parquet")
    assert list(csv.columns) == list(parquet.columns)
    assert_arrays_close(csv["vog_late_label"], parquet["vog_late_label"])


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return folder
    # Root writes through permission bits; a kernel file system refuses it too.
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pass
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder available to this user")


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("r.txt", "unknown table format '.txt'; end the name with .parquet or .csv"),
        ("r", "unknown table format '(no suffix)'"),
        ("afile.txt/r.parquet", "cannot create the folder 'afile.txt'"),
        ("READ_ONLY/r.parquet", "cannot write to the folder"),
        ("adir.parquet", "is a folder; name the table file inside it"),
    ],
    ids=["txt", "no-suffix", "folder-under-a-file", "read-only", "folder"],
)
def test_audit_bad_out_fails_before_any_work(project, capsys, out, message):
    root = project["root"]
    (root / "adir.parquet").mkdir()
    (root / "afile.txt").write_text("")
    if out.startswith("READ_ONLY"):
        out = out.replace("READ_ONLY", str(_read_only_folder(root)))
    assert cli.main(audit_args(project, out)) == 2
    err = one_line_error(capsys, "audit")
    assert message in err and "--out" in err
    # Refused before the factory ran, let alone any gradient.
    assert not (root / "factory_called").exists()


# --- engine errors about the user's files reach the user as one line ----------------------------


def test_audit_damaged_checkpoint_and_bad_labels_are_one_line(project, capsys):
    root = project["root"]
    bad = project["ckpts"] / "epoch_3.pt"
    data = bytearray(bad.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert cli.main(audit_args(project, "r.parquet")) == 2
    err = one_line_error(capsys, "audit")
    assert str(bad) in err and "corrupted" in err and "re-save it" in err
    bad.unlink()

    arrays = {**project["arrays"], "y_train": project["arrays"]["y_train"] + 1}
    arrays["y_test"] = arrays["y_test"] + 1
    np.savez(root / "mine.npz", **arrays)
    assert cli.main(audit_args(project, "r.parquet")) == 2
    assert "they look 1-based: subtract 1" in one_line_error(capsys, "audit")
    assert not (root / "r.parquet").exists()


# --- top: the split a table holds, and files that are not tables ------------------------------


@pytest.fixture
def table_file(project) -> Path:
    out = project["root"] / "test.parquet"
    assert cli.main(audit_args(project, str(out))) == 0
    return out


def test_top_never_relabels_a_table_file_as_another_split(table_file, capsys):
    capsys.readouterr()
    assert cli.main(["top", str(table_file), "--split", "train", "-k", "3"]) == 2
    err = one_line_error(capsys, "top")
    assert "holds the test split" in err and "drop --split" in err

    other = table_file.with_name("mine.parquet")
    other.write_bytes(table_file.read_bytes())
    assert cli.main(["top", str(other), "--split", "test", "-k", "3"]) == 2
    assert "does not say which split it holds" in one_line_error(capsys, "top")

    # Without the flag (or confirming the name) it prints, naming only what it knows.
    assert cli.main(["top", str(table_file), "--split", "test", "-k", "3"]) == 0
    assert f"{table_file}: test split, {N_TEST} examples" in capsys.readouterr().out
    assert cli.main(["top", str(other), "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"{other}: {N_TEST} examples" in printed and "split" not in printed.splitlines()[0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.parquet", b"this is not parquet\n" * 4, "cannot be read as a parquet table"),
        ("x.parquet", None, "is not a rankings table (missing columns index, label"),
        ("x.csv", b"a,b\n1,2\n", "is not a rankings table"),
        ("absent.parquet", "absent", "no such file"),
    ],
    ids=["not-parquet", "other-parquet", "other-csv", "missing"],
)
def test_top_on_a_file_that_is_not_a_rankings_table_is_one_line(
    tmp_path, monkeypatch, capsys, name, content, message
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    if content is None:
        pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    assert cli.main(["top", str(path)]) == 2
    err = one_line_error(capsys, "top")
    assert message in err and str(path) in err


def test_top_reads_the_csv_that_audit_writes(project, capsys):
    assert cli.main(audit_args(project, "test.csv")) == 0
    assert cli.main(audit_args(project, "test.parquet")) == 0
    capsys.readouterr()
    assert cli.main(["top", "test.csv", "-k", "5"]) == 0
    from_csv = capsys.readouterr().out
    assert cli.main(["top", "test.parquet", "-k", "5"]) == 0
    assert from_csv.splitlines()[2:] == capsys.readouterr().out.splitlines()[2:]


# --- numbers refused while parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "A", "B", "--n-boot", "-5"],
        ["compare", "A", "B", "--show", "-1"],
        [
            "audit",
            "--model",
            "m:f",
            "--checkpoints",
            "c",
            "--data",
            "npz:d",
            "--out",
            "r.parquet",
            "--show",
            "-2",
        ],
        ["top", "x.parquet", "-k", "0"],
    ],
    ids=["n-boot", "compare-show", "audit-show", "top-k"],
)
def test_negative_counts_are_refused_at_parse_time(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage: vogflow" in err
    assert ("is negative" in err) or ("not a positive integer" in err)
    assert not (tmp_path / "mlflow.db").exists()  # no audit was even looked up
