"""Shared fixtures (the helpers test modules import are in helpers.py). Everything runs offline on
CPU."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch
from helpers import write_bimodal

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def bimodal_zarr(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "bimodal.zarr"
    write_bimodal(path)
    return str(path)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors: with a second thread on a shared 2-core machine the ops
    spend more time synchronising than computing (measured 10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
