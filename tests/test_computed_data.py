"""``.data`` of a computed (weight-normed) weight, as PyTorch-style init code uses it (issue 29).

``layer.weight.data`` reads the computed value ``g * v / ||v||``, and
``layer.weight.data.set_data(X)`` (mindone's SEW and SEW-D init) and ``layer.weight.data = X``
re-split X into g and v exactly as ``layer.weight.set_data(X)`` does, on the core layers.
"""
import numpy as np
import pytest
from mindspore import Tensor, nn
from mindspore.common.initializer import Normal, initializer

from ms_weightnorm import weight_norm

LAYERS = {
    "Dense": lambda: nn.Dense(4, 3),
    "Conv1d": lambda: nn.Conv1d(3, 4, 3, has_bias=True),
    "Conv2d": lambda: nn.Conv2d(3, 4, 3, has_bias=True),
    "Conv1dTranspose": lambda: nn.Conv1dTranspose(3, 4, 3, has_bias=True),
}


def _composed(layer):
    g = layer.weight_g.asnumpy().astype(np.float64)
    v = layer.weight_v.asnumpy().astype(np.float64)
    axes = tuple(a for a in range(v.ndim) if g.shape[a] == 1)
    return g * v / np.sqrt((v ** 2).sum(axis=axes, keepdims=True))


def _split(value, layer):
    """g and v that weight norm's re-split gives for ``value`` on ``layer``'s dim."""
    axes = tuple(a for a in range(value.ndim) if layer.weight_g.shape[a] == 1)
    return np.sqrt((value.astype(np.float64) ** 2).sum(axis=axes, keepdims=True)), value


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_data_reads_the_computed_value(name):
    layer = weight_norm(LAYERS[name]())
    np.testing.assert_allclose(layer.weight.data.asnumpy(), _composed(layer), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(layer.weight.data.asnumpy(), layer.weight.asnumpy())


@pytest.mark.parametrize("form", ["data.set_data", "data ="])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_data_set_data_re_splits_as_set_data_does(name, form):
    rng = np.random.default_rng(7)
    via_data, reference = weight_norm(LAYERS[name]()), weight_norm(LAYERS[name]())
    shape = tuple(via_data.weight.shape)
    value = rng.standard_normal(shape).astype(np.float32)
    weight = via_data.weight  # init code holds the weight it sets, as with weight.set_data
    if form == "data.set_data":
        weight.data.set_data(Tensor(value))
    else:
        weight.data = Tensor(value)
    reference.weight.set_data(Tensor(value))
    g, v = _split(value, via_data)
    np.testing.assert_allclose(via_data.weight_g.asnumpy(), g, rtol=1e-6)
    np.testing.assert_array_equal(via_data.weight_v.asnumpy(), v)
    np.testing.assert_array_equal(via_data.weight_g.asnumpy(), reference.weight_g.asnumpy())
    np.testing.assert_array_equal(via_data.weight_v.asnumpy(), reference.weight_v.asnumpy())
    np.testing.assert_allclose(via_data.weight.asnumpy(), value, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(weight.asnumpy(), value, rtol=1e-6, atol=1e-6)


def test_lazy_initializer_through_data_and_the_forward_uses_it():
    # mindone's init style: a lazy initializer tensor, set through .data.
    layer = weight_norm(nn.Dense(4, 3))
    layer.weight.data.set_data(initializer(Normal(0.02), (3, 4)))
    w = layer.weight.asnumpy()
    assert 0 < np.abs(w).max() < 0.2 and np.unique(w).size == 12  # drawn, not zeros or the old values
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).asnumpy(), x @ w.T + layer.bias.asnumpy(), rtol=1e-5, atol=1e-6)


def test_data_set_data_with_the_wrong_shape_changes_nothing():
    layer = weight_norm(nn.Dense(4, 3))
    g, v = layer.weight_g.asnumpy().copy(), layer.weight_v.asnumpy().copy()
    with pytest.raises(ValueError) as info:
        layer.weight.data.set_data(Tensor(np.ones((4, 3), np.float32)))
    assert "shape (4, 3)" in str(info.value) and "shape (3, 4)" in str(info.value), str(info.value)
    np.testing.assert_array_equal(layer.weight_g.asnumpy(), g)
    np.testing.assert_array_equal(layer.weight_v.asnumpy(), v)
