"""The composed path's closed-form cells (what GPU and Ascend run) give the numbers of
MindSpore's own autodiff of the plain composition and of float64 numpy.

Timing is not tested here (see benchmarks/). The CPU backend runs the tiled variant of the
cells; the broadcasting variant, which other backends run, is built explicitly and checked
on the same cases.
"""
import mindspore as ms
import numpy as np
import pytest

from ms_weightnorm import functional as F

CASES = [
    ((6, 5), 0),
    ((6, 5), 1),
    ((4, 3, 2, 5), 1),
    ((4, 3, 2, 5), 2),
    ((3, 2, 1, 7), 3),
    ((3, 2, 1, 7), 0),
    ((4, 3, 2, 5), None),
    ((5,), 0),
    ((5,), None),
]


@pytest.fixture
def composed():
    """Runs the test on the composed path; restores the backend setting afterwards."""
    saved = F._backend_state["name"]
    F.set_backend("composed")
    yield
    F.set_backend("auto")
    F._backend_state["name"] = saved


@pytest.fixture(params=["tiled", "broadcast"])
def variant(request, monkeypatch):
    """Both ways the cells scale a slice: CPU's tiled Mul and the broadcasting Mul of GPU/Ascend."""
    if request.param == "broadcast":
        def cells(axis, eps):
            key = F._composed_key(axis, eps)
            if key not in F._COMPOSED_CELLS:
                backward = F._ComposedBackward(axis, eps, F._scale_broadcast)
                F._COMPOSED_CELLS[key] = (F._ComposedForward(axis, eps, F._scale_broadcast, backward), backward)
            return F._COMPOSED_CELLS[key]
        monkeypatch.setattr(F, "_composed_cells", cells)
    monkeypatch.setattr(F, "_COMPOSED_CELLS", {})
    F.set_backend(F.get_backend())  # drop graphs compiled with the other variant's cells
    return request.param


def _data(rng, shape, dim, dtype=np.float64):
    v = rng.standard_normal(shape).astype(dtype)
    g = np.asarray(rng.random(F.g_shape(shape, dim)) + 0.5).astype(dtype)
    gw = rng.standard_normal(shape).astype(dtype)
    return v, g, gw


def _np_first_order(v, g, gw, dim, eps):
    axis = F.canonical_dim(dim, v.ndim)
    axes = tuple(i for i in range(v.ndim) if i != axis) if axis is not None else None
    n = np.sqrt((v * v).sum(axis=axes, keepdims=axis is not None) + eps)
    d = (gw * v).sum(axis=axes, keepdims=axis is not None)
    s = g / n
    return s * v, s * gw - s * d / n**2 * v, d / n


def _first_order(fn, v, g, gw, dim, eps, mode):
    def loss(v, g, gw):
        return (fn(v, g, dim, eps) * gw).sum()
    grad = ms.grad(loss, grad_position=(0, 1))
    if mode == "graph":
        grad = ms.jit(grad)
    dv, dg = grad(ms.Tensor(v), ms.Tensor(g), ms.Tensor(gw))
    return fn(ms.Tensor(v), ms.Tensor(g), dim, eps).asnumpy(), dv.asnumpy(), dg.asnumpy()


def _second_order(fn, v, g, gw, a, b, dim, eps, mode):
    def loss(v, g, gw):
        return (fn(v, g, dim, eps) * gw).sum()

    def outer(v, g, gw):
        dv, dg = ms.grad(loss, grad_position=(0, 1))(v, g, gw)
        return (dv * ms.Tensor(a)).sum() + (dg * ms.Tensor(b)).sum()
    grad = ms.grad(outer, grad_position=(0, 1, 2))
    if mode == "graph":
        grad = ms.jit(grad)
    return [x.asnumpy() for x in grad(ms.Tensor(v), ms.Tensor(g), ms.Tensor(gw))]


def _autodiff(v, g, dim, eps):
    """The plain composition, differentiated by MindSpore: the reference the cells replace."""
    return F._composed_weight_norm(v, g, F.canonical_dim(dim, v.ndim), eps)


@pytest.mark.parametrize("shape,dim", CASES)
def test_closed_form_cells_take_g_shaped_weights(composed, shape, dim):
    axis = F.canonical_dim(dim, len(shape))
    assert F._fused_applies(shape, ms.float32, F.g_shape(shape, dim), ms.float32, axis, 0.0) is False
    assert F._closed_form_applies(shape, ms.float32, F.g_shape(shape, dim), ms.float32, axis, 0.0) is True
    # A g that only broadcasts keeps the plain composition (and its broadcasting semantics).
    assert F._closed_form_applies(shape, ms.float32, (1,), ms.float32, axis, 0.0) is (F.g_shape(shape, dim) == (1,))
    assert F._closed_form_applies(shape, ms.int32, F.g_shape(shape, dim), ms.float32, axis, 0.0) is False


@pytest.mark.parametrize("shape,dim", CASES)
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_first_order_matches_autodiff_and_numpy(mode, composed, variant, rng, shape, dim, eps):
    v, g, gw = _data(rng, shape, dim)
    got = _first_order(F.weight_norm, v, g, gw, dim, eps, mode)
    ref = _first_order(_autodiff, v, g, gw, dim, eps, mode)
    exact = _np_first_order(v, g, gw, dim, eps)
    for x, y, z in zip(got, ref, exact):
        assert x.shape == y.shape == z.shape and x.dtype == np.float64
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-13)
        # eps reaches MindSpore as a float32 scalar: 0.25 is exact, and so is this reference.
        np.testing.assert_allclose(x, z, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape,dim", CASES)
def test_second_order_matches_autodiff(mode, composed, variant, rng, shape, dim):
    v, g, gw = _data(rng, shape, dim)
    a = rng.standard_normal(shape)
    b = np.asarray(rng.standard_normal(F.g_shape(shape, dim)))
    got = _second_order(F.weight_norm, v, g, gw, a, b, dim, 0.25, mode)
    ref = _second_order(_autodiff, v, g, gw, a, b, dim, 0.25, mode)
    for x, y in zip(got, ref):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("dtype,rtol", [(ms.float16, 2e-3), (ms.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("shape,dim", [((6, 5), 0), ((4, 3, 2, 5), 1), ((3, 2, 1, 7), 3), ((4, 3, 2, 5), None)])
def test_half_precision_gradients(mode, composed, variant, rng, dtype, rtol, shape, dim):
    v, g, gw = _data(rng, shape, dim, np.float32)
    v = v * 300.0  # sums of squares beyond float16's range: only a float32 norm survives
    vh, gh = ms.Tensor(v).astype(dtype), ms.Tensor(g).astype(dtype)

    def loss(v, g, gw):
        return (F.weight_norm(v, g, dim).astype(ms.float32) * gw).sum()
    grad = ms.grad(loss, grad_position=(0, 1))
    if mode == "graph":
        grad = ms.jit(grad)
    dv, dg = grad(vh, gh, ms.Tensor(gw))
    assert dv.dtype == dtype and dg.dtype == dtype
    w = F.weight_norm(vh, gh, dim)
    assert w.dtype == dtype
    # Reference from the half-precision inputs themselves, in float64.
    v64 = vh.astype(ms.float32).asnumpy().astype(np.float64)
    g64 = gh.astype(ms.float32).asnumpy().astype(np.float64)
    # The cotangent reaching a half-precision weight is itself rounded to that type (the
    # gradient of the cast), in any framework: the reference uses the rounded cotangent, or a
    # whole-tensor dg (a sum with cancellation) would measure bfloat16's rounding of gw.
    gw64 = ms.Tensor(gw).astype(dtype).astype(ms.float32).asnumpy().astype(np.float64)
    w_ref, dv_ref, dg_ref = _np_first_order(v64, g64, gw64, dim, 0.0)
    np.testing.assert_allclose(w.astype(ms.float32).asnumpy(), w_ref, rtol=rtol, atol=rtol * np.abs(w_ref).max())
    np.testing.assert_allclose(dv.astype(ms.float32).asnumpy(), dv_ref, rtol=rtol,
                               atol=rtol * np.abs(dv_ref).max())
    np.testing.assert_allclose(dg.astype(ms.float32).asnumpy(), dg_ref, rtol=rtol,
                               atol=rtol * np.abs(dg_ref).max())


def test_broadcast_g_keeps_autodiff_path(mode, composed, rng):
    # g of shape (1,) broadcast against a per-row norm: not g_shape, so the plain composition.
    v = rng.standard_normal((4, 3))
    g = np.array([1.5])
    gw = rng.standard_normal((4, 3))
    w, dv, dg = _first_order(F.weight_norm, v, g, gw, 0, 0.0, mode)
    n = np.sqrt((v * v).sum(1, keepdims=True))
    np.testing.assert_allclose(w, 1.5 * v / n, rtol=1e-12)
    np.testing.assert_allclose(dg, [(gw * v / n).sum()], rtol=1e-12)
    d = (gw * v).sum(1, keepdims=True)
    np.testing.assert_allclose(dv, 1.5 / n * gw - 1.5 * d / n**3 * v, rtol=1e-12, atol=1e-13)


def test_view_plans_reduce_one_block_of_contiguous_axes():
    """The views the cells reduce: 2-D for the first and last axis, 3-D for a middle one, with
    the reduced shape (where g goes) and the tiling multiples back to the view."""
    assert F._view_plan((4, 3, 5), 0) == ((4, 15), (1,), (4, 1), (1, 15))
    assert F._view_plan((4, 3, 5), 2) == ((12, 5), (0,), (1, 5), (12, 1))
    assert F._view_plan((4, 3, 5), 1) == ((4, 3, 5), (0, 2), (1, 3, 1), (4, 1, 5))
    assert F._view_plan((4, 3, 5), None) == ((60,), (0,), (1,), (60,))
    assert F._view_plan((7,), 0) == ((7, 1), (1,), (7, 1), (1, 1))


def test_the_cpu_tiles_the_scale_and_other_devices_broadcast_it(monkeypatch):
    # The CPU backend's broadcasting Mul is about 3x slower than a Tile plus an equal-shape Mul
    # (see _scale_tiled); elsewhere, and for a scalar scale, the broadcast is the fast form.
    monkeypatch.setattr(F, "_COMPOSED_CELLS", {})
    assert F._composed_cells(0, 0.0)[0].scale_fn is F._scale_tiled
    assert F._composed_cells(None, 0.0)[0].scale_fn is F._scale_broadcast
    monkeypatch.setattr(F, "_device_target", lambda: "GPU")
    assert F._composed_cells(0, 0.0)[0].scale_fn is F._scale_broadcast
    forward, backward = F._composed_cells(1, 0.25)
    assert forward.backward is backward and backward.scale_fn is F._scale_broadcast
