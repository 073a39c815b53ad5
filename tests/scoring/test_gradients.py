"""The streaming engine against a direct (K, N, C, H, W) re-implementation of the paper."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch
from numerics import assert_arrays_close
from torch import nn
from vog_reference import SmallCNN, direct_gradients, direct_vog, models_from

from vogflow.errors import ConfigError, DataError
from vogflow.scoring.extract import run_extraction
from vogflow.scoring.models import duplicate_checkpoints
from vogflow.scoring.options import ExtractionOptions
from vogflow.scoring.stream import extract, tensor_batches
from vogflow.scoring.vog import vog_raw, window_indices


def run(models, x, y, batch_size=8, **kw):
    n_batches = -(-len(y) // batch_size)
    return extract(
        models,
        tensor_batches(x, y, batch_size),
        num_examples=len(y),
        num_batches=n_batches,
        progress=False,
        device="cpu",
        **kw,
    )


def test_streaming_equals_direct_reference(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    result = run(models, x, y)
    full = direct_gradients(models_from(factory, states), x, y)  # (K, N, C, H, W)
    k = len(states)
    for window in ("early", "late", "all"):
        idx = window_indices(k, window)
        expected = direct_vog(full[idx])
        assert_arrays_close(result.vog_raw[f"{window}_label"], expected)
        # The reference form in vog.py agrees with both.
        np.testing.assert_allclose(vog_raw(full[idx].mean(axis=2)), expected, rtol=1e-10)
    # ... and differs from the known misreadings of eq. 3.
    maps = full.mean(axis=2)
    mu = maps.mean(0)
    misreading = (np.sqrt(1 / k) * ((maps - mu) ** 2).sum(0)).reshape(len(y), -1).mean(1)
    sample_std = maps.std(0, ddof=1).reshape(len(y), -1).mean(1)
    for wrong in (misreading, sample_std):
        assert not np.allclose(result.vog_raw["all_label"], wrong, rtol=1e-3)


def test_pred_mode_uses_final_checkpoint_prediction(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    result = run(models_from(factory, states), x, y)
    final = models_from(factory, states[-1:])[0].eval()
    with torch.no_grad():
        final_pred = final(x).argmax(1)
    np.testing.assert_array_equal(result.pred, final_pred.numpy())
    full = direct_gradients(models_from(factory, states), x, final_pred)
    assert_arrays_close(result.vog_raw["all_pred"], direct_vog(full))
    # Labels and predictions differ on random models, so the two modes must too.
    assert (final_pred != y).any()
    assert not np.allclose(result.vog_raw["all_pred"], result.vog_raw["all_label"])


class RowCounter(nn.Module):
    """Wraps a model and counts the rows of every forward pass and of every input gradient taken
    through it (the work extraction does)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows: list[int] = []
        self.backward_rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x))
        x.register_hook(lambda grad: self.backward_rows.append(len(grad)))
        return self.inner(x)


def test_pred_mode_runs_only_where_the_prediction_is_not_the_label(small_cnn_setup):
    factory, states, x, _ = small_cnn_setup
    final = models_from(factory, states[-1:])[0].eval()
    with torch.no_grad():
        final_pred = final(x).argmax(1)
    # Labels planted: the prediction everywhere but on a known subset. With batches of 8 the
    # first batch holds two of them, the second none (its pred backward is skipped), the last
    # three of its seven rows.
    differ = [3, 6, 16, 18, 20]
    y = final_pred.clone()
    y[differ] = (final_pred[differ] + 1) % 4
    models = [RowCounter(m) for m in models_from(factory, states)]
    both = run(models, x, y, batch_size=8)
    # K full forwards and backwards per batch, plus one of the differing rows per batch that has
    # any (not a second backward of the whole batch).
    assert [sum(m.rows) for m in models] == [len(y) + len(differ)] * len(models)
    assert [sum(m.backward_rows) for m in models] == [len(y) + len(differ)] * len(models)
    assert all(sorted(m.rows) == [2, 3, 7, 8, 8] for m in models)
    np.testing.assert_array_equal(both.pred, final_pred.numpy())

    agree = np.ones(len(y), dtype=bool)
    agree[differ] = False
    # Against the full `pred`-mode computation (every row's own backward) and the direct
    # reference: equal to float tolerance, since a sub-batch may sum in another order.
    alone = run(models_from(factory, states), x, y, batch_size=8, label_modes=("pred",))
    direct = direct_gradients(models_from(factory, states), x, final_pred)
    label_only = run(models_from(factory, states), x, y, batch_size=8, label_modes=("label",))
    k = len(states)
    for window in ("early", "late", "all"):
        got = both.vog_raw[f"{window}_pred"]
        assert_arrays_close(got, alone.vog_raw[f"{window}_pred"])
        assert_arrays_close(got, direct_vog(direct[window_indices(k, window)]))
        # Where the prediction is the label the two modes are one computation: the same bits.
        label = both.vog_raw[f"{window}_label"]
        np.testing.assert_array_equal(got[agree], label[agree])
        assert (got[~agree] != label[~agree]).all()
        # `label` mode is untouched by asking for `pred` too: the same computation, the same bits.
        np.testing.assert_array_equal(label, label_only.vog_raw[f"{window}_label"])
    for name, value in alone.stats.items():  # the same forward passes: the same bits
        np.testing.assert_array_equal(both.stats[name], value, err_msg=name)


def test_pred_mode_costs_nothing_when_every_prediction_is_the_label(small_cnn_setup):
    factory, states, x, _ = small_cnn_setup
    final = models_from(factory, states[-1:])[0].eval()
    with torch.no_grad():
        y = final(x).argmax(1)
    models = [RowCounter(m) for m in models_from(factory, states)]
    result = run(models, x, y, batch_size=8)
    assert [sum(m.rows) for m in models] == [len(y)] * len(models)
    assert [sum(m.backward_rows) for m in models] == [len(y)] * len(models)
    for window in ("early", "late", "all"):  # one backward serves both: the same bits
        np.testing.assert_array_equal(
            result.vog_raw[f"{window}_pred"], result.vog_raw[f"{window}_label"]
        )


def test_pred_mode_where_most_predictions_are_not_the_label(small_cnn_setup):
    # An untrained model: a second backward through the batch's graph is cheaper than a
    # sub-batch of most of its rows, so that is taken, and the result is the same.
    factory, states, x, y = small_cnn_setup
    models = [RowCounter(m) for m in models_from(factory, states)]
    both = run(models, x, y, batch_size=23)
    differ = int((both.pred != y.numpy()).sum())
    assert 2 * differ > len(y)
    assert [sum(m.rows) for m in models] == [len(y)] * len(models)
    assert [sum(m.backward_rows) for m in models] == [2 * len(y)] * len(models)
    alone = run(models_from(factory, states), x, y, batch_size=23, label_modes=("pred",))
    # The same backward kernels on the same graph and inputs: the same bits on any CPU.
    for key, scores in alone.vog_raw.items():
        np.testing.assert_array_equal(both.vog_raw[key], scores)


def test_batch_size_and_checkpoint_order_do_not_change_all_window(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    a = run(models_from(factory, states), x, y, batch_size=1, label_modes=("label",))
    b = run(models_from(factory, states), x, y, batch_size=23, label_modes=("label",))
    assert_arrays_close(a.vog_raw["all_label"], b.vog_raw["all_label"])
    rev = run(models_from(factory, states[::-1]), x, y, label_modes=("label",))
    assert_arrays_close(rev.vog_raw["all_label"], a.vog_raw["all_label"])


class Gated(nn.Module):
    """``a(x)`` where ``x[:, 0] > 0``, else ``b(x)``: checkpoints that differ only in ``b`` leave
    the gradients of the first group unchanged, so their VoG is planted at exactly 0."""

    def __init__(self, a_seed: int, b_seed: int) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)
        for layer, seed in ((self.a, a_seed), (self.b, b_seed)):
            nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, :1] > 0, self.a(x), self.b(x))


def test_unchanging_gradients_give_exactly_zero():
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 3
    result = run([Gated(0, b) for b in (1, 2, 3, 4)], x, y, windows=("all",))
    still = (x[:, 0] > 0).numpy()
    assert 0 < still.sum() < 40
    for scores in result.vog_raw.values():
        assert np.array_equal(scores[still], np.zeros(still.sum()))
        assert (scores[~still] > 0).all()


def test_the_same_checkpoint_twice_is_refused(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    adjacent = [states[0], states[1], states[1], states[2], states[3]]
    with pytest.raises(ConfigError) as err:
        run(models_from(factory, adjacent), x, y)
    assert str(err.value) == (
        "identical checkpoints #2 = #3 (positions counted from 1): a copy adds a zero-spread term "
        "that lowers every VoG; pass each checkpoint once"
    )
    # Anywhere, not only side by side; every group is named.
    apart = [states[0], states[1], states[2], states[0], states[3], states[2]]
    with pytest.raises(ConfigError, match=r"^identical checkpoints #1 = #4, #3 = #6 \("):
        run(models_from(factory, apart), x, y)
    # A copy at a new address (a reload of the same file) is still the same checkpoint.
    cloned = [states[0], {k: v.clone() for k, v in states[0].items()}, states[1]]
    assert duplicate_checkpoints(cloned) == [[0, 1]]
    assert duplicate_checkpoints(states) == []


def test_a_window_of_one_checkpoint_repeated_is_refused(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    repeated = [states[0], states[1], states[2], states[3], states[3], states[3]]
    with pytest.raises(ConfigError) as err:
        run(models_from(factory, repeated), x, y)
    assert str(err.value) == (
        "every checkpoint of the 'late' window (#4, #5, #6, counted from 1) holds the same "
        "weights, so its VoG would be 0 for every example; pass checkpoints saved at different "
        "points of training"
    )
    with pytest.raises(ConfigError, match="every checkpoint of the 'all' window"):
        run(models_from(factory, [states[0]] * 4), x, y, windows=("all",))


def test_a_step_counter_alone_does_not_make_checkpoints_differ(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    bumped = {k: v + 7 if k.endswith("num_batches_tracked") else v for k, v in states[1].items()}
    assert duplicate_checkpoints([states[0], states[1], bumped]) == [[1, 2]]


class Blind(nn.Module):
    """A classifier whose logits do not depend on its input (the input is multiplied by 0)."""

    def __init__(self, seed: int, *, detach: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.detach = detach
        nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.detach() if self.detach else x * 0)


def test_a_model_that_ignores_its_input_is_refused():
    x = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 3
    with pytest.raises(ConfigError) as err:
        run([Blind(s) for s in range(4)], x, y, windows=("all",))
    assert str(err.value).startswith(
        "every input gradient is zero, for every example at every checkpoint: the model's output "
        "ignores its input, so every VoG would be 0 and the ranking mere index order; check that "
        "forward() uses its input"
    )
    with pytest.raises(ConfigError, match=r"not differentiable w\.r\.t\. its input.*detach"):
        run([Blind(s, detach=True) for s in range(4)], x, y, windows=("all",))


def test_a_window_whose_gradients_never_change_is_refused():
    # Checkpoints differ only in the bias: the input gradient of a linear model is its weight
    # row, so the spread is 0 everywhere although no two checkpoints are the same.
    base = nn.Linear(4, 3)
    models = []
    for t in range(4):
        model = nn.Linear(4, 3)
        model.load_state_dict({"weight": base.weight, "bias": base.bias + t})
        models.append(model)
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(10) % 3
    with pytest.raises(ConfigError) as err:
        run(models, x, y, windows=("all",), label_modes=("label",))
    assert str(err.value) == (
        "vog_all_label is 0 for every example: the 'all' window's checkpoints (#1, #2, #3, #4) "
        "give identical input gradients (only weights that do not shape them changed), so it "
        "ranks nothing; use checkpoints from other epochs"
    )


def test_bf16_on_the_cpu_is_refused_and_tf32_runs_fp32(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    with pytest.raises(ConfigError) as err:
        run(models_from(factory, states), x, y, precision="bf16")
    assert str(err.value) == (
        "precision: 'bf16' is refused on the cpu device (it rounds every gradient and gains no "
        "speed there); use precision='fp32' on the CPU, or a CUDA device"
    )
    with pytest.raises(ConfigError, match="precision: 'fp16' is unknown; valid: fp32, tf32"):
        run(models_from(factory, states), x, y, precision="fp16")
    fp32 = run(models_from(factory, states), x, y, label_modes=("label",))
    with pytest.warns(UserWarning, match="'tf32' has no effect on the cpu device; running fp32"):
        tf32 = run(models_from(factory, states), x, y, label_modes=("label",), precision="tf32")
    for key, scores in fp32.vog_raw.items():  # tf32 runs the fp32 computation: the same bits
        np.testing.assert_array_equal(tf32.vog_raw[key], scores)


def test_fractional_labels_are_refused_not_truncated(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    whole = run(models_from(factory, states), x, y.double(), label_modes=("label",))
    exact = run(models_from(factory, states), x, y, label_modes=("label",))
    # One computation: whole float labels become class indices before any float work.
    np.testing.assert_array_equal(whole.vog_raw["all_label"], exact.vog_raw["all_label"])
    bad = y.double()
    bad[9] = 1.5
    bad[20] = float("nan")
    with pytest.raises(DataError) as err:
        run(models_from(factory, states), x, bad, label_modes=("label",), batch_size=23)
    assert str(err.value) == (
        "labels must be whole class indices, found 2 that are not (index 9: 1.5, index 20: nan): "
        "pass integer labels (vogflow does not round or truncate them)"
    )
    # Batch by batch, the dataset index is named (not the row within the batch).
    with pytest.raises(DataError, match=r"found 1 that are not \(index 9: 1\.5\)"):
        run(models_from(factory, states), x, bad, label_modes=("label",), batch_size=8)
    one_hot = nn.functional.one_hot(y, 4).float()
    with pytest.raises(DataError, match=r"shape \(batch,\), got shape \(8, 4\).*argmax"):
        run(models_from(factory, states), x, one_hot)


def test_a_caller_under_no_grad_still_gets_input_gradients(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    expected = run(models_from(factory, states), x, y, label_modes=("label",))
    with torch.no_grad():
        got = run(models_from(factory, states), x, y, label_modes=("label",))
    # The same computation, rerun: the same bits.
    np.testing.assert_array_equal(got.vog_raw["all_label"], expected.vog_raw["all_label"])


def test_windows_larger_than_the_run_and_bad_label_modes_are_refused(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    with pytest.raises(ConfigError, match=r"window 'early' of size 3 over 2 checkpoints"):
        run(models_from(factory, states[:2]), x, y)
    for modes in ((), ("label", "label"), ("logit",)):
        with pytest.raises(ConfigError, match=r"^label_modes: .* is not allowed; pass a non"):
            run(models_from(factory, states), x, y, label_modes=modes)


def test_linear_model_gradient_is_its_weight_row():
    # For logits = W x + b the input gradient of logit p is W[p]; VoG is the spread of W[p]
    # (channel-averaged) across checkpoints.
    torch.manual_seed(0)
    c, h, w, classes = 3, 4, 4, 5
    weights = [torch.randn(classes, c * h * w) for _ in range(4)]
    models = []
    for weight in weights:
        lin = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes))
        with torch.no_grad():
            lin[1].weight.copy_(weight)
        models.append(lin)
    x = torch.randn(6, c, h, w)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    result = run(models, x, y, label_modes=("label",))
    rows = np.stack([wt.numpy()[y.numpy()].reshape(6, c, h, w).mean(1) for wt in weights])
    expected = rows.std(0).reshape(6, -1).mean(1)
    assert_arrays_close(result.vog_raw["all_label"], expected)


def test_eval_mode_used_and_previous_mode_restored(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    for m in models:
        m.train()
    models[0].bn.eval()  # a mixed state must come back exactly
    result = run(models, x, y)
    assert all(m.training for m in models[1:])
    assert models[0].training and not models[0].bn.training
    assert all(p.requires_grad for m in models for p in m.parameters())
    # Deterministic despite dropout: eval mode was used.
    again = run(models, x, y)
    np.testing.assert_array_equal(result.vog_raw["all_label"], again.vog_raw["all_label"])
    # And equal to the eval-mode reference (BatchNorm running stats, no dropout).
    full = direct_gradients(models_from(factory, states), x, y)
    assert_arrays_close(result.vog_raw["all_label"], direct_vog(full))


def test_permuting_the_data_permutes_the_scores(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(5))
    a = run(models_from(factory, states), x, y)
    b = run(models_from(factory, states), x[perm], y[perm])
    for key in a.vog_raw:
        assert_arrays_close(b.vog_raw[key], a.vog_raw[key][perm.numpy()], err_msg=key)
    # A permutation changes which rows share a batch, and the CPU's kernels may then sum in
    # another order (AVX-512 Intel differs from AMD by ~2e-6): equal to float tolerance.
    for key in ("loss", "margin", "el2n", "msp"):
        assert_arrays_close(b.stats[key], a.stats[key][:, perm.numpy()], err_msg=key)
    np.testing.assert_array_equal(b.stats["pred"], a.stats["pred"][:, perm.numpy()])


def test_per_checkpoint_stats(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    result = run(models, x, y)
    for t, model in enumerate(models_from(factory, states)):
        with torch.no_grad():
            logits = model.eval()(x)
        loss = nn.functional.cross_entropy(logits, y, reduction="none")
        assert_arrays_close(result.stats["loss"][t], loss.numpy())
        np.testing.assert_array_equal(result.stats["pred"][t], logits.argmax(1).numpy())
        other = logits.clone()
        other[torch.arange(len(y)), y] = -np.inf
        margin = logits[torch.arange(len(y)), y] - other.max(1).values
        assert_arrays_close(result.stats["margin"][t], margin.numpy())
    assert result.stats["loss"].shape == (len(states), len(y))


def test_bad_inputs_fail_clearly(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    with pytest.raises(ConfigError, match="at least 2 checkpoints"):
        run(models_from(factory, states[:1]), x, y)
    with pytest.raises(ValueError, match="window size must be at least 2"):
        run(models_from(factory, states[:3]), x, y, window_size=1)
    other = SmallCNN(classes=7)
    with pytest.raises(ConfigError, match="another architecture or class count"):
        run([*models_from(factory, states[:2]), other], x, y)
    with pytest.raises(ConfigError, match="empty"):
        run(models_from(factory, states), x[:0], y[:0])
    with pytest.raises(ConfigError, match="labels range"):
        run(models_from(factory, states), x, y + 10)
    bad = x.clone()
    bad[3] = float("nan")
    bad[17] = float("inf")
    with pytest.raises(ConfigError, match=r"non-finite inputs .* indices 3, 17"):
        run(models_from(factory, states), bad, y)


class LogModel(nn.Module):
    """d log(x)/dx is infinite at 0: a model whose gradient blows up on chosen examples."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.log(x))


def test_non_finite_gradients_name_the_examples():
    x = torch.rand(12, 4) + 0.5
    x[4, 1] = 0.0
    x[9, 0] = 0.0
    y = torch.zeros(12, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"input gradients for 2 example\(s\), indices 4, 9"):
        run(
            [LogModel(0), LogModel(1)], x, y, batch_size=5, label_modes=("label",), windows=("all",)
        )


def test_num_examples_must_match_the_batches(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    with pytest.raises(ConfigError, match="more than num_examples=10"):
        extract(models, tensor_batches(x, y, 8), num_examples=10, progress=False, device="cpu")
    with pytest.raises(ConfigError, match="held 23 examples, not num_examples=30"):
        extract(models, tensor_batches(x, y, 8), num_examples=30, progress=False, device="cpu")


def test_channels_last_gives_the_same_scores_and_leaves_the_model_as_it_was(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    plain = run(models, x, y)
    fast = run(models, x, y, channels_last=True)
    for key, value in plain.vog_raw.items():
        # Another layout sums in another order: equal to float rounding, not bit for bit.
        assert_arrays_close(fast.vog_raw[key], value, err_msg=key)
    np.testing.assert_array_equal(fast.pred, plain.pred)
    for model in models:
        conv = next(p for p in model.parameters() if p.dim() == 4)
        assert conv.is_contiguous(), "the caller's model keeps its own memory layout"
    # ... and a model already channels-last stays so.
    models[0].to(memory_format=torch.channels_last)
    run(models, x, y, channels_last=True)
    conv = next(p for p in models[0].parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    # Point inputs have no layout to change: the option is a no-op there.
    points = [nn.Linear(5, 3) for _ in range(4)]
    xp, yp = torch.randn(9, 5), torch.randint(0, 3, (9,))
    a, b = run(points, xp, yp), run(points, xp, yp, channels_last=True)
    for key, value in a.vog_raw.items():  # the same computation: the same bits
        np.testing.assert_array_equal(b.vog_raw[key], value)


def test_options_are_checked_once_when_built():
    options = ExtractionOptions(windows=["all", "late"], label_modes=["pred"])
    assert options.windows == ("all", "late") and options.label_modes == ("pred",)
    with pytest.raises(FrozenInstanceError):
        options.batch_size = 8
    refused = [
        ({"windows": ("all", "all")}, "windows: ['all', 'all'] is not allowed; pass a non-empty"),
        ({"window_size": 2.5}, "window_size: 2.5 is not allowed; pass an integer >= 2"),
        ({"window_size": True}, "window_size: True is not allowed; pass an integer >= 2"),
        ({"window_size": 1}, "window size must be at least 2 (VoG is a spread), got 1"),
        ({"label_modes": ()}, "label_modes: [] is not allowed; pass a non-empty list"),
        ({"normalise": "zz"}, "normalise: 'zz' is not allowed; valid: z, none, abs"),
        ({"batch_size": 0}, "batch_size: 0 is not allowed; pass an integer >= 1"),
        ({"precision": "fp16"}, "precision: 'fp16' is unknown; valid: fp32, tf32, bf16"),
    ]
    for fields, message in refused:
        with pytest.raises(ConfigError) as err:
            ExtractionOptions(**fields)
        assert str(err.value).startswith(message), fields
        # A change to built options is checked like a new one.
        with pytest.raises(ConfigError):
            ExtractionOptions.of(options, **fields)
    assert ExtractionOptions(window_size=2).window_positions(3) == {
        "early": [0, 1],
        "late": [1, 2],
        "all": [0, 1, 2],
    }
    with pytest.raises(ConfigError, match="VoG needs at least 2 checkpoints, got 1"):
        options.window_positions(1)
    with pytest.raises(ConfigError, match="window 'late' of size 3 over 3 checkpoints"):
        options.window_positions(3)


def test_options_object_and_keywords_give_the_same_extraction(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    options = ExtractionOptions(label_modes=("label",), batch_size=8, device="cpu", progress=False)
    by_object = run_extraction(models_from(factory, states), (x, y), options)
    by_keywords = run_extraction(
        models_from(factory, states),
        (x, y),
        label_modes=("label",),
        batch_size=8,
        device="cpu",
        progress=False,
    )
    # The same computation, rerun (one options value, two ways to give it): the same bits.
    for key, scores in by_object.vog_raw.items():
        np.testing.assert_array_equal(by_keywords.vog_raw[key], scores)
    # Keywords change the given options.
    changed = run_extraction(models_from(factory, states), (x, y), options, windows=("all",))
    assert list(changed.vog_raw) == ["all_label"]
