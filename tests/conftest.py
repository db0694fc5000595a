"""Shared fixtures: every test that takes ``mode`` runs once in PyNative and once in GRAPH_MODE."""
import mindspore as ms
import numpy as np
import pytest

ms.set_context(device_target="CPU")

MODES = {"pynative": ms.PYNATIVE_MODE, "graph": ms.GRAPH_MODE}


@pytest.fixture(params=sorted(MODES))
def mode(request):
    """Set the named execution mode; restore PyNative afterwards.

    GRAPH_MODE compiles Cells and ``ms.jit``/``ms.grad`` functions only: a bare function call
    still runs eagerly. Forward checks of plain functions go through ``helpers.in_mode``, which
    compiles them with ``ms.jit`` and asserts that a graph was really built.
    """
    ms.set_context(mode=MODES[request.param])
    try:
        yield request.param
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
