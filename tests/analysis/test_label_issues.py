"""The label-issue estimate: planted flips found, clean separable data left alone, the rule
pinned against cleanlab's function on the same probabilities, and the probabilities the
gradients pass keeps pinned against a direct forward pass of every checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cleanlab.filter import find_label_issues as cleanlab_issues
from torch import nn

from vogflow.analysis.label_issues import find_label_issues, flag_quality, issues_per_class
from vogflow.scoring.stream import extract, tensor_batches

CLASSES = 3


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % CLASSES
    centres = np.array([[4.0, 0.0], [-2.0, 3.5], [-2.0, -3.5]])
    x = centres[y] + rng.normal(size=(n, 2))
    return torch.tensor(x, dtype=torch.float32), y


def _checkpoints(x: torch.Tensor, y: np.ndarray, epochs: int = 8) -> list[nn.Module]:
    """A small MLP trained on (x, y), one copy of it after every epoch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    target = torch.as_tensor(y)
    saved = []
    for _ in range(epochs):
        for i in range(0, len(y), 32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 32]), target[i : i + 32]).backward()
            opt.step()
        copy = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, CLASSES))
        copy.load_state_dict(model.state_dict())
        saved.append(copy)
    return saved


def _extract(models: list[nn.Module], x: torch.Tensor, y: np.ndarray):
    return extract(
        models,
        tensor_batches(x, torch.as_tensor(y), 64),
        num_examples=len(y),
        window_size=3,
        device="cpu",
        progress=False,
    )


def test_planted_label_flips_are_found():
    x, true = _blobs(600, seed=0)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(true), size=60, replace=False)
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, CLASSES, size=60)) % CLASSES
    ext = _extract(_checkpoints(x, given), x, given)
    issues = find_label_issues(ext.probs, given)
    quality = flag_quality(issues.label_issue, given != true)
    assert quality["precision"] >= 0.9 and quality["recall"] >= 0.9, quality
    # Where flagged, the suggestion is the class the example was drawn from.
    hit = issues.label_issue & (given != true)
    assert (issues.suggested_label[hit] == true[hit]).mean() >= 0.95
    counts = issues_per_class(issues, given, CLASSES)
    assert counts.sum() == issues.label_issue.sum() and np.trace(counts) == 0


def test_a_clean_separable_set_flags_nothing():
    x, y = _blobs(300, seed=2)
    ext = _extract(_checkpoints(x, y), x, y)
    issues = find_label_issues(ext.probs, y)
    assert not issues.label_issue.any()
    assert (issues.suggested_label == y).all()
    np.testing.assert_array_equal(issues.suggested_label_prob, issues.label_prob)


def test_kept_probabilities_are_the_mean_softmax_of_every_checkpoint():
    x, y = _blobs(90, seed=3)
    models = _checkpoints(x, y, epochs=5)
    ext = _extract(models, x, y)
    with torch.no_grad():
        direct = torch.stack([torch.softmax(m(x), dim=1) for m in models]).mean(0).numpy()
    assert ext.probs.shape == (len(y), CLASSES)
    np.testing.assert_allclose(ext.probs, direct, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_rule_is_cleanlabs_predicted_neq_given_on_the_same_probabilities(seed):
    rng = np.random.default_rng(seed)
    n, c = 500, 5
    label = np.arange(n) % c
    logits = rng.normal(size=(n, c)) * 2
    logits[np.arange(n), label] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ours = find_label_issues(probs, label)
    theirs = cleanlab_issues(label, probs, filter_by="predicted_neq_given")
    assert ours.label_issue.any() and not ours.label_issue.all()
    np.testing.assert_array_equal(ours.label_issue, theirs)
    np.testing.assert_array_equal(ours.suggested_label[theirs], probs[theirs].argmax(1))


def test_a_tie_keeps_the_label_and_bad_shapes_are_refused():
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    issues = find_label_issues(probs, np.array([1, 2]))
    assert not issues.label_issue.any()
    with pytest.raises(ValueError, match="classes"):
        find_label_issues(probs, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        find_label_issues(probs[0], np.array([0]))


def test_flag_quality_counts_hits():
    flagged = np.array([True, True, False, False])
    wrong = np.array([True, False, True, False])
    assert flag_quality(flagged, wrong) == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "flagged": 2, "wrong": 2}
    )
    assert flag_quality(np.zeros(3, bool), np.zeros(3, bool))["f1"] != 0.0  # NaN, not 0
