"""The pure functions: norm_except_dim and functional.weight_norm against float64 references."""
import math

import mindspore as ms
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ms_weightnorm import functional as F
from ms_weightnorm import norm_except_dim

from helpers import in_mode, kept_axis, np_norm_except_dim, np_weight_norm, np_weight_norm_grads


@st.composite
def shape_and_dim(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    nd = len(shape)
    dim = draw(st.sampled_from([None, -1] + list(range(nd)) + list(range(-nd, -1))))
    return shape, dim


def test_canonical_dim():
    assert F.canonical_dim(0, 3) == 0
    assert F.canonical_dim(2, 3) == 2
    assert F.canonical_dim(-2, 3) == 1
    assert F.canonical_dim(-3, 3) == 0
    assert F.canonical_dim(None, 3) is None
    assert F.canonical_dim(-1, 3) is None  # PyTorch's quirk: -1 is "whole tensor"
    with pytest.raises(ValueError, match="out of range"):
        F.canonical_dim(3, 3)
    with pytest.raises(ValueError, match="out of range"):
        F.canonical_dim(-4, 3)
    with pytest.raises(TypeError):
        F.canonical_dim(1.0, 3)


def test_g_shape():
    assert F.g_shape((40, 20), 0) == (40, 1)
    assert F.g_shape((40, 20), 1) == (1, 20)
    assert F.g_shape((8, 4, 1, 3), -2) == (1, 1, 1, 1)
    assert F.g_shape((8, 4, 1, 3), None) == ()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sd=shape_and_dim(), seed=st.integers(0, 2 ** 16))
def test_norm_except_dim_matches_numpy(sd, seed):
    shape, dim = sd
    v = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    out = norm_except_dim(ms.Tensor(v), 2, dim).asnumpy()
    ref = np_norm_except_dim(v, dim)
    assert out.shape == ref.shape == F.g_shape(shape, dim)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sd=shape_and_dim(), seed=st.integers(0, 2 ** 16))
def test_weight_norm_forward_matches_numpy(sd, seed):
    shape, dim = sd
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape).astype(np.float32)
    g = rng.uniform(0.5, 2.0, F.g_shape(shape, dim)).astype(np.float32)
    out = F.weight_norm(ms.Tensor(v), ms.Tensor(g), dim).asnumpy()
    np.testing.assert_allclose(out, np_weight_norm(v, g, dim), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [1, 3, math.inf])
def test_other_norm_orders(p, rng):
    v = rng.standard_normal((4, 3, 2)).astype(np.float32)
    for dim in (0, 1, None):
        out = norm_except_dim(ms.Tensor(v), p, dim).asnumpy()
        np.testing.assert_allclose(out, np_norm_except_dim(v, dim, p), rtol=1e-5)


def test_norm_except_dim_rejects_bad_pow():
    with pytest.raises(ValueError, match="pow"):
        norm_except_dim(ms.Tensor(np.ones((2, 2), np.float32)), -1, 0)


SHAPES_DIMS = [((6, 5), 0), ((6, 5), 1), ((6, 5), None), ((4, 3, 1, 5), 0), ((4, 3, 1, 5), 3),
               ((4, 3, 2, 5), 2), ((4, 3, 2, 5), -2), ((4, 3, 2, 5), -1), ((7,), 0)]


@pytest.mark.parametrize("shape,dim", SHAPES_DIMS)
def test_gradients_match_closed_form(shape, dim, mode, rng):
    v = rng.standard_normal(shape).astype(np.float32)
    g = rng.uniform(0.5, 2.0, F.g_shape(shape, dim)).astype(np.float32)
    gw = rng.standard_normal(shape).astype(np.float32)

    def loss(v_, g_):
        return (F.weight_norm(v_, g_, dim) * ms.Tensor(gw)).sum()

    grad_v, grad_g = in_mode(ms.grad(loss, grad_position=(0, 1)), mode)(ms.Tensor(v), ms.Tensor(g))
    ref_g, ref_v = np_weight_norm_grads(v, g, gw, dim)
    np.testing.assert_allclose(grad_g.asnumpy(), ref_g, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_v.asnumpy(), ref_v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dim", [0, 1, 2, None])
def test_gradients_match_finite_differences(dim, rng):
    shape = (3, 4, 2)
    v = rng.standard_normal(shape)
    g = rng.uniform(0.5, 2.0, F.g_shape(shape, dim))
    c = rng.standard_normal(shape)

    def f_np(v_, g_):
        return float((np_weight_norm(v_, g_, dim) ** 3 * c).sum())

    def f_ms(v_, g_):
        return (F.weight_norm(v_, g_, dim) ** 3 * ms.Tensor(c)).sum()

    grad_v, grad_g = ms.grad(f_ms, grad_position=(0, 1))(ms.Tensor(v), ms.Tensor(g))
    h = 1e-6
    for arr, grad, which in ((v, grad_v.asnumpy(), "v"), (g, grad_g.asnumpy(), "g")):
        fd = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += h
            minus[idx] -= h
            args_p = (plus, g) if which == "v" else (v, plus)
            args_m = (minus, g) if which == "v" else (v, minus)
            fd[idx] = (f_np(*args_p) - f_np(*args_m)) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape,dim", [((4, 3), 0), ((4, 3), 1), ((4, 3), None), ((3, 2, 1, 4), 0),
                                       ((3, 2, 1, 4), 1), ((3, 2, 1, 4), 3), ((3, 2, 1, 4), None)])
def test_second_order_gradients_match_composite_reference(shape, dim, mode, rng):
    """grad of grad against an autograd composite in float64 (torch, test-only)."""
    import torch  # test-only reference, installed by the test extras
    v = rng.standard_normal(shape)
    g = rng.uniform(0.5, 2.0, F.g_shape(shape, dim))

    def first(v_, g_):
        return (F.weight_norm(v_, g_, dim) ** 3).sum()

    first_grad = ms.grad(first, grad_position=(0, 1))

    def second(v_, g_):
        a, b = first_grad(v_, g_)
        return (a * a).sum() + (b * b).sum()

    hv, hg = in_mode(ms.grad(second, grad_position=(0, 1)), mode)(ms.Tensor(v), ms.Tensor(g))

    vt = torch.tensor(v, requires_grad=True)
    gt = torch.tensor(g, requires_grad=True)
    axis = kept_axis(dim, len(shape))
    red = [i for i in range(len(shape)) if i != axis]
    norm = (vt * vt).sum(dim=red, keepdim=axis is not None).sqrt()
    w = gt * vt / norm
    a, b = torch.autograd.grad((w ** 3).sum(), (vt, gt), create_graph=True)
    rv, rg = torch.autograd.grad((a * a).sum() + (b * b).sum(), (vt, gt))
    np.testing.assert_allclose(hv.asnumpy(), rv.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hg.asnumpy(), rg.numpy(), rtol=1e-6, atol=1e-9)


def test_eps_keeps_zero_rows_finite(mode):
    v = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    g = np.array([[1.0], [2.0]], np.float32)

    def loss(v_, g_):
        return (F.weight_norm(v_, g_, 0, 1e-12) ** 2).sum()

    def forward(v_, g_):
        return F.weight_norm(v_, g_, 0, 1e-12)

    out = in_mode(forward, mode)(ms.Tensor(v), ms.Tensor(g)).asnumpy()
    gv, gg = in_mode(ms.grad(loss, grad_position=(0, 1)), mode)(ms.Tensor(v), ms.Tensor(g))
    np.testing.assert_array_equal(out[0], [0.0, 0.0])
    np.testing.assert_allclose(out, np_weight_norm(v, g, 0, 1e-12), rtol=1e-6)
    ref_g, ref_v = np_weight_norm_grads(v, g, 2 * np_weight_norm(v, g, 0, 1e-12), 0, 1e-12)
    np.testing.assert_allclose(gv.asnumpy(), ref_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gg.asnumpy(), ref_g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,dim", SHAPES_DIMS)
@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_forward_matches_numpy_in_each_mode(shape, dim, eps, mode, rng):
    """The forward alone, compiled in graph mode (a bare call would run eagerly), with eps."""
    v = rng.standard_normal(shape).astype(np.float32)
    g = rng.uniform(0.5, 2.0, F.g_shape(shape, dim)).astype(np.float32)

    def forward(v_, g_):
        return F.weight_norm(v_, g_, dim, eps)

    def norm_of(v_):
        return norm_except_dim(v_, 2, dim, eps)

    out = in_mode(forward, mode)(ms.Tensor(v), ms.Tensor(g)).asnumpy()
    np.testing.assert_allclose(out, np_weight_norm(v, g, dim, eps), rtol=1e-5, atol=1e-6)
    norm = in_mode(norm_of, mode)(ms.Tensor(v)).asnumpy()
    np.testing.assert_allclose(norm, np_norm_except_dim(v, dim, 2.0, eps), rtol=1e-5, atol=1e-6)


def test_in_mode_really_compiles():
    """The helper's claim, checked: under ms.jit a graph is built once and reused."""
    from helpers import TraceProbe
    probe = TraceProbe()

    def f(x):
        return x * 2 if probe(0) else x * 3

    x = ms.Tensor(np.ones(2, np.float32))
    np.testing.assert_array_equal(f(x).asnumpy(), [3.0, 3.0])  # eager, even under GRAPH_MODE
    assert probe.traces == 0
    jf = ms.jit(f)
    np.testing.assert_array_equal(jf(x).asnumpy(), [2.0, 2.0])
    np.testing.assert_array_equal(jf(x).asnumpy(), [2.0, 2.0])
    assert probe.traces == 1


def test_eps_zero_matches_pytorch_nan_on_zero_row():
    v = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    g = np.array([[1.0], [2.0]], np.float32)
    out = F.weight_norm(ms.Tensor(v), ms.Tensor(g), 0).asnumpy()
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], [1.2, 1.6], rtol=1e-6)


@pytest.mark.parametrize("dtype", [ms.float16, ms.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    # 4096 entries of 8.0: the float16 sum of squares would overflow (262144 > 65504).
    v = np.full((2, 4096), 8.0, np.float32)
    g = np.ones((2, 1), np.float32)
    norm = norm_except_dim(ms.Tensor(v, dtype), 2, 0)
    assert norm.dtype == ms.float32
    np.testing.assert_allclose(norm.asnumpy(), np.full((2, 1), 512.0), rtol=1e-3)
    w = F.weight_norm(ms.Tensor(v, dtype), ms.Tensor(g, dtype), 0)
    assert w.dtype == dtype
    np.testing.assert_allclose(w.astype(ms.float32).asnumpy(), np.full((2, 4096), 1 / 64), rtol=1e-2)
