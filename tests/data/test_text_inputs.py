"""Text and tabular inputs: the same VoG, taken w.r.t. token embeddings or feature vectors.

A tiny BERT (real transformers, built from a config, no download) and a word-level tokenizer built
from scratch; every score is pinned against the paper's equation written out with loops.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from numerics import assert_arrays_close
from vog_reference import perturbed_checkpoints

from vogflow.api import audit
from vogflow.cli import main as cli
from vogflow.errors import DataError
from vogflow.rankings.table import top_bottom, write_csv
from vogflow.scoring.stream import extract

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = "good bad fine awful great movie plot actor boring fun the a was is very not".split()
CLASSES = ("neg", "neu", "pos")
K = 4
WINDOWS = {"early": [0, 1, 2], "late": [1, 2, 3], "all": [0, 1, 2, 3]}


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=32,
    )


def make_config():
    return transformers.BertConfig(
        vocab_size=len(WORDS) + 4,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)),
        label2id={c: i for i, c in enumerate(CLASSES)},
    )


@pytest.fixture(scope="module")
def bert():
    """A tiny BERT classifier, K distinct checkpoints of it, a tokenizer and labelled texts."""
    torch.manual_seed(0)
    config = make_config()
    base = transformers.BertForSequenceClassification(config)
    states = perturbed_checkpoints(base, K, seed=2)
    models = []
    for state in states:
        model = transformers.BertForSequenceClassification(config)
        model.load_state_dict(state)
        models.append(model)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, rng.integers(1, 12))) for _ in range(18)]
    labels = rng.integers(0, len(CLASSES), len(texts))
    return {
        "config": config,
        "base": base,
        "states": states,
        "models": models,
        "tokenizer": make_tokenizer(),
        "texts": texts,
        "labels": labels,
    }


def direct_token_grads(models, ids: list[int], target: int) -> np.ndarray:
    """``(K, L, E)`` gradients of one unpadded example's ``target`` logit w.r.t. its input
    embeddings, one checkpoint at a time with autograd, in eval mode."""
    out = []
    for model in models:
        model.eval()
        x = torch.tensor([ids])
        emb = model.get_input_embeddings()(x).detach().requires_grad_(True)
        logit = model(inputs_embeds=emb, attention_mask=torch.ones_like(x)).logits[0, target]
        (g,) = torch.autograd.grad(logit, emb)
        out.append(g[0].double().numpy())
    return np.stack(out)


def direct_token_vog(grads: np.ndarray) -> float:
    """Population std over checkpoints of every (token, embedding coordinate), then the mean."""
    return float(np.std(grads, axis=0).mean())


def text_data(bert, **kw):
    from vogflow.data.text import TextData

    return TextData(bert["texts"], bert["labels"], bert["tokenizer"], **kw)


def run_extract(models, data, batch_size):
    batches, num_batches, n = data.batches(batch_size)
    return extract(
        models, batches, num_examples=n, num_batches=num_batches, device="cpu", progress=False
    )


def test_token_vog_equals_the_direct_reimplementation(bert):
    data = text_data(bert)
    got = run_extract(bert["models"], data, batch_size=5)  # mixed lengths: padding in most rows
    ids = [bert["tokenizer"](t)["input_ids"] for t in bert["texts"]]
    with torch.no_grad():
        final = bert["models"][-1].eval()
        pred = [int(final(input_ids=torch.tensor([i])).logits.argmax()) for i in ids]
    assert np.array_equal(got.pred, pred)
    targets = {"label": bert["labels"], "pred": pred}
    for mode, target in targets.items():
        pairs = zip(ids, target, strict=True)
        grads = [direct_token_grads(bert["models"], i, int(p)) for i, p in pairs]
        for window, idx in WINDOWS.items():
            want = [direct_token_vog(g[idx]) for g in grads]
            assert_arrays_close(got.vog_raw[f"{window}_{mode}"], want)
    assert min(got.vog_raw["all_label"]) > 1e-4  # far from rounding noise (see the next test)


def test_averaging_over_the_embedding_dimension_would_score_rounding_noise(bert):
    # Why token maps keep every embedding coordinate: BERT's embeddings enter a LayerNorm, which
    # ignores a constant added to all coordinates, so the gradient sums to 0 over them.
    ids = bert["tokenizer"](bert["texts"][0])["input_ids"]
    grads = direct_token_grads(bert["models"], ids, 0)
    assert np.abs(grads.mean(axis=2)).max() < 1e-6 * np.abs(grads).max()


def test_padding_and_neighbours_do_not_change_a_score(bert):
    tok, models = bert["tokenizer"], bert["models"]
    text, label = "the plot was not very good", 2
    ids = tok(text)["input_ids"]

    def padded(extra: int) -> dict[str, torch.Tensor]:
        row = ids + [tok.pad_token_id] * extra
        mask = [1] * len(ids) + [0] * extra
        return {"input_ids": torch.tensor([row]), "attention_mask": torch.tensor([mask])}

    scores = []
    for extra in (0, 3, 17):
        batches = [(padded(extra), torch.tensor([label]))]
        got = extract(models, batches, num_examples=1, device="cpu", progress=False)
        scores.append([got.vog_raw[k][0] for k in sorted(got.vog_raw)])
    # In a batch whose neighbours are longer, padded to their length.
    from vogflow.data.text import TextData

    long = " ".join(WORDS) + " fun fun"
    data = TextData([long, text, long], [0, label, 1], tok)
    got = run_extract(models, data, batch_size=3)
    scores.append([got.vog_raw[k][1] for k in sorted(got.vog_raw)])
    for other in scores[1:]:
        assert_arrays_close(other, scores[0])


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_padding_never_counts_for_other_encoders(arch):
    # RoBERTa numbers positions from its padding id and DistilBERT has no token types: right
    # padding keeps every real token where it was in both.
    common = {"vocab_size": 40, "num_labels": 3}
    config = {
        "distilbert": lambda: transformers.DistilBertConfig(
            dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=40, **common
        ),
        "roberta": lambda: transformers.RobertaConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=44,
            pad_token_id=1,
            **common,
        ),  # fmt: skip
    }[arch]()
    torch.manual_seed(5)
    models = [transformers.AutoModelForSequenceClassification.from_config(config) for _ in "abc"]
    ids = [0, 5, 7, 9, 11, 2]
    scores = []
    for extra in (0, 4, 13):
        batch = {
            "input_ids": torch.tensor([ids + [1] * extra]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * extra]),
        }
        got = extract(models, [(batch, torch.tensor([1]))], num_examples=1, window_size=2,
                      windows=("all",), device="cpu", progress=False)  # fmt: skip
        scores.append([got.vog_raw[k][0] for k in sorted(got.vog_raw)])
    assert min(scores[0]) > 1e-4
    assert_arrays_close(scores[1:], [scores[0]] * 2)


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_decoder_classifier_reading_the_last_token_scores_it_unpadded(side):
    """GPT-2-style classifiers pool at the last real token, found from input_ids, which an
    inputs_embeds forward lacks: padded rows must not be scored at a padding position."""
    config = transformers.GPT2Config(
        vocab_size=40, n_positions=40, n_embd=16, n_layer=1, n_head=2, num_labels=2, pad_token_id=0
    )
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(transformers.GPT2ForSequenceClassification(config))
    short, long = [5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]
    pad = [0] * (len(long) - len(short))

    def run(rows: list[list[int]], masks: list[list[int]]):
        batch = {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(masks)}
        y = torch.tensor([1] * len(rows))
        return extract(models, [(batch, y)], num_examples=len(rows), window_size=2,
                       windows=("all",), device="cpu", progress=False)  # fmt: skip

    alone = run([short], [[1] * len(short)])
    padded_short = short + pad if side == "right" else pad + short
    short_mask = [1] * len(short) + [0] * len(pad)
    short_mask = short_mask if side == "right" else short_mask[::-1]
    together = run([padded_short, long], [short_mask, [1] * len(long)])
    for key, value in alone.vog_raw.items():
        assert_arrays_close(together.vog_raw[key][0], value[0], err_msg=key)
    assert_arrays_close(together.stats["loss"][:, 0], alone.stats["loss"][:, 0])
    with torch.no_grad():  # and it is the logit the model gives its own input_ids
        final = models[-1].eval()(input_ids=torch.tensor([short])).logits
    want = float(torch.nn.functional.cross_entropy(final, torch.tensor([1])))
    assert together.stats["loss"][-1, 0] == pytest.approx(want, rel=1e-5)


def test_a_hugging_face_collator_loader_gives_the_same_scores(bert):
    from torch.utils.data import DataLoader

    tok = bert["tokenizer"]
    rows = [
        {**tok(t), "labels": int(y)} for t, y in zip(bert["texts"], bert["labels"], strict=True)
    ]
    loader = DataLoader(rows, batch_size=4, collate_fn=transformers.DataCollatorWithPadding(tok))
    table = audit(bert["base"], bert["states"], loader, device="cpu", progress=False)
    want = run_extract(bert["models"], text_data(bert), batch_size=7)
    for key, value in want.vog_raw.items():
        assert_arrays_close(table[f"vog_{key}_raw"], value, err_msg=key)


def test_the_rankings_and_top_tables_carry_the_text(bert, tmp_path):
    table = audit(bert["base"], bert["states"], text_data(bert), device="cpu", progress=False)
    assert list(table.columns[:3]) == ["index", "text", "label"]
    assert table["text"].tolist() == bert["texts"]
    top = top_bottom(table, "vog_late_label", 3)
    write_csv(top, tmp_path / "test_top.csv")
    back = pd.read_csv(tmp_path / "test_top.csv")
    hardest = table.sort_values("vog_late_label", ascending=False, kind="stable").head(3)
    assert back["text"].head(3).tolist() == hardest["text"].tolist()
    assert back["index"].head(3).tolist() == hardest["index"].tolist()


def test_bad_token_inputs_fail_in_one_line(bert):
    models = bert["models"]
    too_big = {"input_ids": torch.tensor([[2, 999, 3]])}
    with pytest.raises(DataError, match="embeds 20 ids"):
        extract(models, [(too_big, torch.tensor([0]))], num_examples=1, progress=False)
    empty = {"input_ids": torch.tensor([[2, 3]]), "attention_mask": torch.tensor([[0, 0]])}
    with pytest.raises(DataError, match=r"no token with attention_mask=1 \(indices 0\)"):
        extract(models, [(empty, torch.tensor([0]))], num_examples=1, progress=False)


def test_a_shard_of_text_data_is_the_same_rows_padded_alone(bert):
    data = text_data(bert)
    whole = run_extract(bert["models"], data, batch_size=4)
    batches, num_batches, n = data.batches(4, rows=range(5, 14))
    assert (num_batches, n) == (3, 9)
    first, labels = next(batches)
    assert first["input_ids"].shape[1] == max(len(bert["tokenizer"](t)["input_ids"]) for t in
                                              bert["texts"][5:9])  # fmt: skip
    assert labels.tolist() == bert["labels"][5:9].tolist()
    batches, num_batches, n = data.batches(4, rows=range(5, 14))
    part = extract(bert["models"], batches, num_examples=n, device="cpu", progress=False)
    for key, value in part.vog_raw.items():
        assert_arrays_close(value, whole.vog_raw[key][5:14], err_msg=key)


def test_text_files_read_as_csv_or_jsonl_with_named_classes(bert, tmp_path):
    from vogflow.data.text import read_table
    from vogflow.errors import DataError

    rows = [{"text": "good movie", "label": "pos"}, {"text": "awful", "label": "neg"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    texts, labels = read_table(tmp_path / "d.jsonl", label2id=bert["config"].label2id)
    assert texts == ["good movie", "awful"] and labels.tolist() == [2, 0]
    with pytest.raises(DataError, match="labels 'neg', 'pos' are not class indices"):
        read_table(tmp_path / "d.jsonl")
    with pytest.raises(DataError, match="unknown format '.txt'"):
        read_table(tmp_path / "d.txt")


def save_hf_series(bert, out):
    """A Trainer-like output folder: checkpoint-<step>/ with config.json and model.safetensors,
    the tokenizer saved beside the final checkpoint."""
    folders = []
    for step, model in zip((50, 100, 150, 200), bert["models"], strict=True):
        folder = out / f"checkpoint-{step}"
        model.save_pretrained(folder)
        folders.append(folder)
    bert["tokenizer"].save_pretrained(folders[-1])
    return folders


def test_cli_audits_a_saved_checkpoint_series_end_to_end(bert, tmp_path, capsys):
    folders = save_hf_series(bert, tmp_path / "out")
    assert (folders[0] / "model.safetensors").is_file()
    names = [CLASSES[int(y)] for y in bert["labels"]]  # class names, mapped by the config
    pd.DataFrame({"text": bert["texts"], "label": names}).to_csv(tmp_path / "dev.csv", index=False)
    out = tmp_path / "rankings.csv"
    code = cli.main(
        [
            "audit",
            "--checkpoints",
            str(tmp_path / "out"),
            "--data",
            f"text:{tmp_path / 'dev.csv'}",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--quiet",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "BertForSequenceClassification (from" in printed.out
    table = pd.read_csv(out)
    assert table["text"].tolist() == bert["texts"]
    assert table["label"].tolist() == bert["labels"].tolist()
    want = run_extract(bert["models"], text_data(bert), batch_size=6)
    for key, value in want.vog_raw.items():
        assert_arrays_close(table[f"vog_{key}_raw"], value, err_msg=key)
    # The same audit from Python, the model built from the folder's config.json.
    from vogflow.data.text import TextData

    data = TextData.from_file(tmp_path / "dev.csv", folders[-1], label2id=bert["config"].label2id)
    api_table = audit(None, tmp_path / "out", data, device="cpu", progress=False)
    assert_arrays_close(api_table["vog_all_label"], table["vog_all_label"])


def test_cli_text_refusals_are_one_line(bert, tmp_path, capsys):
    save_hf_series(bert, tmp_path / "out")
    capsys.readouterr()  # the save's own progress output
    pd.DataFrame({"sentence": ["good"], "label": [0]}).to_csv(tmp_path / "d.csv", index=False)
    base = ["audit", "--checkpoints", str(tmp_path / "out"), "--out", str(tmp_path / "r.csv")]
    cases = [
        (["--data", f"text:{tmp_path / 'd.csv'}", "--split", "train"], "holds one split"),
        (["--data", f"text:{tmp_path / 'd.csv'}"], "no column 'text'"),
        (["--data", "npz:x.npz", "--tokenizer", str(tmp_path)], "--tokenizer apply to"),
        (
            [
                "--data",
                f"text:{tmp_path / 'd.csv'}",
                "--text-column",
                "sentence",
                "--tokenizer",
                str(tmp_path),
            ],
            "holds no tokenizer",
        ),
    ]
    for extra, message in cases:
        assert cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.integration
def test_importing_vogflow_never_imports_transformers():
    code = (
        "import sys, vogflow, vogflow.api, vogflow.cli.main, vogflow.data.text, "
        "vogflow.scoring.extract\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# tabular (N, D) features


def class_z(raw: np.ndarray, classes: np.ndarray) -> np.ndarray:
    out = np.zeros_like(raw)
    for c in np.unique(classes):
        members = classes == c
        mean, std = raw[members].mean(), raw[members].std()
        if members.sum() > 1 and std > 0:
            out[members] = (raw[members] - mean) / std
    return out


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Dropout(0.3), torch.nn.Linear(12, 3)
    )


@pytest.fixture
def tabular():
    torch.manual_seed(3)
    states = perturbed_checkpoints(mlp(), 5, seed=4)
    x = torch.randn(40, 6) * torch.tensor([1.0, 10.0, 0.1, 5.0, 1.0, 100.0])  # raw feature scales
    y = torch.randint(0, 3, (40,))
    return states, x, y


def direct_tabular_vog(states, x, y, idx) -> np.ndarray:
    """Per-feature population std of the logit gradient over checkpoints, mean over features."""
    grads = np.zeros((len(idx), len(x), x.shape[1]))
    for t, s in enumerate(idx):
        model = mlp()
        model.load_state_dict(states[s])
        model.eval()
        for i in range(len(x)):
            xi = x[i : i + 1].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xi)[0, int(y[i])], xi)
            grads[t, i] = g[0].double().numpy()
    return np.sqrt(((grads - grads.mean(axis=0)) ** 2).mean(axis=0)).mean(axis=1)


def test_tabular_vog_equals_the_paper_equation(tabular):
    states, x, y = tabular
    table = audit(mlp(), states, (x, y), batch_size=16, device="cpu", progress=False)
    windows = {"early": [0, 1, 2], "late": [2, 3, 4], "all": [0, 1, 2, 3, 4]}
    for window, idx in windows.items():
        raw = direct_tabular_vog(states, x, y, idx)
        # The engine's std runs in float32, the reference in float64.
        assert_arrays_close(table[f"vog_{window}_label_raw"], raw)
        np.testing.assert_allclose(
            table[f"vog_{window}_label"], class_z(raw, y.numpy()), rtol=1e-4, atol=1e-6
        )


def test_cli_audits_tabular_features_from_an_npz(tabular, tmp_path, capsys):
    states, x, y = tabular
    paths = []
    for t, state in enumerate(states):
        paths.append(tmp_path / f"epoch_{t + 1}.pt")
        torch.save(state, paths[-1])
    np.savez(tmp_path / "table.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=x.numpy(),
             y_test=y.numpy())  # fmt: skip
    (tmp_path / "tabnets.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(),\n"
        "                               torch.nn.Dropout(0.3), torch.nn.Linear(12, 3))\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        code = cli.main(
            ["audit", "--model", "tabnets:build", "--checkpoints", str(tmp_path / "epoch_*.pt"),
             "--data", f"npz:{tmp_path / 'table.npz'}", "--out", str(tmp_path / "r.parquet"),
             "--device", "cpu", "--quiet"]
        )  # fmt: skip
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tabnets", None)
    assert code == 0, capsys.readouterr().err
    table = pd.read_parquet(tmp_path / "r.parquet")
    raw = direct_tabular_vog(states, x, y, [0, 1, 2, 3, 4])
    assert_arrays_close(table["vog_all_label_raw"], raw)
    assert len(table) == len(x)


def test_position_limits_leave_out_the_rows_that_are_never_positions():
    from vogflow.data.text import position_limit

    roberta = transformers.RobertaConfig(max_position_embeddings=514, pad_token_id=1)
    assert position_limit(roberta) == 512  # RoBERTa numbers positions from pad_token_id + 1
    assert position_limit(transformers.BertConfig(max_position_embeddings=512)) == 512
    assert position_limit(object()) is None
