"""Data-dependent init: the per-feature mean/std property, v untouched, errors leave no trace."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import ms_weightnorm.init as init_mod
from ms_weightnorm.init import data_dependent_init
from ms_weightnorm.weight_norm import apply_weight_norm, weight_norm


class Nested(nn.Cell):
    """Layers two levels down, run in order by hand, so the test can read each pre-activation."""

    def __init__(self, cells):
        super().__init__()
        self.inner = nn.SequentialCell([nn.SequentialCell(cells)])

    def construct(self, x):
        return self.inner(x)


def dense_stack():
    cells = [nn.Dense(6, 16), nn.ReLU(), nn.Dense(16, 12, has_bias=False), nn.Tanh(), nn.Dense(12, 5)]
    for c in cells:
        if isinstance(c, nn.Dense):
            weight_norm(c)
    return cells, (64, 6), -1


def _conv2d_cells(conv):
    cells = [conv(3, 8, 3, has_bias=True), nn.ReLU(), conv(8, 6, 3, stride=2, pad_mode="valid", has_bias=True)]
    for c in cells:
        if isinstance(c, nn.Conv2d):
            weight_norm(c)
    return cells


def conv2d_stack():
    return _conv2d_cells(nn.Conv2d), (6, 3, 9, 9), 1


def conv1d_transpose_stack():
    cells = [nn.Conv1d(3, 6, 3, has_bias=True), nn.ReLU(),
             nn.Conv1dTranspose(6, 4, 3, stride=2, has_bias=True)]
    weight_norm(cells[0])
    weight_norm(cells[2], dim=1)  # output channels are axis 1 of a transposed conv's weight
    return cells, (6, 3, 10), 1


class ChannelsLastConv2d(nn.Conv2d):
    """A Conv2d on NHWC tensors that runs on the CPU backend, whose own Conv2d refuses
    data_format="NHWC" (GPU only): it says NHWC, as a GPU Conv2d would, and transposes around
    the NCHW convolution. Data init must then take the features from the last axis."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_format = "NHWC"

    def construct(self, x):
        # super() by name: GRAPH_MODE resolves a bare super() from the runtime class, which is
        # weight norm's subclass (see README, Known limitations).
        return super(ChannelsLastConv2d, self).construct(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)


def conv2d_nhwc_stack():
    return _conv2d_cells(ChannelsLastConv2d), (6, 9, 9, 3), -1


STACKS = {"dense": dense_stack, "conv2d": conv2d_stack, "conv2d_nhwc": conv2d_nhwc_stack,
          "conv1d_transpose": conv1d_transpose_stack}


def _stats(a, axis):
    a = np.moveaxis(a.astype(np.float64), axis, -1).reshape(-1, a.shape[axis])
    return a.mean(0), a.std(0)


@pytest.mark.parametrize("init_scale", [1.0, 0.1])
@pytest.mark.parametrize("stack", sorted(STACKS))
def test_preactivations_have_zero_mean_and_init_scale_std(mode, stack, init_scale, rng):
    cells, shape, feature_axis = STACKS[stack]()
    net = Nested(cells)
    x = Tensor(rng.normal(1.0, 2.0, size=shape).astype(np.float32))
    net(x)  # compiled before the init in GRAPH_MODE: the init must not be hidden by the cache
    v_before = [c.weight_v.asnumpy().copy() for c in cells if hasattr(c, "weight_v")]

    assert data_dependent_init(net, x, init_scale=init_scale) is net
    assert ms.get_context("mode") == (ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)

    h = x
    checked = 0
    for cell in cells:
        h = cell(h)
        if hasattr(cell, "weight_v"):
            mean, std = _stats(h.asnumpy(), feature_axis)
            np.testing.assert_allclose(std, init_scale, rtol=1e-3)
            if cell.bias is not None:
                np.testing.assert_allclose(mean, 0.0, atol=1e-4 * init_scale)
            else:
                # Without a bias only g is set: the mean is whatever the direction gives.
                assert np.abs(mean).max() > 1e-3 * init_scale
            checked += 1
    assert checked == len(v_before)
    np.testing.assert_allclose(net(x).asnumpy(), h.asnumpy(), rtol=1e-5, atol=1e-5)
    v_after = [c.weight_v.asnumpy() for c in cells if hasattr(c, "weight_v")]
    for before, after in zip(v_before, v_after):
        np.testing.assert_array_equal(before, after)


def test_dense_with_fused_activation_uses_the_preactivation(rng):
    dense = weight_norm(nn.Dense(5, 7, activation="relu"))
    x = Tensor(rng.normal(size=(40, 5)).astype(np.float32))
    data_dependent_init(dense, x, init_scale=0.5)
    pre = x.asnumpy() @ dense.weight.asnumpy().T + dense.bias.asnumpy()
    np.testing.assert_allclose(pre.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pre.std(0), 0.5, rtol=1e-4)
    assert dense.activation_flag
    assert (dense(x).asnumpy() >= 0).all()


def test_g_is_init_scale_over_std_of_the_normalized_projection(rng):
    dense = weight_norm(nn.Dense(4, 3))
    xn = rng.normal(size=(50, 4)).astype(np.float32)
    v = dense.weight_v.asnumpy().astype(np.float64)
    t = xn @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    data_dependent_init(dense, Tensor(xn), init_scale=2.0)
    np.testing.assert_allclose(dense.weight_g.asnumpy().ravel(), 2.0 / t.std(0), rtol=1e-4)
    np.testing.assert_allclose(dense.bias.asnumpy(), -t.mean(0) * 2.0 / t.std(0), rtol=1e-4, atol=1e-5)


def test_other_parameters_and_running_statistics_are_untouched(rng):
    net = nn.SequentialCell([nn.Dense(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dense(8, 3)])
    apply_weight_norm(net, cell_types=nn.Dense)
    net.set_train(True)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    data_dependent_init(net, Tensor(rng.normal(size=(32, 4)).astype(np.float32)))
    changed = {name for name, p in ((p.name, p) for p in net.get_parameters())
               if not np.array_equal(p.asnumpy(), before[name])}
    assert changed == {"0.weight_g", "0.bias", "3.weight_g", "3.bias"}


def test_statistics_go_through_the_cross_process_sum(monkeypatch, rng):
    # Two processes holding the same batch give the same global mean and variance as one: if
    # the sums or the count skipped the reduction, g and bias would come out different.
    x = Tensor(rng.normal(size=(20, 4)).astype(np.float32))
    ms.set_seed(1)
    single = weight_norm(nn.Dense(4, 3))
    ms.set_seed(1)
    doubled = weight_norm(nn.Dense(4, 3))
    data_dependent_init(single, x)
    calls = []

    def twice(t):
        calls.append(t.dtype)
        return t * 2
    monkeypatch.setattr(init_mod, "all_reduce_sum", twice)
    data_dependent_init(doubled, x)
    assert calls == [ms.float32, ms.float32]
    np.testing.assert_allclose(doubled.weight_g.asnumpy(), single.weight_g.asnumpy(), rtol=1e-5)
    np.testing.assert_allclose(doubled.bias.asnumpy(), single.bias.asnumpy(), rtol=1e-5, atol=1e-6)


class _Zero(nn.Cell):
    def construct(self, x):
        return x * 0.0


def test_error_in_a_later_layer_leaves_every_layer_unchanged(mode, rng):
    net = nn.SequentialCell([nn.Dense(4, 8), _Zero(), nn.Dense(8, 3)])
    apply_weight_norm(net)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    with pytest.raises(ValueError, match=r"'2'.*constant"):
        data_dependent_init(net, Tensor(rng.normal(size=(16, 4)).astype(np.float32)))
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name])
    assert ms.get_context("mode") == (ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    assert "construct" not in vars(net[0]) and "construct" not in vars(net[2])


def test_errors(rng):
    x = Tensor(rng.normal(size=(8, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="no weight-normed layer"):
        data_dependent_init(nn.SequentialCell([nn.Dense(4, 2)]), x)
    with pytest.raises(ValueError, match="at least 2"):
        data_dependent_init(weight_norm(nn.Dense(4, 2)), x[:1])
    with pytest.raises(ValueError, match="init_scale"):
        data_dependent_init(weight_norm(nn.Dense(4, 2)), x, init_scale=0.0)
    with pytest.raises(TypeError, match="inputs"):
        data_dependent_init(weight_norm(nn.Dense(4, 2)), [1, 2])


def test_g_must_be_per_output_feature():
    xc = Tensor(np.random.default_rng(0).normal(size=(4, 6, 5)).astype(np.float32))
    tr = weight_norm(nn.Conv1dTranspose(6, 4, 3))  # dim=0: per *input* channel
    with pytest.raises(ValueError, match=r"dim=1"):
        data_dependent_init(tr, xc)
    whole = weight_norm(nn.Dense(5, 3), dim=None)
    with pytest.raises(ValueError, match=r"dim=0"):
        data_dependent_init(whole, Tensor(np.ones((4, 5), np.float32)))
    grouped = weight_norm(nn.Conv1dTranspose(6, 4, 3, group=2), dim=1)
    with pytest.raises(ValueError, match="group=2"):
        data_dependent_init(grouped, xc)


def test_unsupported_or_unused_layers_are_named():
    emb = weight_norm(nn.Embedding(10, 4), name="embedding_table")
    net = nn.SequentialCell([emb])
    with pytest.raises(TypeError, match=r"cell '0' \(Embedding\)"):
        data_dependent_init(net, Tensor(np.arange(4, dtype=np.int32)))

    class Skips(nn.Cell):
        def __init__(self):
            super().__init__()
            self.used = weight_norm(nn.Dense(3, 3))
            self.unused = weight_norm(nn.Dense(3, 3))

        def construct(self, x):
            return self.used(x)
    net = Skips()
    g = net.used.weight_g.asnumpy().copy()
    with pytest.raises(ValueError, match=r"\['unused'\] were not called"):
        data_dependent_init(net, Tensor(np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)))
    np.testing.assert_array_equal(net.used.weight_g.asnumpy(), g)


def test_trains_in_graph_mode_after_init(rng):
    # The init runs in PyNative; a GRAPH_MODE training step built afterwards must see its values.
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = nn.SequentialCell([nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 2)])
        apply_weight_norm(net)
        x = Tensor(rng.normal(size=(32, 4)).astype(np.float32))
        y = Tensor(rng.integers(0, 2, size=32).astype(np.int32))
        data_dependent_init(net, x, init_scale=0.1)
        logits = net(x).asnumpy()
        np.testing.assert_allclose(logits.std(0), 0.1, rtol=1e-3)
        loss = nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"))
        step = nn.TrainOneStepCell(loss, nn.SGD(net.trainable_params(), learning_rate=0.1))
        losses = [float(step(x, y).asnumpy()) for _ in range(5)]
        assert losses[-1] < losses[0]
        z = logits - logits.max(1, keepdims=True)
        expected = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(32), y.asnumpy()])
        assert np.isclose(losses[0], expected, rtol=1e-4)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
