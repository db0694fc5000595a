"""Edges of the parametrization mechanism that mutation testing found unchecked."""
from dataclasses import dataclass
from typing import ClassVar, Tuple

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops

from ms_weightnorm import parametrize as P

from helpers import SumSquares, grads


@dataclass(frozen=True)
class Affine3(P.Parametrization):
    """w = a * b + c from three Parameters: the mechanism's largest supported arity."""

    suffixes: ClassVar[Tuple[str, ...]] = ("a", "b", "c")

    def split(self, weight):
        return weight * 0 + 2.0, weight / 4, weight / 2

    def compose_fn(self):
        def compose(a, b, c):
            return a * b + c
        return compose


@dataclass(frozen=True)
class Four(P.Parametrization):
    suffixes: ClassVar[Tuple[str, ...]] = ("a", "b", "c", "d")

    def split(self, weight):
        return weight, weight, weight, weight

    def compose_fn(self):
        def compose(a, b, c, d):
            return a + b + c + d
        return compose


def test_three_parameter_parametrization(mode):
    """Outputs kept at registration, gradients to all three: d(a*b+c) = (b, a, 1) * dL/dw."""
    rng = np.random.default_rng(5)
    layer = nn.Dense(4, 3)
    w0 = layer.weight.asnumpy().copy()
    x_np = rng.standard_normal((2, 4)).astype(np.float32)
    P.register_parametrization(layer, "weight", Affine3())
    np.testing.assert_allclose(layer.weight.asnumpy(), w0, rtol=1e-6)
    a, b, c = layer.weight_a, layer.weight_b, layer.weight_c
    _, (ga, gb, gc) = grads(SumSquares(layer), ms.Tensor(x_np), [a, b, c])
    y = x_np.astype(np.float64) @ w0.T + layer.bias.asnumpy()
    grad_w = 2 * y.T @ x_np  # dL/dw for L = sum(y^2)
    np.testing.assert_allclose(gc, grad_w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ga, grad_w * b.asnumpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, grad_w * a.asnumpy(), rtol=1e-4, atol=1e-5)


def test_more_than_three_parameters_is_refused():
    with pytest.raises(NotImplementedError, match="more than 3"):
        P.register_parametrization(nn.Dense(2, 2), "weight", Four())


class _PrivateTuple(nn.Cell):
    """Keeps its Parameters in a private tuple too (its own bookkeeping, never read in construct)."""

    def __init__(self):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones((2, 3), np.float32)), name="weight")
        self._bookkeeping = (self.weight,)

    def construct(self, x):
        return ops.matmul(x, self.weight.T)


def test_private_tuple_attributes_are_left_alone():
    """Only public tuple attributes (nn.LSTM's w_ih_list...) are rebuilt as computed tuples."""
    from ms_weightnorm import weight_norm
    cell = _PrivateTuple()
    original = cell.weight
    weight_norm(cell)
    assert vars(cell)["_bookkeeping"][0] is original
    assert "_bookkeeping" not in type(cell).__dict__
