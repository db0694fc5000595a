"""Shared fixtures: every test that takes ``mode`` runs once in PyNative and once in GRAPH_MODE."""
import mindspore as ms
import numpy as np
import pytest

ms.set_context(device_target="CPU")

MODES = {"pynative": ms.PYNATIVE_MODE, "graph": ms.GRAPH_MODE}


@pytest.fixture(params=sorted(MODES))
def mode(request):
    """Run the test in the named execution mode; restore PyNative afterwards."""
    ms.set_context(mode=MODES[request.param])
    try:
        yield request.param
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
