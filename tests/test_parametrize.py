"""The general mechanism, with a parametrization of its own (not weight norm)."""
from dataclasses import dataclass
from typing import ClassVar, Tuple

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from ms_weightnorm import parametrize as P
from ms_weightnorm import weight_norm

from helpers import SumSquares, grads, param_names


@dataclass(frozen=True)
class Scaled(P.Parametrization):
    """w = s * u with a scalar s: the simplest non-trivial split."""

    suffixes: ClassVar[Tuple[str, ...]] = ("s", "u")

    def split(self, weight):
        return Tensor(np.array(2.0, np.float32)), weight / 2

    def compose_fn(self):
        def compose(s, u):
            return s * u
        return compose


def test_register_and_remove_a_custom_parametrization(mode):
    layer = nn.Dense(3, 2)
    x = Tensor(np.ones((4, 3), np.float32))
    before = layer(x).asnumpy()
    P.register_parametrization(layer, "weight", Scaled())
    assert P.is_parametrized(layer, "weight") and P.original_class(layer) is nn.Dense
    assert param_names(layer) == ["weight_s", "weight_u", "bias"]
    np.testing.assert_allclose(layer(x).asnumpy(), before, rtol=1e-6)
    _, (gs, gu) = grads(SumSquares(layer), x, [layer.weight_s, layer.weight_u])
    assert gs.shape == () and abs(float(gs)) > 0 and np.abs(gu).sum() > 0
    folded = P.remove_parametrization(layer, "weight")
    assert type(layer) is nn.Dense and folded is layer.weight
    assert param_names(layer) == ["weight", "bias"]
    np.testing.assert_allclose(layer(x).asnumpy(), before, rtol=1e-6)


def test_generated_classes_are_cached_and_named_after_the_layer():
    a = weight_norm(nn.Dense(3, 2))
    b = weight_norm(nn.Dense(4, 5))
    c = weight_norm(nn.Dense(4, 5), dim=1)
    assert type(a) is type(b) and type(a) is not type(c)
    # Not "Dense" itself: see test_a_subclass_calling_super_by_name_compiles_after_registration.
    assert type(a).__name__ == "ParametrizedDense" and isinstance(a, nn.Dense)
    assert P.class_name(a) == "Dense" and repr(a).startswith("ParametrizedDense(")  # as PyTorch prints it


def test_two_parametrizations_on_one_cell_and_removal_in_any_order():
    layer = nn.Dense(3, 2)
    P.register_parametrization(layer, "weight", Scaled())
    weight_norm(layer, "bias")
    assert P.parametrizations(layer).keys() == {"weight", "bias"}
    P.remove_parametrization(layer, "weight")
    assert P.parametrizations(layer).keys() == {"bias"}
    assert type(layer).__name__ == "ParametrizedDense" and P.original_class(layer) is nn.Dense
    P.remove_parametrization(layer, "bias")
    assert type(layer) is nn.Dense
    assert param_names(layer) == ["weight", "bias"]


def test_two_slots_of_one_parameter_tuple(mode):
    """nn.LSTM reads w_ih_list; both directions' weights normed, then removed one by one."""
    lstm = nn.LSTM(3, 4, bidirectional=True)
    x = Tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32))
    loss0, _ = grads(SumSquares(lstm), x, lstm.trainable_params())
    weight_norm(lstm, "weight_ih_l0")
    weight_norm(lstm, "weight_ih_l0_reverse")
    params = [lstm.weight_ih_l0_g, lstm.weight_ih_l0_v, lstm.weight_ih_l0_reverse_g, lstm.weight_ih_l0_reverse_v]
    loss, gs = grads(SumSquares(lstm), x, params)
    assert loss == pytest.approx(loss0, rel=1e-5)
    assert all(np.abs(g).sum() > 0 for g in gs)
    P.remove_parametrization(lstm, "weight_ih_l0")
    _, gs = grads(SumSquares(lstm), x, [lstm.weight_ih_l0, lstm.weight_ih_l0_reverse_g])
    assert all(np.abs(g).sum() > 0 for g in gs)
    P.remove_parametrization(lstm, "weight_ih_l0_reverse")
    assert isinstance(lstm.w_ih_list, ms.ParameterTuple)
    assert [p.name for p in lstm.w_ih_list] == ["layer.weight_ih_l0", "layer.weight_ih_l0_reverse"]


def test_registration_rejects_non_cells_and_name_clashes():
    with pytest.raises(TypeError, match="mindspore.nn.Cell"):
        P.register_parametrization(object(), "weight", Scaled())
    layer = nn.Dense(3, 2)
    layer.weight_s = ms.Parameter(Tensor(np.ones(1, np.float32)))
    with pytest.raises(ValueError, match="already has an attribute 'weight_s'"):
        P.register_parametrization(layer, "weight", Scaled())
    assert type(layer) is nn.Dense and "weight" in layer._params


def test_invalidate_compiled_graphs_is_safe_without_graphs():
    P.invalidate_compiled_graphs()
    P.invalidate_compiled_graphs()


def test_a_tie_shares_one_set_of_new_parameters(mode):
    """register_parametrizations follows a tie to every holder; removal folds once and re-ties."""
    net = nn.SequentialCell([nn.Dense(3, 3), nn.Tanh(), nn.Dense(3, 3)])
    net[2].weight = net[0].weight
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    before = net(x).asnumpy()
    w0 = net[0].weight.asnumpy().astype(np.float64)
    loss0, (grad_w,) = grads(SumSquares(net), x, [net[0].weight])  # both uses of the tied weight
    changed = P.register_parametrizations(net, [("0", net[0], "weight")], lambda cell, name: Scaled(),
                                          lambda cell: True)
    assert changed == ["0", "2"]
    assert net[2].weight_s is net[0].weight_s and net[2].weight_u is net[0].weight_u
    assert param_names(net) == ["0.weight_s", "0.weight_u", "0.bias", "2.bias"]
    np.testing.assert_allclose(net(x).asnumpy(), before, rtol=1e-6)
    # w = s * u: dL/ds = sum(dL/dw * u), dL/du = s * dL/dw, with dL/dw summed over both uses.
    loss, (gs, gu) = grads(SumSquares(net), x, [net[0].weight_s, net[0].weight_u])
    assert loss == pytest.approx(loss0, rel=1e-6)
    np.testing.assert_allclose(gs, (grad_w * w0 / 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(gu, 2 * grad_w, rtol=1e-5, atol=1e-7)
    folded = P.remove_parametrization(net[2], "weight")
    assert net[0].weight is folded and net[2].weight is folded
    assert type(net[0]) is nn.Dense and type(net[2]) is nn.Dense
    np.testing.assert_allclose(net(x).asnumpy(), before, rtol=1e-6)


def test_a_refused_tie_changes_nothing():
    net = nn.SequentialCell([nn.Dense(3, 3), nn.Dense(3, 3)])
    net[1].weight = net[0].weight
    with pytest.raises(ValueError, match=r"cell '1' \(Dense, as 'weight'\).*not selected"):
        P.register_parametrizations(net, [("0", net[0], "weight")], lambda cell, name: Scaled(),
                                    lambda cell: cell is net[0])
    assert type(net[0]) is nn.Dense and net[1].weight is net[0].weight
    with pytest.raises(ValueError, match=r"shared with a Dense cell \(as 'weight'\)"):
        P.register_parametrization(net[1], "weight", Scaled())
    assert type(net[1]) is nn.Dense and net[1].weight is net[0].weight


def test_holders_are_found_with_and_without_the_scan():
    """The refcount shortcut never hides a holder: compare it with the full scan."""
    a, b, c = nn.Dense(2, 2), nn.Dense(2, 2), nn.LSTM(2, 2)
    b.weight = a.weight
    found = P._holders([(a, "weight"), (a, "bias"), (c, "weight_ih_l0")])
    assert found[id(a.weight)] == [(a, "weight"), (b, "weight")]
    assert found[id(a.bias)] == [(a, "bias")]
    assert found[id(c.weight_ih_l0)] == [(c, "weight_ih_l0")]
    scanned = P._scan_holders({id(a.weight), id(a.bias)})
    assert len(scanned[id(a.weight)]) == 2 and len(scanned[id(a.bias)]) == 1


def test_removal_folds_only_cells_that_share_every_new_parameter(mode):
    """Two separately parametrized cells that share only their first new Parameter (a partial
    tie made after registration) are two parametrizations: removing one must leave the other
    computing its own weight, not fold it onto the first one's value."""
    net = nn.SequentialCell([nn.Dense(3, 3), nn.Dense(3, 3)])
    for cell in net:
        P.register_parametrization(cell, "weight", Scaled())
    net[1].weight_s = net[0].weight_s
    net[1].weight_u.set_data(net[1].weight_u * 3)
    x = Tensor(np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32))
    second = net[1](x).asnumpy()
    first_weight = net[0].weight.asnumpy()
    P.remove_parametrization(net[0], "weight")
    np.testing.assert_allclose(net[0].weight.asnumpy(), first_weight, rtol=1e-6)
    assert P.is_parametrized(net[1], "weight") and net[1].weight_s is not None
    np.testing.assert_allclose(net[1](x).asnumpy(), second, rtol=1e-6)
    assert not np.allclose(net[1].weight.asnumpy(), first_weight)


class DoubledConv(nn.Conv2d):
    """A layer subclass whose construct calls its parent's by name, as ported models do."""

    def construct(self, x):
        return super(DoubledConv, self).construct(x) * 2


def test_a_subclass_calling_super_by_name_compiles_after_registration(mode):
    """GRAPH_MODE looks super(DoubledConv, self) up by class name in type(self).mro(): the
    generated class must not be called DoubledConv too, or construct calls itself (MindSpore's
    call depth limit). Messages still name the layer's own class."""
    layer = DoubledConv(3, 4, 3)
    x = Tensor(np.random.default_rng(2).standard_normal((1, 3, 5, 5)).astype(np.float32))
    before = layer(x).asnumpy()
    P.register_parametrization(layer, "weight", Scaled())
    assert type(layer).__name__ != "DoubledConv" and P.class_name(layer) == "DoubledConv"
    np.testing.assert_allclose(layer(x).asnumpy(), before, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"DoubledConv cell, setting 'weight': the value has shape"):
        layer.weight = layer.weight_u[:1]
    P.remove_parametrization(layer, "weight")
    assert type(layer) is DoubledConv
    np.testing.assert_allclose(layer(x).asnumpy(), before, rtol=1e-5, atol=1e-6)


# --- assignment re-splits (PyTorch's right_inverse) ------------------------------------------

def test_assignment_re_splits_through_a_custom_parametrization(mode):
    """cell.weight = X and cell.weight.set_data(X) store split(X); the next call (a compiled graph
    too) computes with X."""
    layer = P.register_parametrization(nn.Dense(3, 2), "weight", Scaled())
    x = Tensor(np.ones((1, 3), np.float32))
    layer(x)  # compile (in GRAPH_MODE) before the assignment
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    layer.weight = Tensor(w)
    np.testing.assert_allclose(layer.weight_u.asnumpy(), w / 2)
    np.testing.assert_allclose(layer(x).asnumpy(), w.sum(1)[None] + layer.bias.asnumpy(), rtol=1e-6)
    layer.weight.set_data(Tensor(-w))
    np.testing.assert_allclose(layer(x).asnumpy(), -w.sum(1)[None] + layer.bias.asnumpy(), rtol=1e-6)


def test_assignment_materializes_initializer_tensors():
    """Model init code sets weights to lazy initializer tensors (no data until init_data())."""
    from mindspore.common.initializer import Constant, initializer
    layer = weight_norm(nn.Conv2d(2, 3, 3))
    layer.weight.set_data(initializer(Constant(0.5), layer.weight.shape, layer.weight.dtype))
    np.testing.assert_allclose(layer.weight_v.asnumpy(), 0.5)
    np.testing.assert_allclose(layer.weight_g.asnumpy().ravel(), [0.5 * np.sqrt(18)] * 3, rtol=1e-6)
    layer.weight = initializer(Constant(2.0), (3, 2, 3, 3), ms.float32)
    np.testing.assert_allclose(layer.weight.asnumpy(), 2.0, rtol=1e-6)


def test_assignment_inside_a_compiled_graph_stays_an_error():
    """Inside a graph the weight is a computed value: MindSpore refuses to set it and nothing changes."""

    class SetsItsWeight(nn.Cell):
        def __init__(self):
            super().__init__()
            self.dense = weight_norm(nn.Dense(3, 2))

        def construct(self, x):
            self.dense.weight.set_data(x)
            return self.dense(x)

    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = SetsItsWeight()
        before = (net.dense.weight_g.asnumpy().copy(), net.dense.weight_v.asnumpy().copy())
        with pytest.raises(AttributeError, match="set_data"):
            net(Tensor(np.ones((2, 3), np.float32)))
        np.testing.assert_array_equal(net.dense.weight_g.asnumpy(), before[0])
        np.testing.assert_array_equal(net.dense.weight_v.asnumpy(), before[1])
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_assignment_is_seen_by_a_jit_function_compiled_before():
    layer = weight_norm(nn.Dense(3, 2))
    x = Tensor(np.ones((1, 3), np.float32))

    @ms.jit
    def forward(x_):
        return layer(x_)

    forward(x)
    w = np.full((2, 3), 0.25, np.float32)
    layer.weight = Tensor(w)
    np.testing.assert_allclose(forward(x).asnumpy(), w.sum(1)[None] + layer.bias.asnumpy(), rtol=1e-6)


def test_assignment_to_a_tied_weight_reaches_every_holder():
    net = nn.SequentialCell([nn.Dense(3, 3), nn.Dense(3, 3)])
    net[1].weight = net[0].weight
    from ms_weightnorm import apply_weight_norm
    apply_weight_norm(net)
    w = np.eye(3, dtype=np.float32) * 3
    net[1].weight = Tensor(w)
    np.testing.assert_allclose(net[0].weight.asnumpy(), w, rtol=1e-6)
    assert net[0].weight_g is net[1].weight_g


def test_spectral_norm_refuses_assignment_and_says_it_has_no_inverse():
    from ms_weightnorm import spectral_norm
    layer = spectral_norm(nn.Dense(3, 4))
    before = layer.weight_orig.asnumpy().copy()
    for call in (lambda: setattr(layer, "weight", Tensor(np.ones((4, 3), np.float32))),
                 lambda: layer.weight.set_data(Tensor(np.ones((4, 3), np.float32)))):
        with pytest.raises(AttributeError, match=r"Dense cell: 'weight' is computed by spectral norm from 'weight_orig'"
                                                 r" on every read \(spectral norm has no inverse.*\), so it cannot be "
                                                 r"set.*cell.weight_orig.set_data.*remove_spectral_norm"):
            call()
    np.testing.assert_array_equal(layer.weight_orig.asnumpy(), before)


def test_a_layer_built_under_no_init_parameters_can_be_parametrized():
    """mindone's from_pretrained builds models under no_init_parameters: Parameters without data."""
    from mindspore.nn.utils import no_init_parameters
    with no_init_parameters():
        layer = nn.Dense(3, 2)
        assert layer.weight.has_init
        weight_norm(layer)
    w = layer.weight.asnumpy()
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), layer.weight_g.asnumpy().ravel(), rtol=1e-5)
