"""Spectral norm: PyTorch 2.13 parity (both APIs, both modes), the state update in every
execution path, train/eval switching, removal after compilation, checkpoints."""
import copy
import os
import warnings

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import Tensor, nn

import ms_weightnorm as wn
from ms_weightnorm import functional as F
from ms_weightnorm.torch_io import load_torch_state_dict, save_torch_state_dict, to_torch_state_dict

from helpers import SumSquares, grads, param_names

RTOL, ATOL = 1e-4, 1e-5
KINDS = ("dense", "conv1d", "conv2d", "conv1dtranspose", "conv2dtranspose")


# --- independent references -----------------------------------------------------------------

def np_normalize(x, eps=1e-12):
    return x / max(np.sqrt(np.sum(x * x)), eps)


def np_sn_step(w, u, v, dim, n, u_first=True, eps=1e-12):
    """float64 reference: n power steps, then (w / sigma, u, v)."""
    w = w.astype(np.float64)
    mat = np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1)
    u, v = u.astype(np.float64), v.astype(np.float64)
    for _ in range(n):
        if u_first:
            u = np_normalize(mat @ v, eps)
            v = np_normalize(mat.T @ u, eps)
        else:
            v = np_normalize(mat.T @ u, eps)
            u = np_normalize(mat @ v, eps)
    return w / (u @ mat @ v), u, v


def to_ms(a, kind):
    """PyTorch's 3-D Conv1d/ConvTranspose1d weight (a, b, k) is MindSpore's (a, b, 1, k)."""
    return a[:, :, None, :] if kind.startswith("conv1d") and a.ndim == 3 else a


def make_pair(kind):
    """A torch layer, its MindSpore twin (same weights) and an input for both."""
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    if kind == "dense":
        t, m, x = torch.nn.Linear(6, 5), nn.Dense(6, 5), rng.standard_normal((3, 6))
    elif kind == "conv1d":
        t = torch.nn.Conv1d(3, 4, 3)
        m = nn.Conv1d(3, 4, 3, pad_mode="valid", has_bias=True)
        x = rng.standard_normal((2, 3, 9))
    elif kind == "conv2d":
        t = torch.nn.Conv2d(3, 4, 3)
        m = nn.Conv2d(3, 4, 3, pad_mode="valid", has_bias=True)
        x = rng.standard_normal((2, 3, 6, 5))
    elif kind == "conv1dtranspose":
        t = torch.nn.ConvTranspose1d(3, 4, 3, stride=2)
        m = nn.Conv1dTranspose(3, 4, 3, stride=2, pad_mode="valid", has_bias=True)
        x = rng.standard_normal((2, 3, 5))
    elif kind == "conv2dtranspose":
        t = torch.nn.ConvTranspose2d(3, 4, 3, stride=2)
        m = nn.Conv2dTranspose(3, 4, 3, stride=2, pad_mode="valid", has_bias=True)
        x = rng.standard_normal((2, 3, 4, 3))
    else:
        raise ValueError(kind)
    m.weight.set_data(Tensor(to_ms(t.weight.detach().numpy(), kind)))
    m.bias.set_data(Tensor(t.bias.detach().numpy()))
    return t, m, torch.tensor(x, dtype=torch.float32), Tensor(x.astype(np.float32))


def torch_sn(t, api):
    """Spectral norm on ``t`` with ``api``; returns a function giving (orig, u, v) tensors."""
    if api == "new":
        torch.nn.utils.parametrizations.spectral_norm(t)
        p = t.parametrizations.weight
        return lambda: (p.original, p[0]._u, p[0]._v)
    torch.nn.utils.spectral_norm(t)
    return lambda: (t.weight_orig, t.weight_u, t.weight_v)


def scramble_state(t_state, seed=7):
    """Random unit u, v (far from converged) so that each power step moves them a lot."""
    rng = np.random.default_rng(seed)
    _, u, v = t_state()
    with torch.no_grad():
        for buf in (u, v):
            x = rng.standard_normal(buf.shape)
            buf.copy_(torch.tensor(x / np.linalg.norm(x), dtype=torch.float32))


def ms_state(m):
    return [p.asnumpy().copy() for p in (m.weight_orig, m.weight_u, m.weight_v)]


def torch_state(t_state, kind):
    o, u, v = t_state()
    return [to_ms(o.detach().numpy(), kind), u.detach().numpy().copy(), v.detach().numpy().copy()]


def errors(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    abs_err = float(np.max(np.abs(got - want)))
    return abs_err, abs_err / max(float(np.max(np.abs(want))), 1e-30)


# --- parity with PyTorch --------------------------------------------------------------------

@pytest.mark.parametrize("api", ["new", "old"])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_pytorch(kind, api, mode):
    t, m, xt, xm = make_pair(kind)
    t_state = torch_sn(t, api)
    scramble_state(t_state)
    wn.spectral_norm(m, style=api)
    assert wn.spectral_norms(m)["weight"].dim == (1 if "transpose" in kind else 0)
    for p, value in zip((m.weight_orig, m.weight_u, m.weight_v), torch_state(t_state, kind)):
        p.set_data(Tensor(value))
    worst = {}

    def check(name, got, want):
        worst[name] = max(worst.get(name, (0, 0)), errors(got, want))
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{kind} {api} {mode}: {name}")

    # Several training-mode forwards in a row: each advances u and v.
    t.train()
    m.set_train(True)
    for _ in range(3):
        check("train forward", m(xm).asnumpy(), t(xt).detach().numpy())
        for name, got, want in zip(("orig", "u", "v"), ms_state(m), torch_state(t_state, kind)):
            check(name, got, want)

    # Gradients of a training-mode forward (one more power step on both sides).
    yt = t(xt)
    (yt * yt).sum().backward()
    loss, (g_orig, g_bias) = grads(SumSquares(m), xm, [m.weight_orig, m.bias])
    assert loss == pytest.approx((yt * yt).sum().item(), rel=RTOL)
    check("grad orig", g_orig, to_ms(t_state()[0].grad.numpy(), kind))
    check("grad bias", g_bias, t.bias.grad.numpy())
    for name, got, want in zip(("orig", "u", "v"), ms_state(m), torch_state(t_state, kind)):
        check(name, got, want)

    # Eval mode: same output as PyTorch's, and u, v stay as they are.
    t.eval()
    m.set_train(False)
    before = ms_state(m)
    for _ in range(2):
        check("eval forward", m(xm).asnumpy(), t(xt).detach().numpy())
    for got, want in zip(ms_state(m), before):
        np.testing.assert_array_equal(got, want)

    # Removal folds the eval-mode weight (PyTorch's new API would run a power step here in
    # training mode; in eval mode both fold the same value).
    if api == "new":
        torch.nn.utils.parametrize.remove_parametrizations(t, "weight")
    else:
        torch.nn.utils.remove_spectral_norm(t)
    wn.remove_spectral_norm(m)
    assert param_names(m) == ["weight", "bias"] and not wn.is_parametrized(m)
    check("removed weight", m.weight.asnumpy(), to_ms(t.weight.detach().numpy(), kind))
    check("removed forward", m(xm).asnumpy(), t(xt).detach().numpy())
    # The measured agreement (shown with pytest -s): worst max abs / max rel error per check.
    print(f"\nAGREEMENT {kind} {api} {mode}: " + "  ".join(f"{k}={a:.1e}/{r:.1e}" for k, (a, r) in worst.items()))


def test_two_calls_in_one_step_advance_twice_like_pytorch(mode):
    """The GAN pattern D(real), D(fake) in one compiled step: two power steps, in order."""
    t, m, xt, xm = make_pair("conv1d")
    t_state = torch_sn(t, "new")
    scramble_state(t_state)
    wn.spectral_norm(m)
    for p, value in zip((m.weight_orig, m.weight_u, m.weight_v), torch_state(t_state, "conv1d")):
        p.set_data(Tensor(value))

    class Twice(nn.Cell):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def construct(self, a, b):
            return (self.layer(a) * self.layer(b)).sum()

    net = Twice(m)
    net.set_train(True)
    t.train()
    xt2, xm2 = xt * 0.5 + 1, xm * 0.5 + 1
    loss, gs = ms.value_and_grad(net, None, [m.weight_orig])(xm, xm2)
    loss, g = float(loss.asnumpy()), gs[0].asnumpy()
    tl = (t(xt) * t(xt2)).sum()
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=RTOL)
    np.testing.assert_allclose(g, to_ms(t_state()[0].grad.numpy(), "conv1d"), rtol=RTOL, atol=ATOL)
    for got, want in zip(ms_state(m)[1:], torch_state(t_state, "conv1d")[1:]):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# --- the state update in every execution path -----------------------------------------------

def _fresh_dense(seed=3):
    """A Dense with spectral norm and deliberately poor u, v (so each step moves them)."""
    rng = np.random.default_rng(seed)
    m = nn.Dense(5, 4)
    m.weight.set_data(Tensor(rng.standard_normal((4, 5)).astype(np.float32)))
    m.bias.set_data(Tensor(rng.standard_normal(4).astype(np.float32)))
    wn.spectral_norm(m)
    u, v = np_normalize(rng.standard_normal(4)), np_normalize(rng.standard_normal(5))
    m.weight_u.set_data(Tensor(u.astype(np.float32)))
    m.weight_v.set_data(Tensor(v.astype(np.float32)))
    x = Tensor(rng.standard_normal((3, 5)).astype(np.float32))
    return m, x


def _reference_forwards(m, x, n):
    """numpy float64: outputs and final (u, v) of n training forwards."""
    w, u, v = (p.asnumpy() for p in (m.weight_orig, m.weight_u, m.weight_v))
    b, xs = m.bias.asnumpy().astype(np.float64), x.asnumpy().astype(np.float64)
    outs = []
    for _ in range(n):
        w_sn, u, v = np_sn_step(w, u, v, 0, 1)
        outs.append(xs @ w_sn.T + b)
    return outs, u, v


def _run_direct(m, x, n):
    return [m(x).asnumpy() for _ in range(n)]


def _run_jit(m, x, n):
    @ms.jit
    def f(a):
        return m(a)
    return [f(x).asnumpy() for _ in range(n)]


@pytest.mark.parametrize("path", ["direct", "jit"])
def test_training_forwards_update_state_in_every_path(mode, path):
    m, x = _fresh_dense()
    m.set_train(True)
    want, u, v = _reference_forwards(m, x, 3)
    got = (_run_direct if path == "direct" else _run_jit)(m, x, 3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(m.weight_u.asnumpy(), u, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(m.weight_v.asnumpy(), v, rtol=RTOL, atol=ATOL)


def test_train_one_step_cell_matches_pytorch_sgd(mode):
    """nn.TrainOneStepCell (SGD) == torch SGD steps: losses, orig, u and v, step by step."""
    m, x = _fresh_dense()
    t = torch.nn.Linear(5, 4)
    torch.nn.utils.parametrizations.spectral_norm(t)
    p = t.parametrizations.weight
    with torch.no_grad():
        p.original.copy_(torch.tensor(m.weight_orig.asnumpy()))
        t.bias.copy_(torch.tensor(m.bias.asnumpy()))
        p[0]._u.copy_(torch.tensor(m.weight_u.asnumpy()))
        p[0]._v.copy_(torch.tensor(m.weight_v.asnumpy()))
    target = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    step = nn.TrainOneStepCell(nn.WithLossCell(m, nn.MSELoss()), nn.SGD(m.trainable_params(), 0.1))
    step.set_train(True)
    t.train()
    opt = torch.optim.SGD(t.parameters(), 0.1)
    xt = torch.tensor(x.asnumpy())
    for _ in range(3):
        loss = float(step(x, Tensor(target)).asnumpy())
        opt.zero_grad()
        tl = torch.nn.functional.mse_loss(t(xt), torch.tensor(target))
        tl.backward()
        opt.step()
        assert loss == pytest.approx(tl.item(), rel=RTOL)
        for got, want in ((m.weight_orig, p.original), (m.weight_u, p[0]._u), (m.weight_v, p[0]._v)):
            np.testing.assert_allclose(got.asnumpy(), want.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert [q.name for q in step.optimizer.parameters] == ["weight_orig", "bias"]


@pytest.mark.parametrize("path", ["direct", "jit"])
def test_set_train_switch_never_reuses_a_stale_graph(mode, path):
    m, x = _fresh_dense()
    run = _run_direct if path == "direct" else _run_jit
    m.set_train(True)
    run(m, x, 1)
    u1 = m.weight_u.asnumpy().copy()
    m.set_train(False)
    w, u, v = (q.asnumpy() for q in (m.weight_orig, m.weight_u, m.weight_v))
    eval_out = run(m, x, 2)
    np.testing.assert_array_equal(m.weight_u.asnumpy(), u1)  # a stale training graph would move u
    w_sn, _, _ = np_sn_step(w, u, v, 0, 0)
    for out in eval_out:
        np.testing.assert_allclose(out, x.asnumpy() @ w_sn.T + m.bias.asnumpy(), rtol=RTOL, atol=ATOL)
    m.set_train(True)
    want, u2, _ = _reference_forwards(m, x, 1)
    np.testing.assert_allclose(run(m, x, 1)[0], want[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(m.weight_u.asnumpy(), u2, rtol=RTOL, atol=ATOL)
    assert not np.allclose(u2, u1, atol=1e-3)


@pytest.mark.parametrize("path", ["direct", "jit"])
def test_removal_after_compilation_never_leaves_a_stale_graph(mode, path):
    m, x = _fresh_dense()
    run = _run_direct if path == "direct" else _run_jit
    m.set_train(True)
    run(m, x, 2)
    wn.remove_spectral_norm(m)
    folded = m.weight.asnumpy()
    expected = x.asnumpy() @ folded.T + m.bias.asnumpy()
    # A stale training graph would run another power step and divide by a new sigma.
    for out in run(m, x, 2):
        np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert param_names(m) == ["weight", "bias"]


# --- registration, errors -------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_registration_starts_at_the_top_singular_vectors(kind):
    """A weight with singular values (3, 1, 0.5, ...): 15 power steps from random converge."""
    _, m, _, _ = make_pair(kind)
    dim = 1 if "transpose" in kind else 0
    shape = tuple(m.weight.shape)
    moved = (shape[dim],) + tuple(n for i, n in enumerate(shape) if i != dim)
    rng = np.random.default_rng(4)
    h, w_ = moved[0], int(np.prod(moved[1:]))
    left = np.linalg.qr(rng.standard_normal((h, h)))[0]
    right = np.linalg.qr(rng.standard_normal((w_, h)))[0]
    singular = np.array([3.0, 1.0] + [0.5] * (h - 2))
    mat = (left * singular) @ right.T
    w = np.moveaxis(mat.reshape(moved), 0, dim).astype(np.float32)
    m.weight.set_data(Tensor(w))
    wn.spectral_norm(m)
    assert wn.spectral_norms(m)["weight"].dim == dim
    u, v = m.weight_u.asnumpy(), m.weight_v.asnumpy()
    assert u.shape == (h,) and v.shape == (w_,)
    assert m.weight_u.requires_grad is False and m.weight_v.requires_grad is False
    np.testing.assert_allclose(np.abs(u), np.abs(left[:, 0]), atol=1e-5)
    np.testing.assert_allclose(np.abs(v), np.abs(right[:, 0]), atol=1e-5)
    np.testing.assert_array_equal(m.weight_orig.asnumpy(), w)
    np.testing.assert_allclose(m.weight.asnumpy(), w / 3.0, rtol=1e-5, atol=1e-6)


def test_random_start_follows_ms_set_seed():
    ms.set_seed(11)
    a = wn.spectral_norm(nn.Dense(6, 5, weight_init="ones"))
    ms.set_seed(11)
    b = wn.spectral_norm(nn.Dense(6, 5, weight_init="ones"))
    np.testing.assert_array_equal(a.weight_v.asnumpy(), b.weight_v.asnumpy())


def test_parameter_names_and_trainable_params_inside_a_network():
    net = nn.SequentialCell([nn.Dense(3, 4), nn.ReLU(), nn.Dense(4, 2)])
    wn.spectral_norm(net[0])
    assert param_names(net) == ["0.weight_orig", "0.weight_u", "0.weight_v", "0.bias", "2.weight", "2.bias"]
    assert [p.name for p in net.trainable_params()] == ["0.weight_orig", "0.bias", "2.weight", "2.bias"]
    assert wn.is_spectral_normed(net[0]) and not wn.is_weight_normed(net[0])


def test_dim_argument_and_its_mindspore_layout_warning():
    c = wn.spectral_norm(nn.Conv1d(3, 4, 5), dim=1)
    assert c.weight_u.shape == (3,) and c.weight_v.shape == (4 * 5,)
    with pytest.warns(UserWarning, match="dim=3 here"):
        wn.spectral_norm(nn.Conv1d(3, 4, 5), dim=2)
    assert wn.spectral_norms(wn.spectral_norm(nn.Dense(2, 3), dim=-1))["weight"].dim == 1


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(name="bias"), ValueError, "at least 2 axes"),
    (dict(name="nope"), ValueError, "no Parameter 'nope'"),
    (dict(n_power_iterations=0), ValueError, "n_power_iterations"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(dim=2), ValueError, "out of range"),
    (dict(dim=1.0), TypeError, "dim must be an int"),
    (dict(style="newest"), ValueError, "style"),
])
def test_bad_arguments_leave_the_cell_unchanged(kwargs, error, match):
    m = nn.Dense(3, 4)
    with pytest.raises(error, match=match):
        wn.spectral_norm(m, **kwargs)
    assert type(m) is nn.Dense and param_names(m) == ["weight", "bias"]


def test_one_parametrization_per_parameter_and_removal_errors():
    m = wn.weight_norm(nn.Dense(3, 4))
    with pytest.raises(ValueError, match="weight norm is already applied.*remove_weight_norm"):
        wn.spectral_norm(m)
    s = wn.spectral_norm(nn.Dense(3, 4))
    with pytest.raises(ValueError, match="spectral norm is already applied.*remove_spectral_norm"):
        wn.spectral_norm(s)
    with pytest.raises(ValueError, match="spectral norm is already applied.*remove_spectral_norm"):
        wn.weight_norm(s)
    with pytest.raises(ValueError, match="spectral norm is not applied"):
        wn.remove_spectral_norm(m)
    with pytest.raises(ValueError, match="weight norm is not applied"):
        wn.remove_weight_norm(s)
    with pytest.raises(AttributeError, match="spectral norm.*weight_orig"):
        s.weight = ms.Parameter(Tensor(np.ones((4, 3), np.float32)))
    with pytest.raises(TypeError, match="floating"):
        wn.spectral_norm(_int_cell(), "table")


def _int_cell():
    cell = nn.Cell()
    cell.table = ms.Parameter(Tensor(np.ones((3, 3), np.int32)), requires_grad=False)
    return cell


def test_deepcopy_keeps_state_and_behaviour():
    m, x = _fresh_dense()
    c = copy.deepcopy(m)
    m.set_train(True)
    c.set_train(True)
    np.testing.assert_allclose(c(x).asnumpy(), m(x).asnumpy(), rtol=1e-6)
    np.testing.assert_allclose(c.weight_u.asnumpy(), m.weight_u.asnumpy(), rtol=1e-6)


def test_float16_weights_compute_in_float32():
    m, x = _fresh_dense()
    w, u, v = (p.asnumpy() for p in (m.weight_orig, m.weight_u, m.weight_v))
    m.set_train(True)
    m16 = nn.Dense(5, 4, dtype=ms.float16)
    m16.weight.set_data(Tensor(w.astype(np.float16)))
    m16.bias.set_data(Tensor(m.bias.asnumpy().astype(np.float16)))
    wn.spectral_norm(m16)
    m16.weight_u.set_data(Tensor(u.astype(np.float16)))
    m16.weight_v.set_data(Tensor(v.astype(np.float16)))
    m16.set_train(True)
    out = m16(x.astype(ms.float16))
    assert out.dtype == ms.float16 and m16.weight_u.dtype == ms.float16
    w_sn, u1, _ = np_sn_step(w.astype(np.float16), u.astype(np.float16), v.astype(np.float16), 0, 1)
    np.testing.assert_allclose(m16.weight_u.asnumpy(), u1, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(out.asnumpy(), x.asnumpy() @ w_sn.T + m.bias.asnumpy(), rtol=1e-2, atol=1e-2)


# --- checkpoints ----------------------------------------------------------------------------

def test_mindspore_checkpoint_saves_and_loads_state(tmp_path, mode):
    net = nn.SequentialCell([nn.Dense(5, 4)])
    wn.spectral_norm(net[0])
    net.set_train(True)
    x = Tensor(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))
    net(x)
    net(x)
    path = os.path.join(str(tmp_path), "sn.ckpt")
    ms.save_checkpoint(net, path)
    saved = ms.load_checkpoint(path)
    assert sorted(saved) == ["0.bias", "0.weight_orig", "0.weight_u", "0.weight_v"]
    other = nn.SequentialCell([nn.Dense(5, 4)])
    wn.spectral_norm(other[0])
    not_loaded, _ = ms.load_param_into_net(other, saved)
    assert not not_loaded
    for a, b in zip(net.get_parameters(), other.get_parameters()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    other.set_train(True)
    np.testing.assert_allclose(other(x).asnumpy(), net(x).asnumpy(), rtol=1e-6)
    np.testing.assert_allclose(other[0].weight_u.asnumpy(), net[0].weight_u.asnumpy(), rtol=1e-6)


def _torch_net(api, kind="conv1d"):
    t, _, xt, _ = make_pair(kind)
    t_state = torch_sn(t, api)
    scramble_state(t_state)
    t.train()
    with torch.no_grad():
        t(xt)  # one training forward: u, v no longer random, and not converged either
    return torch.nn.Sequential(t).eval(), xt


def _ms_net(kind, norm):
    _, m, _, xm = make_pair(kind)
    if norm == "spectral":
        wn.spectral_norm(m)
    elif norm == "weight":
        wn.weight_norm(m)
    return nn.SequentialCell([m]), xm


@pytest.mark.parametrize("kind", ["conv1d", "conv1dtranspose"])
@pytest.mark.parametrize("api", ["new", "old"])
@pytest.mark.parametrize("norm", ["spectral", "weight", "none"])
def test_torch_spectral_checkpoint_loads_into_any_layer(api, norm, kind):
    tnet, xt = _torch_net(api, kind)
    state = tnet.state_dict()
    expected_keys = ({"0.parametrizations.weight.original", "0.parametrizations.weight.0._u",
                      "0.parametrizations.weight.0._v"} if api == "new" else
                     {"0.weight_orig", "0.weight_u", "0.weight_v"})
    assert expected_keys <= set(state)
    net, xm = _ms_net(kind, norm)
    assert load_torch_state_dict(net, {k: v for k, v in state.items()}) == ([], [])
    np.testing.assert_allclose(net(xm).asnumpy(), tnet(xt).detach().numpy(), rtol=RTOL, atol=ATOL)
    if norm == "spectral":
        # Copied exactly: training continues as PyTorch's would.
        got = ms_state(net[0])
        want = [state[k].numpy() for k in sorted(expected_keys, key=lambda k: ("orig" not in k, k))]
        np.testing.assert_array_equal(got[0], want[0][:, :, None, :])
        np.testing.assert_array_equal(got[1], state[[k for k in expected_keys if k.endswith("u")][0]].numpy())
        np.testing.assert_array_equal(got[2], state[[k for k in expected_keys if k.endswith("v")][0]].numpy())


@pytest.mark.parametrize("source", ["plain", "weight-old", "weight-new"])
def test_plain_and_weight_norm_checkpoints_load_into_a_spectral_layer(source):
    t, m, xt, xm = make_pair("conv2d")
    if source == "weight-old":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.nn.utils.weight_norm(t)
    elif source == "weight-new":
        torch.nn.utils.parametrizations.weight_norm(t)
    w = t.weight.detach().numpy()
    wn.spectral_norm(m)
    load_torch_state_dict(nn.SequentialCell([m]), torch.nn.Sequential(t).state_dict())
    # orig is the checkpoint's weight; u, v are re-estimated for it.
    np.testing.assert_allclose(m.weight_orig.asnumpy(), w, rtol=1e-6, atol=1e-7)
    s = np.linalg.svd(w.reshape(w.shape[0], -1).astype(np.float64), compute_uv=False)[0]
    np.testing.assert_allclose(m.weight.asnumpy(), w / s, rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("api", ["new", "old"])
@pytest.mark.parametrize("kind", ["conv1d", "conv1dtranspose", "dense"])
def test_saved_state_dict_loads_into_pytorch(api, kind, tmp_path):
    from safetensors.torch import load_file
    net, xm = _ms_net(kind, "spectral")
    net[0].weight_u.set_data(Tensor(np_normalize(np.arange(1.0, 1 + net[0].weight_u.shape[0])).astype(np.float32)))
    path = os.path.join(str(tmp_path), "sn.safetensors")
    keys = save_torch_state_dict(net, path, style=api)
    t, _, xt, _ = make_pair(kind)
    torch_sn(t, api)
    tnet = torch.nn.Sequential(t).eval()
    result = tnet.load_state_dict(load_file(path))
    assert not result.missing_keys and not result.unexpected_keys
    assert set(keys) == set(to_torch_state_dict(net, style=api))
    net.set_train(False)
    np.testing.assert_allclose(net(xm).asnumpy(), tnet(xt).detach().numpy(), rtol=RTOL, atol=ATOL)


def test_mismatched_spectral_checkpoint_is_reported_and_nothing_loads():
    tnet, _ = _torch_net("old")
    state = {k: v.numpy() for k, v in tnet.state_dict().items()}
    state["0.weight_u"] = state["0.weight_u"][:-1]
    net, _ = _ms_net("conv1d", "spectral")
    before = ms_state(net[0])
    with pytest.raises(ValueError, match="fit no matrix view"):
        load_torch_state_dict(net, state)
    for a, b in zip(ms_state(net[0]), before):
        np.testing.assert_array_equal(a, b)


def test_functional_matches_numpy_reference():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 4, 1, 5)).astype(np.float32)
    u = np_normalize(rng.standard_normal(4)).astype(np.float32)
    v = np_normalize(rng.standard_normal(15)).astype(np.float32)
    for u_first in (True, False):
        got = F.spectral_norm(Tensor(w), Tensor(u), Tensor(v), 1, 2, 1e-12, u_first)
        want = np_sn_step(w, u, v, 1, 2, u_first)
        for g, r in zip(got, want):
            np.testing.assert_allclose(g.asnumpy(), r, rtol=1e-5, atol=1e-6)


def test_mixed_precision_cell_trains_its_state(mode):
    """``to_float(float16)``: float16 output, float32 state still updated (to float16 precision:
    PyNative's amp runs the power step in float16, GRAPH_MODE in float32)."""
    m, x = _fresh_dense()
    want, u, v = _reference_forwards(m, x, 2)
    m.to_float(ms.float16)
    m.set_train(True)
    outs = [m(x) for _ in range(2)]
    assert outs[-1].dtype == ms.float16 and m.weight_u.dtype == ms.float32
    np.testing.assert_allclose(outs[-1].asnumpy(), want[-1], rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(m.weight_u.asnumpy(), u, atol=2e-3)
    np.testing.assert_allclose(m.weight_v.asnumpy(), v, atol=2e-3)


@pytest.mark.parametrize("api", ["new", "old"])
def test_non_default_eps_matches_pytorch_in_the_forward(api, mode):
    # Weights small enough that ||W v|| < eps: the normalization is clamped by eps, so the
    # forward, u and v all depend on it; a forward that ignored eps would give unit vectors.
    eps = 0.05
    t, m, xt, xm = make_pair("dense")
    with torch.no_grad():
        t.weight.mul_(1e-3)
    m.weight.set_data(Tensor(t.weight.detach().numpy()))
    if api == "new":
        torch.nn.utils.parametrizations.spectral_norm(t, eps=eps)
        p = t.parametrizations.weight
        t_state = lambda: (p.original, p[0]._u, p[0]._v)  # noqa: E731
    else:
        torch.nn.utils.spectral_norm(t, eps=eps)
        t_state = lambda: (t.weight_orig, t.weight_u, t.weight_v)  # noqa: E731
    scramble_state(t_state)
    wn.spectral_norm(m, eps=eps, style=api)
    assert wn.spectral_norms(m)["weight"].eps == eps
    for param, value in zip((m.weight_orig, m.weight_u, m.weight_v), torch_state(t_state, "dense")):
        param.set_data(Tensor(value))
    orig, u0, v0 = (a.astype(np.float64) for a in torch_state(t_state, "dense"))
    t.train()
    m.set_train(True)
    got, want = m(xm).asnumpy(), t(xt).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    for name, a, b in zip(("orig", "u", "v"), ms_state(m), torch_state(t_state, "dense")):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=name)
    # The float64 reference with this eps agrees, and the default eps would not: the test can fail.
    w_ref, u_ref, _ = np_sn_step(orig, u0, v0, 0, 1, u_first=api == "new", eps=eps)
    np.testing.assert_allclose(m.weight_u.asnumpy(), u_ref, rtol=RTOL, atol=ATOL)
    w_default, u_default, _ = np_sn_step(orig, u0, v0, 0, 1, u_first=api == "new")
    assert np.max(np.abs(u_default - u_ref)) > 0.1 and np.max(np.abs(w_default - w_ref)) > 1e-2 * np.max(np.abs(w_ref))
