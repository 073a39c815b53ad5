"""The audit report's content and page, and the export for relabeling: fast, no browser.

The page is checked for what a reader relies on (the label issues and the ends of the ranking
are the table's, every value escaped, nothing fetched); tests/report/test_report_browser.py opens it
in a real browser.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_tables import npz_images, rankings

from vogflow.cli import main as cli
from vogflow.errors import ConfigError
from vogflow.report import NOT_ESTIMATED, Report, export, ranking, render, split_section
from vogflow.report.content import per_class
from vogflow.report.images import png_data_uri

ROOT = Path(__file__).resolve().parents[2]


def page_of(table: pd.DataFrame, **kwargs) -> str:
    section = split_section(table, "test", rank_where="chosen in the test", **kwargs)
    return render(Report(title="t", facts=[("data", "d")], splits=[section], commands=["c"]))


def test_label_issues_are_the_flagged_rows_most_doubtful_first():
    table = rankings()
    section = split_section(table, "test", rank_where="here", issue_limit=1000)
    flagged = table[table["label_issue"]].sort_values("label_prob")
    assert section.issues_total == int(table["label_issue"].sum()) > 0
    assert [e["index"] for e in section.issues] == flagged["index"].tolist()
    assert [e["given_id"] for e in section.issues] == flagged["label"].tolist()
    assert [e["suggested_id"] for e in section.issues] == flagged["suggested_label"].tolist()
    assert np.allclose([e["given_prob"] for e in section.issues], flagged["label_prob"])


def test_the_issue_limit_keeps_the_most_doubtful_and_counts_all():
    table = rankings(n=200)
    section = split_section(table, "test", rank_where="here", issue_limit=5)
    assert len(section.issues) == 5 and section.issues_total == int(table["label_issue"].sum())
    assert [e["index"] for e in section.issues] == (
        table[table["label_issue"]].nsmallest(5, "label_prob")["index"].tolist()
    )


def test_hardest_and_easiest_are_the_ends_of_the_ranking():
    table = rankings()
    section = split_section(table, "test", score="hard_loss", rank_where="here", k=6)
    order = table.sort_values("hard_loss", ascending=False)["index"].tolist()
    assert [e["index"] for e in section.hardest] == order[:6]
    assert [e["index"] for e in section.easiest] == order[::-1][:6]
    assert section.rank_by == "hard_loss"


def test_the_audit_ranking_is_the_default_and_answers_to_its_name():
    table = rankings(ranked=True)
    # The same resolution as every other surface (vogflow.rankings.choice).
    default = ranking(table, None, where="t")
    assert default.name == "hard_loss_seedmean"
    assert np.array_equal(default.values, table["rank_score"].to_numpy())
    assert ranking(table, "hard_loss_seedmean", where="t").name == "hard_loss_seedmean"
    assert ranking(table, "late_label", where="t").name == "vog_late_label"
    with pytest.raises(ConfigError, match=r"--score 'nope'.*hard_loss"):
        ranking(table, "nope", where="t")
    section = split_section(table, "test", rank_where="here", k=3)
    best = table.sort_values("rank")["index"].tolist()[:3]
    assert [e["index"] for e in section.hardest] == best


def test_per_class_summary_counts_each_class():
    table = rankings(n=120)
    rows = per_class(table, table["hard_loss"].to_numpy(), None)
    assert sum(r["size"] for r in rows) == len(table)
    for row in rows:
        group = table[table["label"] == int(row["label"])]
        assert row["size"] == len(group)
        assert row["issues"] == int(group["label_issue"].sum())
        assert row["error_rate"] == pytest.approx(1 - group["correct"].mean(), rel=1e-4, abs=1e-9)
        assert row["mean_score"] == pytest.approx(group["hard_loss"].mean(), rel=1e-4, abs=1e-9)
    # The hardest share: 12 of 120 rows, spread over the classes.
    assert sum(r["hardest_share"] * r["size"] for r in rows) == pytest.approx(12, rel=1e-6)


def test_a_table_without_the_estimate_says_so_instead_of_failing():
    table = rankings(issues=False)
    html = page_of(table)
    assert NOT_ESTIMATED in html
    assert 'class="issue"' not in html


def test_every_value_is_escaped_and_nothing_is_fetched():
    table = rankings()
    table.insert(1, "path", "<script>alert(1)</script>.png")
    pictures = {i: png_data_uri(np.full((1, 4, 4), 0.5)) for i in table["index"]}
    html = page_of(
        table,
        class_names=["<b>zero</b>", "one", "two", "three"],
        images=lambda idx: {i: pictures[i] for i in idx},
    )
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "<b>zero</b>" not in html and "&lt;b&gt;zero&lt;/b&gt;" in html
    sources = re.findall(r'\bsrc="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in re.findall(r'\bhref="([^"]*)"', html))
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html


def test_png_data_uri_holds_the_image():
    from matplotlib.image import imread

    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    uri = png_data_uri(image)
    decoded = imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")
    assert np.allclose(decoded[..., 0], image[0], atol=1 / 255 + 1e-6)


# ---------------------------------------------------------------------------------------------
# export


def test_export_label_issues_as_csv_rows():
    table = rankings()
    frame = export.records(*export.select(table, score=None, k=None, where="t"), n=len(table))
    flagged = table[table["label_issue"]].sort_values("label_prob")
    assert frame["index"].tolist() == flagged["index"].tolist()
    assert frame["given_label"].tolist() == [str(v) for v in flagged["label"]]
    assert frame["suggested_label"].tolist() == [str(v) for v in flagged["suggested_label"]]
    assert np.allclose(frame["score"], flagged["label_prob"])
    assert list(frame.columns) == [
        "index",
        "given_label",
        "suggested_label",
        "score",
        "score_name",
        "evidence",
    ]
    assert all("averaged over the checkpoints" in e for e in frame["evidence"])


def test_export_top_k_of_a_score_with_paths():
    table = rankings()
    table.insert(1, "path", [f"test/c/{i:03d}.png" for i in table["index"]])
    frame = export.records(*export.select(table, score="hard_loss", k=7, where="t"), n=len(table))
    top = table.nlargest(7, "hard_loss")
    assert frame["index"].tolist() == top["index"].tolist()
    assert frame["path"].tolist() == top["path"].tolist()
    assert np.allclose(frame["score"], top["hard_loss"])
    assert frame["evidence"].iloc[0].startswith("hard_loss = ")


def test_label_studio_tasks_carry_the_image_and_the_given_label(tmp_path):
    table = rankings()
    frame = export.records(*export.select(table, score=None, k=None, where="t"), n=len(table))
    pictures = {int(i): png_data_uri(np.zeros((1, 4, 4))) for i in table["index"]}
    tasks_path, config_path = export.write_label_studio(
        frame,
        tmp_path / "tasks.json",
        classes=["0", "1", "2", "3"],
        images=lambda idx: {int(i): pictures[int(i)] for i in idx},
    )
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == len(frame)
    config = ET.fromstring(config_path.read_text())
    choices = config.find("Choices")
    assert [c.get("value") for c in choices] == ["0", "1", "2", "3"]
    image = config.find("Image")
    for task, row in zip(tasks, frame.to_dict("records"), strict=True):
        assert task["data"]["image"].startswith("data:image/png;base64,")
        assert task["data"]["index"] == row["index"]
        given, suggested = task["predictions"]
        for prediction in (given, suggested):
            result = prediction["result"][0]
            assert result["from_name"] == choices.get("name")
            assert result["to_name"] == image.get("name") == choices.get("toName")
        assert given["result"][0]["value"]["choices"] == [row["given_label"]]
        assert suggested["result"][0]["value"]["choices"] == [row["suggested_label"]]


# ---------------------------------------------------------------------------------------------
# command line: one line naming the value and the fix, exit 2, before any work


@pytest.fixture
def audit_files(tmp_path):
    table = rankings()
    table.to_parquet(tmp_path / "test.parquet", index=False)
    rankings(issues=False).to_parquet(tmp_path / "old.parquet", index=False)
    npz_images(tmp_path / "data.npz")
    npz_images(tmp_path / "small.npz", n_test=10)
    return tmp_path


@pytest.mark.parametrize(
    "argv, says",
    [
        (["export", "{d}/old.parquet", "--out", "{d}/x.csv"], "no label-issue estimate"),
        (["export", "{d}/test.parquet", "--out", "{d}/x.txt"], "--out"),
        (
            ["export", "{d}/test.parquet", "--format", "label-studio", "--out", "{d}/x.json"],
            "--data",
        ),
        (
            ["export", "{d}/test.parquet", "--data", "csv:{d}/data.npz", "--out", "{d}/x.csv"],
            "csv:",
        ),
        (["export", "{d}/test.parquet", "--score", "nope", "--out", "{d}/x.csv"], "'nope'"),
        (["report", "{d}/test.parquet", "--data", "npz:{d}/small.npz"], "10 examples"),
        (["report", "{d}/test.parquet", "--split", "train"], "--split train"),
        (["report", "{d}/test.parquet", "--out", "{d}/r.pdf"], "'.pdf'"),
    ],
)
def test_bad_input_gets_one_line(audit_files, capsys, argv, says):
    code = cli.main([a.format(d=audit_files) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and len(err.splitlines()) == 1


def test_cli_report_and_export_write_what_the_table_says(audit_files, capsys):
    d = audit_files
    assert cli.main(["report", f"{d}/test.parquet", "--data", f"npz:{d}/data.npz",
                     "--out", f"{d}/r.html"]) == 0  # fmt: skip
    html = (d / "r.html").read_text()
    table = pd.read_parquet(d / "test.parquet")
    given = re.findall(r'class="issue" data-index="(\d+)" data-given="(\d+)"', html)
    flagged = table[table["label_issue"]].sort_values("label_prob")
    assert given == [
        (str(i), str(g)) for i, g in zip(flagged["index"], flagged["label"], strict=True)
    ]
    assert html.count("data:image/png;base64,") >= len(flagged)
    assert cli.main(["export", f"{d}/test.parquet", "-k", "3", "--out", f"{d}/e.csv"]) == 0
    assert pd.read_csv(d / "e.csv")["index"].tolist() == flagged["index"].tolist()[:3]


# ---------------------------------------------------------------------------------------------
# README's export example runs as written


def readme_block(marker: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- readme-test: {marker} -->\n```bash\n(.*?)```", readme, re.S)
    assert block, f"README.md has no {marker} block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_readme_export_example_runs(tmp_path, monkeypatch, capsys):
    rankings().to_parquet(tmp_path / "rankings.parquet", index=False)
    npz_images(tmp_path / "data.npz")
    monkeypatch.chdir(tmp_path)
    commands = readme_block("export")
    assert commands
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "vogflow", line
        assert cli.main(argv[1:]) == 0, f"{line}: {capsys.readouterr().err}"
    assert (tmp_path / "relabel" / "issues.csv").exists()
    tasks = json.loads((tmp_path / "relabel" / "tasks.json").read_text())
    assert tasks and tasks[0]["data"]["image"].startswith("data:image/png")
    assert (tmp_path / "relabel" / "tasks.xml").exists()


def test_a_text_audit_exports_label_studio_tasks_without_pictures(tmp_path, capsys):
    table = rankings()
    table.insert(1, "text", [f"review {i}: <b>fine</b>" for i in table["index"]])
    table.to_parquet(tmp_path / "dev.parquet", index=False)
    out = tmp_path / "tasks.json"
    argv = ["export", str(tmp_path / "dev.parquet"), "--format", "label-studio", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    tasks = json.loads(out.read_text())
    flagged = table[table["label_issue"]].sort_values("label_prob")
    assert [t["data"]["text"] for t in tasks] == flagged["text"].tolist()
    config = ET.fromstring(out.with_suffix(".xml").read_text())
    assert config.find("Text").get("name") == config.find("Choices").get("toName") == "text"
    assert all(t["predictions"][0]["result"][0]["to_name"] == "text" for t in tasks)
