"""The public API on real layers, in PyNative and GRAPH_MODE."""
import copy
import warnings

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, mint, nn, ops

import ms_weightnorm as wn
from ms_weightnorm import functional as F
from ms_weightnorm.weight_norm import torch_dim

from helpers import SumSquares, grads, np_norm_except_dim, np_weight_norm_grads, param_names

# name, factory, input shape (None: integer ids), parameter name, dims to try
LAYERS = [
    ("Dense", lambda: nn.Dense(5, 4), (3, 5), "weight", (0, 1, None)),
    ("Conv1d", lambda: nn.Conv1d(3, 4, 3, has_bias=True), (2, 3, 8), "weight", (0, 1, 3, None)),
    ("Conv2d", lambda: nn.Conv2d(3, 4, 3, has_bias=True), (2, 3, 6, 6), "weight", (0, 2, -2, None)),
    ("Conv3d", lambda: nn.Conv3d(2, 3, 2, has_bias=True), (1, 2, 4, 4, 4), "weight", (0, 1)),
    ("Conv1dTranspose", lambda: nn.Conv1dTranspose(3, 4, 3, has_bias=True), (2, 3, 8), "weight", (0, 1)),
    ("Conv2dTranspose", lambda: nn.Conv2dTranspose(3, 4, 3, has_bias=True), (2, 3, 5, 5), "weight", (0, 1)),
    ("Conv3dTranspose", lambda: nn.Conv3dTranspose(2, 3, 2, has_bias=True), (1, 2, 3, 3, 3), "weight", (0, 1)),
    ("Embedding", lambda: nn.Embedding(10, 4), None, "embedding_table", (0, 1)),
    ("LSTM", lambda: nn.LSTM(3, 4, bidirectional=True), (5, 2, 3), "weight_ih_l0", (0, 1)),
    ("LSTM-hh-reverse", lambda: nn.LSTM(3, 4, bidirectional=True), (5, 2, 3), "weight_hh_l0_reverse", (0,)),
    ("GRU", lambda: nn.GRU(3, 4, num_layers=2), (5, 2, 3), "weight_hh_l1", (0, None)),
    ("mint.Linear", lambda: mint.nn.Linear(5, 4), (3, 5), "weight", (0, 1)),
    ("Dense-bias", lambda: nn.Dense(5, 4), (3, 5), "bias", (0,)),
]
CASES = [pytest.param(f, shape, name, dim, id=f"{label}-{name}-dim{dim}")
         for label, f, shape, name, dims in LAYERS for dim in dims]


def make_input(shape, seed=0):
    rng = np.random.default_rng(seed)
    if shape is None:
        return ms.Tensor(rng.integers(0, 10, (3, 5)).astype(np.int32))
    return ms.Tensor(rng.standard_normal(shape).astype(np.float32))


class UserCell(nn.Cell):
    """A user-defined layer that reads ``self.kernel`` in construct (no primitives: picklable)."""

    def __init__(self):
        super().__init__()
        self.kernel = Parameter(ms.Tensor(np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)))

    def construct(self, x):
        return ops.matmul(x, self.kernel.T)


@pytest.mark.parametrize("factory,shape,name,dim", CASES)
def test_layer_outputs_and_gradients(factory, shape, name, dim, mode):
    """Applying weight norm keeps outputs; grads of g, v equal the closed form of the weight grad."""
    ms.set_seed(0)
    np.random.seed(0)
    layer = factory()
    x = make_input(shape)
    plain = SumSquares(layer)
    w = layer._params[name]
    w0 = w.asnumpy().copy()
    loss0, (grad_w,) = grads(plain, x, [w])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # size-1 axes (Conv1d dim 1 ... ) are intended here
        wn.weight_norm(layer, name, dim)
    net = SumSquares(layer)
    g, v = getattr(layer, f"{name}_g"), getattr(layer, f"{name}_v")
    assert name not in layer._params
    np.testing.assert_allclose(g.asnumpy(), np_norm_except_dim(w0, dim), rtol=1e-5)
    np.testing.assert_array_equal(v.asnumpy(), w0)
    np.testing.assert_allclose(getattr(layer, name).asnumpy(), w0, rtol=1e-5, atol=1e-6)

    loss, (grad_g, grad_v) = grads(net, x, [g, v])
    assert loss == pytest.approx(loss0, rel=1e-5)
    ref_g, ref_v = np_weight_norm_grads(w0, g.asnumpy(), grad_w, dim)
    np.testing.assert_allclose(grad_g, ref_g, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(grad_v, ref_v, rtol=2e-4, atol=1e-5)


def test_user_defined_cell(mode):
    cell = UserCell()
    x = make_input((2, 3))
    before = cell(x).asnumpy()
    wn.weight_norm(cell, "kernel")
    np.testing.assert_allclose(cell(x).asnumpy(), before, rtol=1e-5)
    _, (gg, gv) = grads(SumSquares(cell), x, [cell.kernel_g, cell.kernel_v])
    assert np.abs(gg).sum() > 0 and np.abs(gv).sum() > 0


def test_the_requests_example(mode):
    """The original request's usage, as written there."""
    m = wn.WeightNorm(nn.Dense(20, 40))
    assert m.param_g.shape == (40, 1)
    assert m.param_v.shape == (40, 20)
    assert m.dim == 0 and isinstance(m.module, nn.Dense)
    assert m.use_weight_norm is True  # the flag says so before removal as well as after
    inputs = ms.Tensor(np.random.randn(10, 20), ms.float32)
    outputs = m(inputs)
    assert outputs.shape == (10, 40)
    # g and v train (the request's Assign-based sample gives them zero gradients).
    _, (gg, gv) = grads(SumSquares(m), inputs, [m.param_g, m.param_v])
    assert np.abs(gg).sum() > 0 and np.abs(gv).sum() > 0
    m.remove_weight_norm()
    assert m.use_weight_norm is False
    np.testing.assert_allclose(m(inputs).asnumpy(), outputs.asnumpy(), rtol=1e-5, atol=1e-6)
    assert param_names(m) == ["module.weight", "module.bias"]
    with pytest.raises(AttributeError, match="removed"):
        _ = m.param_g


def test_wrapper_parameter_names_are_unique_in_an_optimizer():
    net = nn.SequentialCell([wn.WeightNorm(nn.Dense(4, 4)), wn.WeightNorm(nn.Dense(4, 2))])
    names = [p.name for p in net.trainable_params()]
    assert names == ["0.module.weight_g", "0.module.weight_v", "0.module.bias",
                     "1.module.weight_g", "1.module.weight_v", "1.module.bias"]
    nn.Adam(net.trainable_params())


@pytest.mark.parametrize("before_attach", [True, False])
def test_parameter_names_carry_the_full_path(before_attach):
    if before_attach:
        body = nn.SequentialCell([wn.weight_norm(nn.Dense(3, 3)), wn.weight_norm(nn.Dense(3, 3))])
        net = nn.SequentialCell([body])
    else:
        net = nn.SequentialCell([nn.SequentialCell([nn.Dense(3, 3), nn.Dense(3, 3)])])
        wn.apply_weight_norm(net)
    names = sorted(p.name for p in net.trainable_params())
    assert names == sorted(n for n, _ in net.parameters_and_names())
    assert "0.1.weight_g" in names and "0.0.weight_v" in names
    nn.Momentum(net.trainable_params(), 0.1, 0.9)  # rejects duplicate names


def weight_normed_regression(seed, n_in, n_out):
    """Data, a weight-normed 2-layer MLP, and a snapshot of its Parameters."""
    ms.set_seed(seed)
    rng = np.random.default_rng(seed)
    x = ms.Tensor(rng.standard_normal((32, n_in)).astype(np.float32))
    y = ms.Tensor(rng.standard_normal((32, n_out)).astype(np.float32))
    net = nn.SequentialCell([nn.Dense(n_in, 16), nn.Tanh(), nn.Dense(16, n_out)])
    wn.apply_weight_norm(net)
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    return x, y, net, before


def assert_every_parameter_moved(net, before):
    for p in net.trainable_params():
        assert np.isfinite(p.asnumpy()).all(), p.name
        assert not np.allclose(p.asnumpy(), before[p.name]), p.name


def test_training_moves_g_and_v_and_lowers_the_loss(mode):
    x, y, net, before = weight_normed_regression(1, 6, 1)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Adam(net.trainable_params(), 1e-2))
    step.set_train()
    losses = [float(step(x, y).asnumpy()) for _ in range(30)]
    assert losses[-1] < 0.7 * losses[0]
    assert_every_parameter_moved(net, before)


def test_same_numbers_in_every_execution_mode():
    rng = np.random.default_rng(2)
    x = ms.Tensor(rng.standard_normal((4, 5)).astype(np.float32))

    def run(setup):
        ms.set_seed(3)
        net = SumSquares(nn.SequentialCell([nn.Dense(5, 6), nn.ReLU(), nn.Dense(6, 2)]))
        wn.apply_weight_norm(net)
        return setup(net)

    def pynative(net):
        ms.set_context(mode=ms.PYNATIVE_MODE)
        return grads(net, x, net.trainable_params())

    def graph(level):
        def run_graph(net):
            ms.set_context(mode=ms.GRAPH_MODE, jit_syntax_level=level)
            try:
                return grads(net, x, net.trainable_params())
            finally:
                ms.set_context(mode=ms.PYNATIVE_MODE, jit_syntax_level=ms.LAX)
        return run_graph

    def jit_function(net):
        ms.set_context(mode=ms.PYNATIVE_MODE)
        grad_fn = ms.value_and_grad(net, None, net.trainable_params())

        @ms.jit
        def step(x_):
            return grad_fn(x_)
        loss, gs = step(x)
        return float(loss.asnumpy()), [g.asnumpy() for g in gs]

    ref_loss, ref_grads = run(pynative)
    for setup in (graph(ms.STRICT), graph(ms.LAX), jit_function):
        loss, gs = run(setup)
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        for a, b in zip(gs, ref_grads):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_removal_after_graph_compile_uses_the_folded_weight():
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = nn.SequentialCell([nn.Dense(5, 4)])
        wn.apply_weight_norm(net)
        x = make_input((2, 5))
        net(x)
        assert wn.remove_all_weight_norm(net) == ["0"]
        # A stale graph would still compute from g and v, ignoring the new weight.
        net[0].weight.set_data(ms.Tensor(np.zeros((4, 5), np.float32)))
        out = net(x).asnumpy()
        np.testing.assert_allclose(out, np.broadcast_to(net[0].bias.asnumpy(), out.shape))
        # And the other way round: applying after compile is seen as well.
        wn.apply_weight_norm(net, eps=1e-12)
        net[0].weight_g.set_data(ms.Tensor(np.ones((4, 1), np.float32)))
        net[0].weight_v.set_data(ms.Tensor(np.ones((4, 5), np.float32)))
        expected = x.asnumpy().sum(1, keepdims=True) / np.sqrt(5) + net[0].bias.asnumpy()
        np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=1e-5)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_removal_after_jit_compile_uses_the_folded_weight():
    net = nn.SequentialCell([nn.Dense(5, 4)])
    wn.apply_weight_norm(net)
    x = make_input((2, 5))

    @ms.jit
    def forward(x_):
        return net(x_)

    forward(x)
    wn.remove_all_weight_norm(net)
    net[0].weight.set_data(ms.Tensor(np.zeros((4, 5), np.float32)))
    out = forward(x).asnumpy()
    np.testing.assert_allclose(out, np.broadcast_to(net[0].bias.asnumpy(), out.shape))


def test_remove_then_checkpoint_round_trip(tmp_path, mode):
    ms.set_seed(4)
    net = nn.SequentialCell([nn.Dense(5, 4), nn.ReLU(), nn.Dense(4, 3)])
    wn.apply_weight_norm(net)
    x = make_input((2, 5))
    expected = net(x).asnumpy()
    wn.remove_all_weight_norm(net)
    np.testing.assert_allclose(net(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "folded.ckpt")
    ms.save_checkpoint(net, path)
    other = nn.SequentialCell([nn.Dense(5, 4), nn.ReLU(), nn.Dense(4, 3)])
    not_loaded, _ = ms.load_param_into_net(other, ms.load_checkpoint(path))
    assert not not_loaded
    assert sorted(ms.load_checkpoint(path)) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    np.testing.assert_allclose(other(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)


def test_weight_normed_checkpoint_round_trip(tmp_path):
    ms.set_seed(5)
    net = nn.SequentialCell([nn.Dense(5, 4), nn.Dense(4, 3)])
    wn.apply_weight_norm(net)
    net[0].weight_g.set_data(net[0].weight_g * 2)
    path = str(tmp_path / "wn.ckpt")
    ms.save_checkpoint(net, path)
    assert sorted(ms.load_checkpoint(path)) == ["0.bias", "0.weight_g", "0.weight_v", "1.bias", "1.weight_g",
                                                "1.weight_v"]
    other = nn.SequentialCell([nn.Dense(5, 4), nn.Dense(4, 3)])
    wn.apply_weight_norm(other)
    not_loaded, _ = ms.load_param_into_net(other, ms.load_checkpoint(path))
    assert not not_loaded
    x = make_input((2, 5))
    np.testing.assert_allclose(other(x).asnumpy(), net(x).asnumpy(), rtol=1e-6)


def test_deepcopy_is_independent(mode):
    layer = wn.weight_norm(nn.Dense(5, 4))
    clone = copy.deepcopy(layer)
    assert type(clone) is type(layer) and wn.is_weight_normed(clone, "weight")
    x = make_input((2, 5))
    np.testing.assert_allclose(clone(x).asnumpy(), layer(x).asnumpy())
    clone.weight_g.set_data(clone.weight_g * 0)
    assert np.abs(layer(x).asnumpy() - layer.bias.asnumpy()).sum() > 0
    wn.remove_weight_norm(clone)
    assert wn.is_weight_normed(layer, "weight")


def test_pickle_round_trip():
    import pickle
    cell = wn.weight_norm(UserCell(), "kernel", dim=1)
    x = make_input((2, 3))
    restored = pickle.loads(pickle.dumps(cell))
    assert type(restored) is type(cell)
    np.testing.assert_allclose(restored(x).asnumpy(), cell(x).asnumpy())
    _, (gg,) = grads(SumSquares(restored), x, [restored.kernel_g])
    assert np.abs(gg).sum() > 0
    wn.remove_weight_norm(restored, "kernel")
    assert type(restored) is UserCell


def test_apply_and_remove_over_a_network():
    net = nn.SequentialCell([
        nn.Conv1d(2, 4, 3), nn.ReLU(),
        nn.SequentialCell([nn.Conv1d(4, 4, 3), nn.Flatten()]),
        nn.Dense(32, 3),
        nn.LayerNorm((3,)),
    ])
    changed = wn.apply_weight_norm(net)
    assert changed == ["0", "2.0", "3"]  # LayerNorm's 1-d gamma is not selected
    assert wn.remove_all_weight_norm(net) == ["0", "2.0", "3"]
    assert wn.apply_weight_norm(net, cell_types=nn.Dense) == ["3"]
    assert wn.apply_weight_norm(net, cell_types=(nn.Dense, nn.Conv1d)) == ["0", "2.0"]  # "3" already done


def test_apply_is_all_or_nothing():
    net = nn.SequentialCell([nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Dense(8, 2)])
    before = param_names(net)
    with pytest.raises(ValueError, match="Dense.*dim=2"):
        wn.apply_weight_norm(net, dim=2)  # fine for the 4-d conv weight, out of range for Dense
    assert param_names(net) == before
    assert not wn.is_weight_normed(net[0])


def test_errors_name_the_cell_and_parameter_and_change_nothing():
    layer = nn.Dense(3, 2)
    cases = [
        (lambda: wn.weight_norm(layer, "kernel"), ValueError, r"Dense cell has no Parameter 'kernel'.*weight"),
        (lambda: wn.weight_norm(layer, dim=2), ValueError, r"Dense cell, Parameter 'weight'.*dim=2 is out of range"),
        (lambda: wn.weight_norm(layer, dim=-3), ValueError, r"out of range"),
        (lambda: wn.weight_norm(layer, eps=-1.0), ValueError, r"Dense cell, Parameter 'weight': eps must be"),
        (lambda: wn.remove_weight_norm(layer), ValueError, r"Dense cell: weight norm is not applied to 'weight'"),
    ]
    for call, err, pattern in cases:
        with pytest.raises(err, match=pattern):
            call()
        assert type(layer) is nn.Dense and param_names(layer) == ["weight", "bias"]

    int_cell = UserCell()
    int_cell.count = Parameter(ms.Tensor(np.ones((2, 2), np.int32)), requires_grad=False)
    with pytest.raises(TypeError, match=r"UserCell cell: Parameter 'count' has dtype Int32.*floating"):
        wn.weight_norm(int_cell, "count")
    assert "count" in int_cell._params

    wn.weight_norm(layer)
    snapshot = (type(layer), param_names(layer), layer.weight_g.asnumpy().copy())
    with pytest.raises(ValueError, match=r"Dense cell: weight norm is already applied to 'weight'"):
        wn.weight_norm(layer)
    assert (type(layer), param_names(layer)) == snapshot[:2]
    np.testing.assert_array_equal(layer.weight_g.asnumpy(), snapshot[2])


def test_assigning_the_computed_weight_re_splits_it():
    layer = wn.weight_norm(nn.Dense(3, 2), dim=None)
    x = np.array([[3, 0, 0], [0, 4, 0]], np.float32)
    layer.weight = Parameter(ms.Tensor(x), name="weight")
    assert "weight" not in layer._params and sorted(layer._params) == ["bias", "weight_g", "weight_v"]
    np.testing.assert_allclose(layer.weight_g.asnumpy(), 5.0)
    np.testing.assert_allclose(layer.weight.asnumpy(), x, rtol=1e-6)
    layer.weight = x * 2  # numpy arrays too
    np.testing.assert_allclose(layer.weight_g.asnumpy(), 10.0)
    with pytest.raises(TypeError, match="expected a mindspore Tensor, Parameter or numpy array, got list"):
        layer.weight = [[1.0]]


def test_warns_when_dim_keeps_a_size_one_axis():
    with pytest.warns(UserWarning, match="PyTorch's dim=2 on a Conv1d is dim=3 here"):
        wn.weight_norm(nn.Conv1d(2, 3, 3), dim=2)
    # Only then: other axes, and a single-output layer's axis 0 of size 1, are used silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dim in (0, 1, 3):
            wn.weight_norm(nn.Conv1d(2, 3, 3), dim=dim)
        wn.weight_norm(nn.Dense(4, 1), dim=0)


def test_dim_none_and_minus_one_mean_the_whole_tensor():
    for dim in (None, -1):
        layer = wn.weight_norm(nn.Dense(3, 2), dim=dim)
        assert layer.weight_g.shape == ()
    layer = wn.weight_norm(nn.Conv2d(2, 3, 3), dim=-2)  # an ordinary index: axis 2
    assert layer.weight_g.shape == (1, 1, 3, 1)


def test_eps_makes_a_zero_row_trainable(mode):
    layer = nn.Dense(3, 2)
    layer.weight.set_data(ms.Tensor(np.array([[0, 0, 0], [1, 2, 2]], np.float32)))
    wn.weight_norm(layer, eps=1e-8)
    x = make_input((4, 3))
    out = layer(x).asnumpy()
    _, gs = grads(SumSquares(layer), x, [layer.weight_g, layer.weight_v])
    assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in gs)


def test_half_precision_layer(mode):
    layer = nn.Dense(64, 8, dtype=ms.float16)
    wn.weight_norm(layer)
    assert layer.weight_g.dtype == ms.float16 and layer.weight.dtype == ms.float16
    x = make_input((4, 64)).astype(ms.float16)
    assert layer(x).dtype == ms.float16
    _, gs = grads(SumSquares(layer), x, [layer.weight_g, layer.weight_v])
    assert all(np.isfinite(g).all() for g in gs)


def test_functional_matches_layer_weight():
    layer = wn.weight_norm(nn.Conv2d(2, 3, 3), dim=1)
    direct = F.weight_norm(layer.weight_v, layer.weight_g, 1)
    np.testing.assert_array_equal(layer.weight.asnumpy(), direct.asnumpy())


@pytest.mark.parametrize("level", ["O2", "O3"])
def test_mixed_precision_training(level, mode):
    """amp casts the Parameters of float16 cells; the computed weight is cast the same way."""
    from mindspore import amp
    x, y, net, before = weight_normed_regression(6, 8, 2)
    step = amp.build_train_network(net, nn.Momentum(net.trainable_params(), 0.05, 0.9), nn.MSELoss(),
                                   level=level, loss_scale_manager=None)
    losses = [float(step(x, y).asnumpy()) for _ in range(15)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert_every_parameter_moved(net, before)
    assert net[0].weight.dtype == ms.float16  # the cell runs in float16 ...
    assert net[0].weight_v.dtype == ms.float32  # ... and its Parameters stay float32


def test_to_float_before_weight_norm_is_respected(mode):
    layer = nn.Dense(4, 3).to_float(ms.float16)
    wn.weight_norm(layer)
    assert layer.weight.dtype == ms.float16
    assert layer(make_input((2, 4))).dtype == ms.float16


# --- tied weights ---------------------------------------------------------------------------

class TiedLM(nn.Cell):
    """An embedding whose table is also the output layer's weight, as PyTorch LMs tie them."""

    def __init__(self, vocab=7, width=3, seed=0):
        super().__init__()
        ms.set_seed(seed)
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Dense(width, width)
        self.head = nn.Dense(width, vocab, has_bias=False)
        self.head.weight = self.embed.embedding_table

    def construct(self, ids):
        return self.head(ops.tanh(self.mix(self.embed(ids))))


IDS = ms.Tensor(np.array([[1, 4, 6], [0, 2, 2]], np.int32))


def test_apply_weight_norm_keeps_a_tie(mode):
    """One g/v pair read by both cells; gradients are the closed form of the summed weight gradient."""
    net = TiedLM()
    table = net.embed.embedding_table
    w0 = table.asnumpy().copy()
    loss0, (grad_w,) = grads(SumSquares(net), IDS, [table])  # both uses of the tied weight, summed
    assert wn.apply_weight_norm(net) == ["embed", "mix", "head"]
    g, v = net.embed.embedding_table_g, net.embed.embedding_table_v
    assert net.head.weight_g is g and net.head.weight_v is v
    assert "weight" not in net.head._params and "embedding_table" not in net.embed._params
    names = [p.name for p in net.trainable_params()]
    # SumSquares above made this net its child "layer": names carry that path.
    assert names == ["layer.embed.embedding_table_g", "layer.embed.embedding_table_v", "layer.mix.weight_g",
                     "layer.mix.weight_v", "layer.mix.bias"]
    assert names == ["layer." + n for n in param_names(net)]
    np.testing.assert_allclose(g.asnumpy(), np_norm_except_dim(w0, 0), rtol=1e-6)
    loss, (grad_g, grad_v) = grads(SumSquares(net), IDS, [g, v])
    assert loss == pytest.approx(loss0, rel=1e-5)
    ref_g, ref_v = np_weight_norm_grads(w0, g.asnumpy(), grad_w, 0)
    np.testing.assert_allclose(grad_g, ref_g, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(grad_v, ref_v, rtol=2e-4, atol=1e-6)


def test_a_tied_pair_trains_as_one_weight(mode, tmp_path):
    net = TiedLM()
    wn.apply_weight_norm(net)
    y = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 7)).astype(np.float32))
    opt = nn.Adam(net.trainable_params(), 0.05)  # rejects duplicate names
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
    step.set_train()
    losses = [float(step(IDS, y).asnumpy()) for _ in range(5)]
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(net.head.weight.asnumpy(), net.embed.embedding_table.asnumpy())
    path = str(tmp_path / "tied.ckpt")
    ms.save_checkpoint(net, path)
    saved = ms.load_checkpoint(path)
    assert sorted(saved) == ["embed.embedding_table_g", "embed.embedding_table_v", "mix.bias", "mix.weight_g",
                             "mix.weight_v"]
    other = TiedLM(seed=9)
    wn.apply_weight_norm(other)
    not_loaded, _ = ms.load_param_into_net(other, saved)
    assert not not_loaded
    np.testing.assert_allclose(other(IDS).asnumpy(), net(IDS).asnumpy(), rtol=1e-6)


def test_removing_weight_norm_from_one_tied_cell_folds_once_and_restores_the_tie(mode):
    net = TiedLM()
    wn.apply_weight_norm(net)
    net.embed.embedding_table_g.set_data(net.embed.embedding_table_g * 1.5)
    expected_w = net.head.weight.asnumpy()
    expected = net(IDS).asnumpy()
    wn.remove_weight_norm(net.head)
    assert net.head.weight is net.embed.embedding_table
    assert net.head.weight.name == "embed.embedding_table"
    assert type(net.embed) is nn.Embedding and type(net.head) is nn.Dense
    np.testing.assert_allclose(net.head.weight.asnumpy(), expected_w, rtol=1e-6)
    np.testing.assert_allclose(net(IDS).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert wn.remove_all_weight_norm(net) == ["mix"]
    wn.apply_weight_norm(net)
    assert wn.remove_all_weight_norm(net) == ["embed", "mix", "head"]
    assert net.head.weight is net.embed.embedding_table


def untouched(net):
    """Class, Parameter identity and values of every cell: equal before and after a refused call."""
    return [(path, type(cell), [(k, id(p), p.asnumpy().tobytes()) for k, p in cell._params.items()])
            for path, cell in net.cells_and_names()]


def test_a_tie_is_never_broken_silently():
    net = TiedLM()
    before = untouched(net)
    with pytest.raises(ValueError, match=r"Dense cell: its Parameter 'weight' \(named 'embed.embedding_table'\) "
                                         r"is shared with an Embedding cell \(as 'embedding_table'\).*"
                                         r"apply_weight_norm\(model\)"):
        wn.weight_norm(net.head)
    assert untouched(net) == before
    with pytest.raises(ValueError, match=r"cell 'head' \(Dense, as 'weight'\) and cell 'embed' \(Embedding, as "
                                         r"'embedding_table'\), Embedding not selected by cell_types.*"
                                         r"Nothing was changed"):
        wn.apply_weight_norm(net, cell_types=nn.Dense)
    assert untouched(net) == before
    block = nn.SequentialCell([net.mix, net.head])  # the embedding is outside
    with pytest.raises(ValueError, match=r"1 of them outside the SequentialCell given"):
        wn.apply_weight_norm(block)
    assert untouched(net) == before
    # Choosing both classes keeps the tie.
    assert wn.apply_weight_norm(net, cell_types=(nn.Dense, nn.Embedding)) == ["embed", "mix", "head"]
    assert net.head.weight_v is net.embed.embedding_table_v


def test_a_later_refusal_leaves_earlier_cells_unchanged():
    outside = nn.Dense(4, 4)
    net = nn.SequentialCell([nn.Dense(4, 4), nn.Dense(4, 4)])
    net[1].weight = outside.weight
    before = untouched(net)
    with pytest.raises(ValueError, match="outside"):
        wn.apply_weight_norm(net)
    assert untouched(net) == before
    assert not wn.is_weight_normed(net[0])


def test_an_optimizer_built_before_weight_norm_is_named():
    layer = nn.Dense(3, 2)
    opt = nn.Momentum(layer.trainable_params(), 0.1, 0.9)
    before = untouched(layer)
    with pytest.raises(ValueError, match=r"Dense cell: its Parameter 'weight'.*held by Momentum.*build the "
                                         r"optimizer"):
        wn.weight_norm(layer)
    assert untouched(layer) == before
    del opt
    wn.weight_norm(layer)  # the optimizer is gone (collected): nothing is tied any more
    assert wn.is_weight_normed(layer)


def test_a_dead_cell_in_a_reference_cycle_is_not_a_tie():
    layer = nn.Dense(3, 2)
    ghost = nn.Dense(3, 2)
    ghost.weight = layer.weight
    ghost.me = [ghost]  # a cycle: only the cycle collector frees it
    del ghost
    wn.weight_norm(layer)
    assert wn.is_weight_normed(layer)


def test_new_parameters_are_named_after_their_own_cell():
    """A Parameter named after another (gone) cell gives names after this cell's own attribute."""
    donor = nn.SequentialCell([nn.Embedding(3, 3)])
    layer = nn.Dense(3, 3)
    layer.weight = donor[0].embedding_table  # named '0.embedding_table'
    del donor
    wn.weight_norm(layer)
    assert layer.weight_g.name == "weight_g" and layer.weight_v.name == "weight_v"
    net = nn.SequentialCell([nn.Dense(3, 3)])
    net[0].weight.name = "elsewhere.kernel"
    wn.apply_weight_norm(net)
    assert net[0].weight_g.name == "0.weight_g"


# --- numbers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [float("inf"), float("nan"), -1e-3, np.float32("nan"), -np.inf])
def test_eps_must_be_finite_and_non_negative(eps):
    layer = nn.Dense(3, 2)
    with pytest.raises(ValueError, match=r"Dense cell, Parameter 'weight': eps must be finite and >= 0"):
        wn.weight_norm(layer, eps=eps)
    with pytest.raises(ValueError, match=r"eps must be finite and >= 0"):
        wn.apply_weight_norm(nn.SequentialCell([layer]), eps=eps)
    assert type(layer) is nn.Dense and param_names(layer) == ["weight", "bias"]


def test_numpy_scalars_for_eps_and_dim_and_bools_refused():
    layer = nn.Dense(3, 2)
    w = layer.weight.asnumpy().copy()
    wn.weight_norm(layer, dim=np.int64(1), eps=np.float32(1e-3))
    assert wn.weight_norms(layer)["weight"] == wn.WeightNormParametrization(1, float(np.float32(1e-3)))
    np.testing.assert_allclose(layer.weight_g.asnumpy(), np_norm_except_dim(w, 1, eps=float(np.float32(1e-3))),
                               rtol=1e-6)
    assert wn.apply_weight_norm(nn.SequentialCell([nn.Dense(3, 2)]), dim=np.int32(0), eps=np.float64(0)) == ["0"]
    for bad in (True, np.bool_(False)):
        with pytest.raises(TypeError, match="dim must be an int or None"):
            wn.weight_norm(nn.Dense(3, 2), dim=bad)
        with pytest.raises(TypeError, match="eps must be a real number"):
            wn.weight_norm(nn.Dense(3, 2), eps=bad)
    with pytest.raises(TypeError, match="eps must be a real number"):
        wn.weight_norm(nn.Dense(3, 2), eps="1e-3")


# --- the computed weight explains itself ----------------------------------------------------

def test_set_data_on_the_computed_weight_re_splits_it():
    """PyTorch's right_inverse: setting the weight sets g = ||X|| and v = X, so reads give X."""
    layer = wn.weight_norm(nn.Dense(3, 2))
    w = layer.weight
    np.testing.assert_allclose(w.asnumpy(), F.weight_norm(layer.weight_v, layer.weight_g, 0).asnumpy())
    x = np.array([[3, 4, 0], [0, 0, -2]], np.float32)
    for call in (lambda v: w.set_data(v), lambda v: w.assign_value(v)):
        call(ms.Tensor(x))
        np.testing.assert_allclose(layer.weight_g.asnumpy().ravel(), np.linalg.norm(x, axis=1))
        np.testing.assert_allclose(layer.weight_v.asnumpy(), x)
        np.testing.assert_allclose(layer.weight.asnumpy(), x, rtol=1e-6)
        np.testing.assert_allclose(w.asnumpy(), x, rtol=1e-6)  # the tensor read earlier follows
        x = x * 2
    assert type(w * 2) is ms.Tensor  # results of operations are plain tensors
    with pytest.raises(ValueError, match=r"Dense cell, setting 'weight': the value has shape \(3, 2\), the weight "
                                         r"has shape \(2, 3\)"):
        w.set_data(ms.Tensor(np.ones((3, 2), np.float32)))
    np.testing.assert_allclose(layer.weight_v.asnumpy(), x / 2)  # unchanged by the refusal
    with pytest.raises(AttributeError, match="'w_ih_list' is computed by weight norm"):
        wn.weight_norm(nn.LSTM(3, 4), "weight_ih_l0").w_ih_list = ()
    # The recipe in the message works.
    layer.weight_v.set_data(ms.Tensor(np.ones((2, 3), np.float32)))
    np.testing.assert_allclose(layer.weight.asnumpy(), np.broadcast_to(layer.weight_g.asnumpy() / np.sqrt(3), (2, 3)),
                               rtol=1e-6)


def test_the_computed_weight_still_compiles_and_differentiates(mode):
    """The read-only weight is a property subclass: graphs still compile it (and its gradient)."""
    layer = wn.weight_norm(nn.Dense(3, 2))

    class ReadsWeight(nn.Cell):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def construct(self, x):
            return (ops.matmul(x, self.inner.weight.T) ** 2).sum()

    x = make_input((4, 3))
    g, v = layer.weight_g.asnumpy().astype(np.float64), layer.weight_v.asnumpy().astype(np.float64)
    w = g * v / np.linalg.norm(v, axis=1, keepdims=True)
    xn = x.asnumpy().astype(np.float64)
    grad_w = 2 * (xn @ w.T).T @ xn
    loss, (grad_g, grad_v) = grads(ReadsWeight(layer), x, [layer.weight_g, layer.weight_v])
    assert loss == pytest.approx(((xn @ w.T) ** 2).sum(), rel=1e-5)
    ref_g, ref_v = np_weight_norm_grads(v, g, grad_w, 0)
    np.testing.assert_allclose(grad_g, ref_g, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_v, ref_v, rtol=1e-4, atol=1e-6)


# --- PyTorch's argument names; the wrapper is first class -----------------------------------

def test_pytorch_argument_names_and_order():
    conv = wn.weight_norm(module=nn.Conv2d(2, 4, 3), name="weight", dim=0)
    assert conv.weight_g.shape == (4, 1, 1, 1)
    wn.remove_weight_norm(module=conv, name="weight")
    assert type(conv) is nn.Conv2d
    assert wn.weight_norm(nn.Dense(3, 2), "weight", 1).weight_g.shape == (1, 3)
    dense = wn.weight_norm(cell=nn.Dense(3, 2), dim=None)  # the earlier keyword still works
    assert dense.weight_g.shape == ()
    wn.remove_weight_norm(cell=dense)
    with pytest.raises(TypeError, match="both module= and cell="):
        wn.weight_norm(nn.Dense(3, 2), cell=nn.Dense(3, 2))
    with pytest.raises(TypeError, match=r"missing the layer"):
        wn.weight_norm()
    # The seed's wrapper signature, positional and keyword.
    assert wn.WeightNorm(nn.Dense(3, 2), 1).param_g.shape == (1, 3)
    assert wn.WeightNorm(nn.Dense(3, 2), dim=1, name="weight").param_g.shape == (1, 3)
    assert wn.WeightNorm(module=nn.Dense(3, 2), dim=0, name="bias").param_g.shape == (2,)


def test_functions_accept_the_wrapper():
    m = wn.WeightNorm(nn.Dense(3, 2), name="weight", dim=1)
    assert wn.is_weight_normed(m) and wn.is_weight_normed(m, "weight") and not wn.is_weight_normed(m, "bias")
    assert wn.weight_norms(m) == {"weight": wn.WeightNormParametrization(1)}
    x = make_input((2, 3))
    before = m(x).asnumpy()
    assert wn.remove_weight_norm(m) is m
    assert m.use_weight_norm is False and type(m.module) is nn.Dense
    np.testing.assert_allclose(m(x).asnumpy(), before, rtol=1e-6)
    with pytest.raises(ValueError, match=r"Dense cell \(inside a WeightNorm wrapper\): weight norm is not applied "
                                         r"to 'weight'.*already removed"):
        wn.remove_weight_norm(m)
    with pytest.raises(TypeError, match="Pass the inner layer"):
        wn.weight_norm(wn.WeightNorm(nn.Dense(3, 2)))
    b = wn.WeightNorm(nn.Dense(3, 2), name="bias")
    wn.remove_weight_norm(b)  # the wrapper's own name by default
    assert b.use_weight_norm is False and "bias" in b.module._params
    net = nn.SequentialCell([wn.WeightNorm(nn.Dense(3, 3)), wn.WeightNorm(nn.Dense(3, 2))])
    assert wn.remove_all_weight_norm(net) == ["0.module", "1.module"]
    assert [c.use_weight_norm for c in net] == [False, False]


def test_data_dependent_init_on_a_network_of_wrappers():
    net = nn.SequentialCell([wn.WeightNorm(nn.Dense(4, 6)), nn.ReLU(), wn.WeightNorm(nn.Dense(6, 2))])
    x = make_input((64, 4))
    wn.data_dependent_init(net, x)
    hidden = net[0](x).asnumpy().astype(np.float64)
    np.testing.assert_allclose(hidden.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(hidden.std(0), 1, rtol=1e-3)


def _torch_twin(first_style, second_style):
    """PyTorch's Conv1d -> ReLU -> Conv1d with weight norm in the given styles ('old'/'new')."""
    import torch
    tnn = torch.nn

    def normed(layer, style):
        if style == "new":
            return tnn.utils.parametrizations.weight_norm(layer, dim=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return tnn.utils.weight_norm(layer, dim=0)

    torch.manual_seed(0)
    net = tnn.Sequential(normed(tnn.Conv1d(2, 4, 3, padding=1), first_style), tnn.ReLU(),
                         normed(tnn.Conv1d(4, 3, 3, padding=1), second_style))
    with torch.no_grad():  # g != ||v||, so the magnitudes really travel
        for name, p in net.named_parameters():
            if name.endswith(("weight_g", "original0")):
                p.mul_(torch.linspace(0.5, 1.5, p.numel()).reshape(p.shape))
    return net


def _ms_twin():
    return nn.SequentialCell([
        wn.WeightNorm(nn.Conv1d(2, 4, 3, pad_mode="pad", padding=1, has_bias=True)),
        nn.ReLU(),
        wn.WeightNorm(nn.Conv1d(4, 3, 3, pad_mode="pad", padding=1, has_bias=True)),
    ])


def test_a_network_of_wrappers_maps_onto_the_pytorch_module(tmp_path, mode):
    import safetensors.torch
    import torch
    reference = _torch_twin("old", "new")
    x = np.random.default_rng(3).standard_normal((2, 2, 9)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    net = _ms_twin()
    assert wn.load_torch_state_dict(net, reference.state_dict()) == wn.LoadResult([], [])
    np.testing.assert_allclose(net(ms.Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    for style in ("old", "new"):
        path = str(tmp_path / f"{style}.safetensors")
        written = wn.save_torch_state_dict(net, path, style=style)
        target = _torch_twin(style, style)
        assert sorted(written) == sorted(target.state_dict())  # no "module." anywhere
        target.load_state_dict(safetensors.torch.load_file(path), strict=True)
        with torch.no_grad():
            np.testing.assert_allclose(target(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
        assert sorted(wn.to_torch_state_dict(net, style=style)) == sorted(written)


def test_a_wrapper_at_the_top_maps_to_the_bare_pytorch_layer():
    import torch
    layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 2))
    m = wn.WeightNorm(nn.Dense(3, 2))
    assert sorted(wn.to_torch_state_dict(m)) == sorted(layer.state_dict())
    assert wn.load_torch_state_dict(m, layer.state_dict()) == wn.LoadResult([], [])
    x = np.ones((1, 3), np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(m(ms.Tensor(x)).asnumpy(), layer(torch.from_numpy(x)).numpy(), rtol=1e-6)


# =========================================================================================
# Tests that catch the bugs we would make (issue 13): independent references, eps at apply
# time, all-or-nothing on a later cell, amp against float32. Owned by the tests helper.
# =========================================================================================

from helpers import np_weight_norm  # noqa: E402


@pytest.mark.parametrize("eps", [1e-4, 0.5])
@pytest.mark.parametrize("dim", [0, 1, None])
def test_applying_with_eps_keeps_the_output(mode, eps, dim):
    """g is split as sqrt(||w||^2 + eps), the norm compose divides by: w and outputs unchanged.

    Rows of norm ~0.05 make eps=1e-4 visible (a split that ignored eps would scale them by
    ||w|| / sqrt(||w||^2 + eps), about 2% off). Reference: numpy float64 on the plain weight.
    """
    rng = np.random.default_rng(3)
    w0 = (rng.standard_normal((4, 5)) * 0.02).astype(np.float32)
    b0 = rng.standard_normal(4).astype(np.float32)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    layer = nn.Dense(5, 4)
    layer.weight.set_data(ms.Tensor(w0))
    layer.bias.set_data(ms.Tensor(b0))
    wn.weight_norm(layer, dim=dim, eps=eps)
    np.testing.assert_allclose(layer.weight_g.asnumpy(), np_norm_except_dim(w0, dim, 2.0, eps), rtol=1e-6)
    np.testing.assert_allclose(layer.weight.asnumpy(), w0, rtol=1e-6, atol=1e-9)
    out = nn.SequentialCell([layer])(ms.Tensor(x)).asnumpy()  # a fresh top cell: compiled in graph mode
    ref = x.astype(np.float64) @ w0.astype(np.float64).T + b0
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


class _IntWeight(nn.Cell):
    """A cell with an integer ``weight``: weight norm must refuse it."""

    def __init__(self):
        super().__init__()
        self.weight = Parameter(ms.Tensor(np.ones((3, 3), np.int32)), requires_grad=False)

    def construct(self, x):
        return x


class _Clash(nn.Dense):
    """A Dense that already has an attribute ``weight_g``."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.weight_g = Parameter(ms.Tensor(np.ones((1,), np.float32)), name="weight_g")


def _snapshot(net):
    return [(path, type(cell), [(key, p, p.name, p.asnumpy().copy()) for key, p in cell._params.items()])
            for path, cell in net.cells_and_names()]


def _assert_unchanged(net, snapshot):
    now = _snapshot(net)
    assert [(path, cls) for path, cls, _ in now] == [(path, cls) for path, cls, _ in snapshot]
    for (path, _, params), (_, _, before) in zip(now, snapshot):
        assert [(k, n) for k, _, n, _ in params] == [(k, n) for k, _, n, _ in before], path
        for (k, p, _, value), (_, p0, _, value0) in zip(params, before):
            assert p is p0, f"{path}.{k} was replaced"
            np.testing.assert_array_equal(value, value0, err_msg=f"{path}.{k}")
        assert not wn.is_weight_normed(net if path == "" else dict(net.cells_and_names())[path])


@pytest.mark.parametrize("bad,error,pattern", [
    # The messages name the cell's path in the network ('2'), known from its Parameters' names.
    (_IntWeight, TypeError, r"_IntWeight cell '2': Parameter 'weight' has dtype Int32"),
    (lambda: _Clash(3, 2), ValueError, r"_Clash cell '2' already has an attribute 'weight_g'"),
])
def test_apply_is_all_or_nothing_when_a_later_cell_fails(bad, error, pattern):
    """The error comes from the last cell: the earlier, valid cells must be left untouched."""
    net = nn.SequentialCell([nn.Dense(4, 3), nn.SequentialCell([nn.Dense(3, 3)]), bad()])
    snapshot = _snapshot(net)
    with pytest.raises(error, match=pattern):
        wn.apply_weight_norm(net, cell_types=(nn.Dense, _IntWeight))
    _assert_unchanged(net, snapshot)
    assert type(net[0]) is nn.Dense and type(net[1][0]) is nn.Dense


def test_layer_weight_matches_numpy_float64(mode):
    """layer.weight against g * v / ||v|| computed in numpy float64 from the layer's g and v."""
    rng = np.random.default_rng(4)
    layer = wn.weight_norm(nn.Conv2d(2, 3, 3), dim=1)
    layer.weight_v.set_data(ms.Tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32)))
    layer.weight_g.set_data(ms.Tensor(rng.uniform(0.5, 2.0, (1, 2, 1, 1)).astype(np.float32)))
    ref = np_weight_norm(layer.weight_v.asnumpy(), layer.weight_g.asnumpy(), 1)
    np.testing.assert_allclose(layer.weight.asnumpy(), ref, rtol=1e-6, atol=1e-7)

    class Weight(nn.Cell):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def construct(self):
            return self.inner.weight
    np.testing.assert_allclose(Weight(layer)().asnumpy(), ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("level", ["O2", "O3"])
def test_mixed_precision_matches_float32_training(level, mode):
    """amp's float16 training follows the float32 run of the same net and data.

    Each loss is a mean over 64 outputs computed in float16: its relative error is of the order
    of float16's unit roundoff u = 2^-11 (averaging shrinks it further). Tolerance 2u per step;
    the float16 run must also really differ from float32 (it ran in float16).
    """
    from mindspore import amp
    steps, u = 15, 2.0 ** -11
    x, y, net, _ = weight_normed_regression(6, 8, 2)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Momentum(net.trainable_params(), 0.05, 0.9))
    reference = np.array([float(step(x, y).asnumpy()) for _ in range(steps)])
    ref_params = {p.name: p.asnumpy().copy() for p in net.trainable_params()}

    x, y, net, _ = weight_normed_regression(6, 8, 2)
    step = amp.build_train_network(net, nn.Momentum(net.trainable_params(), 0.05, 0.9), nn.MSELoss(),
                                   level=level, loss_scale_manager=None)
    losses = np.array([float(step(x, y).asnumpy()) for _ in range(steps)])
    assert net[0].weight.dtype == ms.float16
    np.testing.assert_allclose(losses, reference, rtol=2 * u)
    assert np.abs(losses - reference).max() > 0  # float16 arithmetic really happened
    assert reference[-1] < 0.9 * reference[0]  # the reference trains: the comparison has a trajectory
    for p in net.trainable_params():
        scale = np.abs(ref_params[p.name]).max()
        np.testing.assert_allclose(p.asnumpy(), ref_params[p.name], rtol=0, atol=8 * u * scale, err_msg=p.name)


def test_parametrization_defaults_and_eps_validation():
    """eps defaults to 0 (PyTorch's exact formula); eps must be a real number >= 0, not a bool."""
    assert wn.WeightNormParametrization(0) == wn.WeightNormParametrization(0, 0.0)
    v = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    layer = nn.Dense(2, 2)
    layer.weight.set_data(ms.Tensor(v))
    from ms_weightnorm.parametrize import register_parametrization
    register_parametrization(layer, "weight", wn.WeightNormParametrization(0))
    assert np.isnan(layer.weight.asnumpy()[0]).all()  # eps=0: a zero row is 0/0, as in PyTorch
    for bad in (True, -1.0, "0.1", None, float("nan")):
        fresh = nn.Dense(2, 2)
        with pytest.raises((TypeError, ValueError), match=r"^Dense cell, Parameter 'weight': eps must be "):
            wn.weight_norm(fresh, eps=bad)
        assert type(fresh) is nn.Dense and param_names(fresh) == ["weight", "bias"]


# --- PyTorch's dim on MindSpore's Conv1d layouts ------------------------------------------------

@pytest.mark.parametrize("cls", [nn.Conv1d, nn.Conv1dTranspose])
def test_torch_dim_gives_pytorch_g_values_on_conv1d(cls):
    """torch.nn.utils.weight_norm(conv, dim=d) on the 3-D weight gives the g of weight_norm(dim=torch_dim(conv, d))
    on MindSpore's 4-D (a, b, 1, k) weight, with the size-1 axis added."""
    rng = np.random.default_rng(5)
    for d, expect_axis in ((0, 0), (1, 1), (2, 3), (-1, -1), (-2, 1), (-3, 0), (None, None)):
        conv = cls(4, 6, 5)
        w = rng.standard_normal(tuple(conv.weight.shape)).astype(np.float32)
        conv.weight.set_data(ms.Tensor(w))
        assert torch_dim(conv, d) == expect_axis
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no size-1-axis warning on the translated dim
            wn.weight_norm(conv, dim=torch_dim(conv, d))
        w3 = w[:, :, 0, :]
        if d is None or d == -1:
            g3 = np.sqrt((w3 ** 2).sum())
        else:
            keep = d % 3
            g3 = np.sqrt((w3 ** 2).sum(axis=tuple(i for i in range(3) if i != keep), keepdims=True))
        g = conv.weight_g.asnumpy()
        assert g.size == np.size(g3)
        np.testing.assert_allclose(g.ravel(), np.ravel(g3), rtol=1e-5)
        np.testing.assert_allclose(conv.weight.asnumpy(), w, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"Conv1d.*PyTorch's dim=3 is out of range for its 3-D weight"):
        torch_dim(nn.Conv1d(2, 2, 3), 3)
    assert torch_dim(nn.Dense(2, 3), 1) == 1  # other layers have PyTorch's layout


def test_conv1d_set_data_with_initializer_re_splits_on_the_kernel_axis():
    """The mindone Wav2Vec2 init: set_data(initializer(...)) on a positional conv normed over torch's dim=2."""
    from mindspore.common.initializer import Normal, initializer
    conv = nn.Conv1d(4, 4, 3, group=2)
    wn.weight_norm(conv, dim=torch_dim(conv, 2))
    conv.weight.set_data(initializer(Normal(0.5), conv.weight.shape, conv.weight.dtype))
    v = conv.weight_v.asnumpy()
    np.testing.assert_allclose(conv.weight_g.asnumpy(), np.sqrt((v ** 2).sum(axis=(0, 1, 2), keepdims=True)),
                               rtol=1e-5)
    np.testing.assert_allclose(conv.weight.asnumpy(), v, rtol=1e-5, atol=1e-6)
