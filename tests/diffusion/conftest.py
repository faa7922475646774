"""Fixtures for the numerical-core tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Every tensor in these modules is tiny: with a second thread on a shared 2-core machine
    the ops spend more time synchronising than computing (measured 10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
