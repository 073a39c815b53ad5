"""The streaming engine against a direct (K, N, C, H, W) re-implementation of the paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SmallCNN, direct_gradients, direct_vog, models_from
from torch import nn

from vogflow.gradients import GradientError, extract, tensor_batches
from vogflow.vog import vog_raw, window_indices


def run(models, x, y, batch_size=8, **kw):
    n_batches = -(-len(y) // batch_size)
    return extract(models, tensor_batches(x, y, batch_size), num_examples=len(y),
                   num_batches=n_batches,
                   progress=False, device="cpu", **kw)  # fmt: skip


def test_streaming_equals_direct_reference(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    result = run(models, x, y)
    full = direct_gradients(models_from(factory, states), x, y)  # (K, N, C, H, W)
    k = len(states)
    for window in ("early", "late", "all"):
        idx = window_indices(k, window)
        expected = direct_vog(full[idx])
        np.testing.assert_allclose(result.vog_raw[f"{window}_label"], expected, rtol=1e-4)
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
    np.testing.assert_allclose(result.vog_raw["all_pred"], direct_vog(full), rtol=1e-4)
    # Labels and predictions differ on random models, so the two modes must too.
    assert (final_pred != y).any()
    assert not np.allclose(result.vog_raw["all_pred"], result.vog_raw["all_label"])


def test_batch_size_and_checkpoint_order_do_not_change_all_window(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    a = run(models_from(factory, states), x, y, batch_size=1, label_modes=("label",))
    b = run(models_from(factory, states), x, y, batch_size=23, label_modes=("label",))
    np.testing.assert_allclose(a.vog_raw["all_label"], b.vog_raw["all_label"], rtol=1e-5)
    rev = run(models_from(factory, states[::-1]), x, y, label_modes=("label",))
    np.testing.assert_allclose(rev.vog_raw["all_label"], a.vog_raw["all_label"], rtol=1e-5)


def test_identical_checkpoints_give_exactly_zero(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    result = run(models_from(factory, [states[0]] * 4), x, y)
    for scores in result.vog_raw.values():
        assert np.array_equal(scores, np.zeros(len(y)))


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
    np.testing.assert_allclose(result.vog_raw["all_label"], expected, rtol=1e-5)


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
    np.testing.assert_allclose(result.vog_raw["all_label"], direct_vog(full), rtol=1e-4)


def test_permuting_the_data_permutes_the_scores(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(5))
    a = run(models_from(factory, states), x, y)
    b = run(models_from(factory, states), x[perm], y[perm])
    for key in a.vog_raw:
        np.testing.assert_allclose(b.vog_raw[key], a.vog_raw[key][perm.numpy()], rtol=1e-5)
    # A permutation changes which rows share a batch, and the CPU's kernels may then sum in
    # another order (AVX-512 Intel differs from AMD by ~2e-6): equal to float tolerance.
    for key in ("loss", "margin", "el2n", "msp"):
        np.testing.assert_allclose(
            b.stats[key], a.stats[key][:, perm.numpy()], rtol=1e-5, atol=1e-6, err_msg=key
        )
    np.testing.assert_array_equal(b.stats["pred"], a.stats["pred"][:, perm.numpy()])


def test_per_checkpoint_stats(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    result = run(models, x, y)
    for t, model in enumerate(models_from(factory, states)):
        with torch.no_grad():
            logits = model.eval()(x)
        loss = nn.functional.cross_entropy(logits, y, reduction="none")
        np.testing.assert_allclose(result.stats["loss"][t], loss.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(result.stats["pred"][t], logits.argmax(1).numpy())
        other = logits.clone()
        other[torch.arange(len(y)), y] = -np.inf
        margin = logits[torch.arange(len(y)), y] - other.max(1).values
        np.testing.assert_allclose(result.stats["margin"][t], margin.numpy(), rtol=1e-5)
    assert result.stats["loss"].shape == (len(states), len(y))


def test_bad_inputs_fail_clearly(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    with pytest.raises(GradientError, match="at least 2 checkpoints"):
        run(models_from(factory, states[:1]), x, y)
    with pytest.raises(ValueError, match="window size must be at least 2"):
        run(models_from(factory, states[:3]), x, y, window_size=1)
    other = SmallCNN(classes=7)
    with pytest.raises(GradientError, match="another architecture or class count"):
        run([*models_from(factory, states[:2]), other], x, y)
    with pytest.raises(GradientError, match="empty"):
        run(models_from(factory, states), x[:0], y[:0])
    with pytest.raises(GradientError, match="labels range"):
        run(models_from(factory, states), x, y + 10)
    bad = x.clone()
    bad[3] = float("nan")
    bad[17] = float("inf")
    with pytest.raises(GradientError, match=r"non-finite inputs .* indices 3, 17"):
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
    with pytest.raises(GradientError, match=r"input gradients for 2 example\(s\), indices 4, 9"):
        run([LogModel(0), LogModel(1)], x, y, batch_size=5, label_modes=("label",))


def test_num_examples_must_match_the_batches(small_cnn_setup):
    factory, states, x, y = small_cnn_setup
    models = models_from(factory, states)
    with pytest.raises(GradientError, match="more than num_examples=10"):
        extract(models, tensor_batches(x, y, 8), num_examples=10, progress=False, device="cpu")
    with pytest.raises(GradientError, match="held 23 examples, not num_examples=30"):
        extract(models, tensor_batches(x, y, 8), num_examples=30, progress=False, device="cpu")
