"""Shared fixtures. Kept free of heavy imports (torch, servers): a test that needs the small
models imports ``vog_reference``, one that needs a tracking server imports ``servers``."""

from __future__ import annotations

import sys

import pytest


def __getattr__(name: str):
    # `from conftest import SmallCNN` keeps working, importing torch only when asked.
    import vog_reference

    try:
        return getattr(vog_reference, name)
    except AttributeError:
        raise AttributeError(f"module 'conftest' has no attribute {name!r}") from None


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # The tensors in the tests are tiny: a second intra-op thread only adds synchronisation,
    # which costs several times the work itself when the machine is busy. Torch only where the
    # collected test files loaded it: a run of torch-free tests stays free of it.
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_cnn_setup():
    import torch
    from vog_reference import SmallCNN, perturbed_checkpoints

    torch.manual_seed(0)

    def factory():
        return SmallCNN()

    states = perturbed_checkpoints(factory(), k=5, seed=1)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(23, 3, 6, 6, generator=gen)
    y = torch.randint(0, 4, (23,), generator=gen)
    return factory, states, x, y
