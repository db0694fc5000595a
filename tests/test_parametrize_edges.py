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


# --------------------------------------------------------------------------- removal with stale trainers

def _train_steps(step, n=3):
    x = ms.Tensor(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    y = ms.Tensor(np.zeros((8, 2), np.float32))
    return [float(step(x, y).asnumpy()) for _ in range(n)]


def test_removal_under_a_live_optimizer_warns_and_names_the_parameters():
    """The order the registration check cannot see: weight norm, optimizer, then removal."""
    from ms_weightnorm import apply_weight_norm, remove_all_weight_norm

    net = nn.SequentialCell([nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 2)])
    apply_weight_norm(net)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Adam(net.trainable_params(), 0.1))
    with pytest.warns(P.StaleTrainerWarning) as record:
        assert remove_all_weight_norm(net) == ["0", "2"]
    assert len(record) == 1  # one warning for the network, not one per layer
    text = str(record[0].message)
    assert "in cells '0', '2'" in text and "Adam, TrainOneStepCell" in text
    assert "'0.weight_g' and '0.weight_v'" in text and "would never train" in text
    assert "build the optimizer and training cells again" in text and "this is harmless" in text
    # What the warning is about: the old training cell still runs, and the folded weight stays put.
    before = net[0].weight.asnumpy().copy()
    losses = _train_steps(step)
    assert losses[0] != losses[-1]
    np.testing.assert_array_equal(net[0].weight.asnumpy(), before)


@pytest.mark.parametrize("remove", ["remove_weight_norm", "remove_parametrization", "wrapper"])
def test_each_removal_path_warns_under_a_live_optimizer(remove):
    from ms_weightnorm import WeightNorm, remove_weight_norm, weight_norm

    layer = nn.Dense(3, 3)
    if remove == "wrapper":
        wrapper = WeightNorm(layer)
        opt = nn.SGD(wrapper.trainable_params())
        with pytest.warns(P.StaleTrainerWarning, match=r"SGD, an optimizer .* still holds 'module.weight_g'"):
            wrapper.remove_weight_norm()
        return
    weight_norm(layer)
    opt = nn.SGD(layer.trainable_params())
    call = (lambda: remove_weight_norm(layer)) if remove == "remove_weight_norm" else (
        lambda: P.remove_parametrization(layer, "weight"))
    with pytest.warns(P.StaleTrainerWarning, match=r"^Dense cell: removing the parametrization of 'weight' while SGD"):
        call()
    assert opt is not None and not P.is_parametrized(layer)


def test_removal_without_a_live_optimizer_is_silent():
    import warnings

    from ms_weightnorm import remove_weight_norm, weight_norm

    layer = weight_norm(nn.Dense(3, 3))
    opt = nn.SGD(layer.trainable_params())
    del opt  # training is over: the optimizer is gone
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        remove_weight_norm(layer)
    # A new optimizer built after the removal trains the folded weight.
    opt = nn.SGD(layer.trainable_params())
    assert [p.name for p in opt.parameters] == ["weight", "bias"]


# --------------------------------------------------------------------------- readable signatures and messages

def test_help_shows_readable_defaults():
    import inspect
    import pydoc

    import ms_weightnorm as W

    for fn in (W.weight_norm, W.remove_weight_norm):
        sig = str(inspect.signature(fn))
        assert "module: 'nn.Cell' = <required>" in sig and "cell: 'nn.Cell' = <alias of module>" in sig, sig
        assert "object at 0x" not in pydoc.render_doc(fn)
    with pytest.raises(TypeError, match=r"weight_norm\(\) missing the layer"):
        W.weight_norm()
    with pytest.raises(TypeError, match="got both module= and cell="):
        W.weight_norm(nn.Dense(2, 2), cell=nn.Dense(2, 2))
    assert W.weight_norm(cell=nn.Dense(2, 2)).weight_g.shape == (2, 1)


def test_messages_name_a_parameter_once_when_its_names_agree():
    from ms_weightnorm import weight_norm

    layer = nn.Dense(3, 3)
    opt = nn.SGD(layer.trainable_params())
    with pytest.raises(ValueError) as err:
        weight_norm(layer)
    assert "Dense cell: its Parameter 'weight' is also held by SGD" in str(err.value)
    assert "(named" not in str(err.value) and opt is not None
    # Different names are both said: the key in the cell, and the Parameter's own name.
    net = nn.SequentialCell([nn.Dense(3, 3)])
    opt = nn.SGD(net.trainable_params())
    with pytest.raises(ValueError, match=r"its Parameter 'weight' \(named '0.weight'\) is also held by SGD"):
        weight_norm(net[0])
