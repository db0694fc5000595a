"""The fused CPU kernels give the composed path's numbers: values, first and second order.

Timing is not tested here (see benchmarks/). Second-order references are central finite
differences, in float64 numpy, of the closed-form first-order gradients, so they do not
depend on either implementation.
"""
import json
import os
import subprocess
import sys
import warnings

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import ms_weightnorm as wn
from ms_weightnorm import _fused
from ms_weightnorm import functional as F

from helpers import bf16_round_nearest_even, in_mode, ulp_distance

# (shape, dim): dim 0, a middle axis, the last axis, the whole tensor; a remainder after the
# kernels' blocks of rows (37 rows of 7 columns); dim-0 rows too long to stay in cache
# (2 x 40000: the two-pass loops); larger weights for the threaded test.
CASES = [
    ((6, 5), 0),
    ((4, 3, 2, 5), 1),
    ((37, 7), 1),
    ((3, 2, 1, 7), 3),
    ((4, 3, 2, 5), None),
    ((5,), 0),
]
BIG_CASES = [((320, 1024), 0), ((1024, 320), 1), ((2, 160, 1024), None), ((2, 40000), 0),
             ((8, 7, 1, 4097), 1)]


@pytest.fixture
def backend():
    """Yields the backend setter; afterwards restores the setting found (so a CI run with
    MS_WEIGHTNORM_BACKEND=composed keeps testing the composed path in later files)."""
    saved = F._backend_state["name"]
    yield F.set_backend
    F.set_backend("auto")  # drops the graphs compiled under the test's choice
    F._backend_state["name"] = saved


def _data(rng, shape, dim, dtype=np.float32):
    v = rng.standard_normal(shape).astype(dtype)
    g = np.asarray(rng.random(F.g_shape(shape, dim)) + 0.5).astype(dtype)
    gw = rng.standard_normal(shape).astype(dtype)
    return v, g, gw


def _np_first_order(v, g, gw, dim, eps):
    """w, dL/dv and dL/dg for L = sum(gw * w), float64."""
    axes = tuple(i for i in range(v.ndim) if i != dim) if dim is not None else None
    n = np.sqrt((v * v).sum(axis=axes, keepdims=dim is not None) + eps)
    s = g / n
    d = (gw * v).sum(axis=axes, keepdims=dim is not None)
    return s * v, s * gw - s * d / n**2 * v, d / n


def _ms_grads(v, g, gw, dim, eps, mode):
    """w, dL/dv, dL/dg; in graph mode both the forward and the gradient really compile."""
    def forward(v, g):
        return F.weight_norm(v, g, dim, eps)

    def loss(v, g, gw):
        return (F.weight_norm(v, g, dim, eps) * gw).sum()
    grad = in_mode(ms.grad(loss, grad_position=(0, 1)), mode)
    dv, dg = grad(ms.Tensor(v), ms.Tensor(g), ms.Tensor(gw))
    w = in_mode(forward, mode)(ms.Tensor(v), ms.Tensor(g))
    return w.asnumpy(), dv.asnumpy(), dg.asnumpy()


def test_fused_kernels_build_on_this_machine():
    # CI runs on CPU with a C++ compiler: the fast path must really be the one under test.
    assert _fused.unavailable_reason() is None
    assert F.fused_available()


@pytest.mark.parametrize("shape,dim", CASES + BIG_CASES)
def test_each_backend_takes_its_path(backend, shape, dim):
    axis = F.canonical_dim(dim, len(shape))
    args = (shape, ms.float32, F.g_shape(shape, dim), ms.float32, axis, 0.0)
    for name, fused in (("fused", True), ("auto", True), ("composed", False)):
        backend(name)
        assert F._fused_applies(*args) is fused


@pytest.mark.parametrize("shape,dim", CASES + BIG_CASES)
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_first_order_matches_composed(mode, backend, rng, shape, dim, eps):
    v, g, gw = _data(rng, shape, dim)
    out = {}
    for name in ("fused", "composed"):
        backend(name)
        out[name] = _ms_grads(v, g, gw, dim, eps, mode)
    ref = _np_first_order(v.astype(np.float64), g.astype(np.float64), gw.astype(np.float64),
                          F.canonical_dim(dim, v.ndim), eps)
    for fused, composed, exact in zip(out["fused"], out["composed"], ref):
        assert fused.shape == composed.shape == exact.shape
        np.testing.assert_allclose(fused, composed, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(fused, exact, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("shape,dim", BIG_CASES + [((33, 1, 1, 7), 3)])
def test_threaded_loops_match(monkeypatch, mode, backend, rng, shape, dim):
    # A tiny grain splits even these weights across 3 threads, mid-segment and mid-block.
    monkeypatch.setenv("MS_WEIGHTNORM_THREADS", "3")
    monkeypatch.setenv("MS_WEIGHTNORM_THREAD_GRAIN", "50")
    v, g, gw = _data(rng, shape, dim)
    backend("fused")
    got = _ms_grads(v, g, gw, dim, 0.0, mode)
    ref = _np_first_order(v.astype(np.float64), g.astype(np.float64), gw.astype(np.float64),
                          F.canonical_dim(dim, v.ndim), 0.0)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("shape,dim", CASES)
def test_float64_matches_reference_closely(mode, backend, rng, shape, dim):
    v, g, gw = _data(rng, shape, dim, np.float64)
    backend("fused")
    got = _ms_grads(v, g, gw, dim, 0.0, mode)
    ref = _np_first_order(v, g, gw, F.canonical_dim(dim, v.ndim), 0.0)
    for a, b in zip(got, ref):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def _second_order_ms(v, g, gw, a, b, dim, eps, mode):
    """Gradient w.r.t. (v, g, gw) of sum(a * dv) + sum(b * dg), (dv, dg) = grad of sum(gw * w)."""
    def loss(v, g, gw):
        return (F.weight_norm(v, g, dim, eps) * gw).sum()

    def outer(v, g, gw):
        dv, dg = ms.grad(loss, grad_position=(0, 1))(v, g, gw)
        return (dv * ms.Tensor(a)).sum() + (dg * ms.Tensor(b)).sum()
    grad = in_mode(ms.grad(outer, grad_position=(0, 1, 2)), mode)
    return [x.asnumpy() for x in grad(ms.Tensor(v), ms.Tensor(g), ms.Tensor(gw))]


def _second_order_fd(v, g, gw, a, b, dim, eps, h=1e-6):
    axis = F.canonical_dim(dim, v.ndim)

    def outer(v, g, gw):
        _, dv, dg = _np_first_order(v, g, gw, axis, eps)
        return (dv * a).sum() + (dg * b).sum()
    grads = []
    args = [v, g, gw]
    for i, x in enumerate(args):
        grad = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            plus = [y.copy() for y in args]
            minus = [y.copy() for y in args]
            plus[i][idx] += h
            minus[i][idx] -= h
            grad[idx] = (outer(*plus) - outer(*minus)) / (2 * h)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("shape,dim", [((6, 5), 0), ((4, 3, 2, 5), 1), ((3, 2, 1, 7), 3),
                                       ((4, 3, 2, 5), None)])
@pytest.mark.parametrize("eps", [0.0, 0.25])
@pytest.mark.parametrize("path", ["fused", "composed"])
def test_second_order_matches_finite_differences(mode, backend, rng, shape, dim, eps, path):
    v, g, gw = _data(rng, shape, dim, np.float64)
    a = rng.standard_normal(shape)
    b = np.asarray(rng.standard_normal(F.g_shape(shape, dim)))
    backend(path)
    got = _second_order_ms(v, g, gw, a, b, dim, eps, mode)
    ref = _second_order_fd(v, g, gw, a, b, dim, eps)
    for x, y in zip(got, ref):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,dim", [((6, 5), 0), ((4, 3, 2, 5), 1), ((3, 2, 1, 7), 3),
                                       ((4, 3, 2, 5), None)])
def test_second_order_fused_matches_composed(mode, backend, rng, shape, dim):
    v, g, gw = _data(rng, shape, dim)
    a = rng.standard_normal(shape).astype(np.float32)
    b = np.asarray(rng.standard_normal(F.g_shape(shape, dim))).astype(np.float32)
    out = {}
    for name in ("fused", "composed"):
        backend(name)
        out[name] = _second_order_ms(v, g, gw, a, b, dim, 0.1, mode)
    for x, y in zip(out["fused"], out["composed"]):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype,rtol", [(ms.float16, 2e-3), (ms.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("shape,dim", [((6, 5), 0), ((4, 3, 2, 5), 1), ((37, 7), 1), ((4, 3, 2, 5), None),
                                       ((512, 600), 0)])
def test_half_precision(mode, backend, rng, dtype, rtol, shape, dim):
    v, g, gw = _data(rng, shape, dim)
    # Magnitudes whose sum of squares overflows float16 (max 65504): only a float32 norm survives.
    v = v * 300.0
    vh, gh = ms.Tensor(v).astype(dtype), ms.Tensor(g).astype(dtype)

    def loss(v, g, gw):
        return (F.weight_norm(v, g, dim).astype(ms.float32) * gw).sum()

    def forward(v, g):
        return F.weight_norm(v, g, dim)
    # The composed path's backward needs a bfloat16 ReduceSum, which MindSpore's CPU backend
    # lacks: only its forward is compared for bfloat16.
    names = ("fused", "composed") if dtype == ms.float16 else ("fused",)
    half = {}
    for name in ("fused", "composed"):
        backend(name)
        w = in_mode(forward, mode)(vh, gh)
        assert w.dtype == dtype
        half[name] = [w.astype(ms.float32).asnumpy()]
        if name in names:
            dv, dg = in_mode(ms.grad(loss, grad_position=(0, 1)), mode)(vh, gh, ms.Tensor(gw))
            assert dv.dtype == dtype and dg.dtype == dtype
            half[name] += [dv.astype(ms.float32).asnumpy(), dg.astype(ms.float32).asnumpy()]
    # The reference: float64 computation from the same rounded inputs (the gradient reaching w
    # is gw rounded to the half type as well).
    v64, g64, gw64 = (ms.Tensor(x).astype(dtype).astype(ms.float32).asnumpy().astype(np.float64)
                      for x in (v, g, gw))
    ref = _np_first_order(v64, g64, gw64, F.canonical_dim(dim, v.ndim), 0.0)
    for name in names:
        assert len(half[name]) == 3
        for got, exact in zip(half[name], ref):
            assert np.isfinite(got).all()
            np.testing.assert_allclose(got, exact, rtol=rtol, atol=rtol * np.abs(exact).max())
    # Forward: both paths round g/||v|| to the half type and multiply once: the same numbers
    # up to the last bit of the float32 norm.
    np.testing.assert_allclose(half["fused"][0], half["composed"][0], rtol=rtol, atol=rtol * 1e-3)


def test_float32_g_with_float16_v(mode, backend, rng):
    v, g, gw = _data(rng, (6, 5), 0)
    out = {}
    for name in ("fused", "composed"):
        backend(name)

        def loss(v, g):
            return (F.weight_norm(v, g, 0).astype(ms.float32) * ms.Tensor(gw)).sum()

        def forward(v, g):
            return F.weight_norm(v, g, 0)
        grad = in_mode(ms.grad(loss, grad_position=(0, 1)), mode)
        vh, g32 = ms.Tensor(v).astype(ms.float16), ms.Tensor(g)
        dv, dg = grad(vh, g32)
        assert dv.dtype == ms.float16 and dg.dtype == ms.float32
        out[name] = [in_mode(forward, mode)(vh, g32).astype(ms.float32).asnumpy(),
                     dv.astype(ms.float32).asnumpy(), dg.asnumpy()]
    for x, y in zip(out["fused"], out["composed"]):
        np.testing.assert_allclose(x, y, rtol=3e-3, atol=3e-3)


def test_zero_slice_with_eps_is_finite(mode, backend, rng):
    v, g, gw = _data(rng, (4, 6), 0)
    v[2] = 0.0
    out = {}
    for name in ("fused", "composed"):
        backend(name)
        out[name] = _ms_grads(v, g, gw, 0, 1e-6, mode)
    for x, y in zip(out["fused"], out["composed"]):
        assert np.isfinite(x).all()
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_transposed_input_in_pynative(backend, rng):
    # A non-contiguous view must reach the kernel as the values it shows.
    base = rng.standard_normal((5, 8)).astype(np.float32)
    g = (rng.random((8, 1)) + 0.5).astype(np.float32)
    out = {}
    for name in ("fused", "composed"):
        backend(name)
        out[name] = F.weight_norm(ms.Tensor(base).transpose(), ms.Tensor(g), 0).asnumpy()
    np.testing.assert_allclose(out["fused"], out["composed"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["fused"], _np_first_order(base.T, g, base.T, 0, 0.0)[0], rtol=1e-5)


@pytest.mark.parametrize("g_value", [np.float32(2.0), np.array([[1.5, 2.0, 0.5]], np.float32)])
def test_broadcast_g_keeps_composed_semantics(backend, rng, g_value):
    """A g that is not g_shape broadcasts like numpy (w = g * v / ||v||), on either backend."""
    v_np = rng.standard_normal((4, 3)).astype(np.float32)
    v, g = ms.Tensor(v_np), ms.Tensor(g_value)
    norm = np.sqrt((v_np.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    ref = g_value.astype(np.float64) * v_np / norm
    for name in ("fused", "composed"):
        backend(name)
        np.testing.assert_allclose(F.weight_norm(v, g, 0).asnumpy(), ref, rtol=1e-6, atol=1e-7)


class _Net(nn.Cell):
    """Weight-normed MLP whose layers compute in ``dtype`` (float32 input and loss)."""

    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype
        self.body = nn.SequentialCell([nn.Dense(8, 16, dtype=dtype), nn.ReLU(), nn.Dense(16, 16, dtype=dtype),
                                       nn.ReLU(), nn.Dense(16, 4, dtype=dtype)])
        wn.apply_weight_norm(self.body)

    def construct(self, x):
        return self.body(x.astype(self.dtype)).astype(ms.float32)


@pytest.mark.parametrize("dtype,rtol", [(ms.float32, 1e-5), (ms.float16, 1e-2)])
def test_layer_training_matches(mode, backend, rng, dtype, rtol):
    x = ms.Tensor(rng.standard_normal((10, 8)).astype(np.float32))
    y = ms.Tensor(rng.standard_normal((10, 4)).astype(np.float32))
    losses, final = {}, {}
    for name in ("fused", "composed"):
        backend(name)
        ms.set_seed(0)
        net = _Net(dtype)
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params(), 0.05))
        losses[name] = [float(step(x, y).asnumpy()) for _ in range(4)]
        final[name] = {p.name: p.asnumpy().astype(np.float32) for p in net.trainable_params()}
    assert np.isfinite(losses["fused"]).all()
    assert losses["fused"][-1] < losses["fused"][0]  # it trains
    np.testing.assert_allclose(losses["fused"], losses["composed"], rtol=rtol)
    for key, value in final["fused"].items():
        assert np.isfinite(value).all()
        np.testing.assert_allclose(value, final["composed"][key], rtol=rtol, atol=rtol)


def test_backend_switch_and_environment(monkeypatch, backend):
    backend("composed")
    assert F.get_backend() == "composed"
    with pytest.raises(ValueError, match="backend must be one of"):
        F.set_backend("fastest")
    F._backend_state["name"] = None  # back to the environment variable
    monkeypatch.setenv("MS_WEIGHTNORM_BACKEND", "Fused")
    assert F.get_backend() == "fused"
    monkeypatch.setenv("MS_WEIGHTNORM_BACKEND", "nope")
    with pytest.raises(ValueError, match="MS_WEIGHTNORM_BACKEND"):
        F.get_backend()
    monkeypatch.delenv("MS_WEIGHTNORM_BACKEND")
    assert F.get_backend() == "auto"


def test_unavailable_kernels_fall_back_or_raise(monkeypatch, backend, rng):
    monkeypatch.setattr(F, "_fused_unavailable_reason", lambda: "no compiler (simulated)")
    monkeypatch.setitem(F._backend_state, "warned", False)
    v = ms.Tensor(rng.standard_normal((4, 3)).astype(np.float32))
    g = ms.Tensor(np.ones((4, 1), np.float32))
    backend("fused")
    with pytest.raises(RuntimeError, match="no compiler"):
        F.weight_norm(v, g, 0)
    backend("auto")
    with pytest.warns(RuntimeWarning, match="no compiler"):
        w = F.weight_norm(v, g, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only one warning per process
        np.testing.assert_allclose(F.weight_norm(v, g, 0).asnumpy(), w.asnumpy())


_NO_COMPILER_SCRIPT = """
import json, warnings
import numpy as np, mindspore as ms
from ms_weightnorm import functional as F
v = np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)
g = np.array([[10.0], [1.0]], np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    outs = [F.weight_norm(ms.Tensor(v), ms.Tensor(g), 0).asnumpy().tolist() for _ in range(3)]
print(json.dumps([F.fused_available(), [str(w.message) for w in caught if w.category is RuntimeWarning],
                  outs[0], outs[1:] == outs[:2]]))
"""


def test_a_fresh_process_without_a_compiler_warns_once_and_computes(tmp_path):
    """The real fallback, not a patched one: no C++ compiler on PATH, an empty kernel cache,
    the default backend. One warning that names the reason, then the composed path's values."""
    env = {k: val for k, val in os.environ.items() if k not in ("CXX", "MS_WEIGHTNORM_BACKEND")}
    env.update(PATH=str(tmp_path), MS_WEIGHTNORM_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", _NO_COMPILER_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    available, messages, w, repeatable = json.loads(proc.stdout.strip().splitlines()[-1])
    assert available is False and repeatable is True
    assert len(messages) == 1 and "composed" in messages[0] and "compiler" in messages[0], messages
    assert w == [[6.0, 8.0], [0.0, 1.0]]


def test_build_reports_missing_compiler(monkeypatch):
    monkeypatch.setattr(_fused, "_compiler", lambda: None)
    path, reason = _fused._locate_or_build()
    assert path is None and "compiler" in reason


def test_build_is_cached_by_source_hash(monkeypatch, tmp_path):
    monkeypatch.setenv("MS_WEIGHTNORM_CACHE_DIR", str(tmp_path))
    path, reason = _fused._locate_or_build()
    assert reason is None and path.parent == tmp_path
    assert path.name.startswith("weight_norm_kernel-") and path.suffix == ".so"
    stamp = path.stat().st_mtime_ns
    again, _ = _fused._locate_or_build()
    assert again == path and path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def test_other_devices_use_the_composed_path_silently(monkeypatch, backend, rng):
    monkeypatch.setattr(F, "_device_target", lambda: "GPU")
    monkeypatch.setitem(F._backend_state, "warned", False)
    args = ((4, 3), ms.float32, (4, 1), ms.float32, 0, 0.0)
    backend("auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # falling back on GPU/Ascend is expected: no warning
        assert F._fused_applies(*args) is False
    backend("fused")
    with pytest.raises(RuntimeError, match="CPU backend only"):
        F._fused_applies(*args)


# --------------------------------------------------------------------------- exact agreement

# MindSpore's own bfloat16 CPU ops round to nearest even in 2.10.0, but truncate in 2.7.0
# (measured: 59 of 259 elements of a (37, 7) weight one ulp off RNE). The composed path is made
# of those ops; the fused kernel rounds to nearest even under both.
MS_BF16_RNE = tuple(int(p) for p in ms.__version__.split(".")[:2]) >= (2, 10)

ULP_CASES = [((6, 5), 0), ((4, 3, 2, 5), 1), ((37, 7), 1), ((4, 3, 2, 5), None), ((512, 600), 0),
             ((2, 40000), 0)]
NP_TYPES = {"float16": np.float16, "bfloat16": "bfloat16", "float32": np.float32, "float64": np.float64}


def _slice_length(shape, dim):
    """How many elements each norm sums: all of them for dim=None, else all but dim's axis."""
    axis = F.canonical_dim(dim, len(shape))
    return int(np.prod(shape)) if axis is None else int(np.prod(shape)) // shape[axis]


def _forward_both(backend, mode, v, g, dim, eps):
    out = {}
    for name in ("fused", "composed"):
        backend(name)

        def forward(v_, g_):
            return F.weight_norm(v_, g_, dim, eps)
        w = in_mode(forward, mode)(v, g)
        assert w.dtype == v.dtype
        out[name] = (w.astype(ms.float32) if v.dtype == ms.bfloat16 else w).asnumpy()
    return out


@pytest.mark.parametrize("shape,dim", ULP_CASES)
@pytest.mark.parametrize("dtype", sorted(NP_TYPES))
def test_fused_and_composed_forwards_agree_to_the_ulp(mode, backend, rng, shape, dim, dtype):
    """Half types: both paths round the same float32 scale to the type and multiply once, so they
    agree bit for bit except where the two float32 norms (summed in different orders) straddle a
    rounding boundary of the scale: at most 1 ulp, on at most 1% of the elements.

    float32/float64: the norms themselves differ by the summation order (classical bound for a
    sum of n positive terms: relative (n - 1) u each, halved by the root), then each side rounds
    the scale and the product (1 ulp each): that bound, per element, nothing looser.
    """
    eps = 0.25
    v = ms.Tensor(rng.standard_normal(shape).astype(np.float32)).astype(getattr(ms, dtype))
    g = ms.Tensor((rng.random(F.g_shape(shape, dim)) + 0.5).astype(np.float32)).astype(getattr(ms, dtype))
    out = _forward_both(backend, mode, v, g, dim, eps)
    ulps = ulp_distance(out["fused"], out["composed"], NP_TYPES[dtype])
    if dtype in ("float16", "bfloat16"):
        assert ulps.max() <= 1, f"{dtype}: fused and composed differ by {ulps.max()} ulp"
        if dtype == "bfloat16" and not MS_BF16_RNE:
            return  # the composed side truncates (see MS_BF16_RNE): 1 ulp is all that holds
        assert (ulps > 0).mean() <= 0.01, f"{dtype}: {100 * (ulps > 0).mean():.2f}% of elements differ"
    else:
        n = _slice_length(shape, dim)
        u = np.finfo(NP_TYPES[dtype]).eps / 2
        w = np.abs(out["composed"]).astype(np.float64)
        spacing = np.spacing(np.abs(out["composed"])).astype(np.float64)
        bound = 2 * spacing + w * (n * u + 4 * u)
        diff = np.abs(out["fused"].astype(np.float64) - out["composed"].astype(np.float64))
        assert (diff <= bound).all(), f"{dtype}: worst excess {(diff / bound).max():.2f} x the bound"


def _exact_sum_inputs(rng, shape, dim, dtype):
    """v of small integers whose squares, and their sum + 0.25, are exact in every type and in
    every summation order: the sum stays below 2^21, where float32 still has a quarter's
    resolution. Such a norm is the same on both paths, so everything after it (the root, the
    division, the rounding of the scale to the weight's type, the product) must agree bit for
    bit."""
    top = min(15, int(np.sqrt(2.0 ** 21 / _slice_length(shape, dim))))
    v = ms.Tensor(rng.integers(-top, top + 1, shape).astype(np.float32)).astype(getattr(ms, dtype))
    g = ms.Tensor((rng.random(F.g_shape(shape, dim)) + 0.5).astype(np.float32)).astype(getattr(ms, dtype))
    return v, g


@pytest.mark.parametrize("shape,dim", ULP_CASES)
@pytest.mark.parametrize("dtype", sorted(NP_TYPES))
def test_fused_and_composed_forwards_agree_bit_for_bit(mode, backend, rng, shape, dim, dtype):
    """Both paths compute sqrt(sum v*v + eps) and g / norm with correctly rounded operations,
    round the scale to v's type once and multiply once; only the order of the sum of squares
    may differ. With a sum that is exact in any order, the weights are the same bits in every
    type (a truncating round, an rsqrt, a misplaced eps or a second rounding shows here as
    an ulp or more)."""
    v, g = _exact_sum_inputs(rng, shape, dim, dtype)
    out = _forward_both(backend, mode, v, g, dim, 0.25)
    ulps = ulp_distance(out["fused"], out["composed"], NP_TYPES[dtype])
    if dtype == "bfloat16" and not MS_BF16_RNE:
        assert ulps.max() <= 1  # the composed side truncates (see MS_BF16_RNE)
        return
    assert ulps.max() == 0, f"{dtype}: {int((ulps > 0).sum())} elements differ, by up to {ulps.max()} ulp"


def _bf16_reference(v32, g32, dim, eps):
    """Round-to-nearest-even bfloat16 weight from bfloat16 inputs (given as float32), in numpy.

    Both paths compute the scale g/||v|| in float32, round it to bfloat16 (RNE), multiply by v
    (exact in float32: 8-bit by 8-bit significands) and round the product (RNE). Returns the
    reference and a mask of the slices whose float64 scale is not within 2^-14 (relative) of a
    bfloat16 rounding midpoint, where a float32 norm in another summation order cannot change
    the rounded scale: there the result is fully determined.
    """
    axis = F.canonical_dim(dim, v32.ndim)
    axes = tuple(i for i in range(v32.ndim) if i != axis) if axis is not None else None
    v64 = v32.astype(np.float64)
    norm = np.sqrt((v64 * v64).sum(axis=axes, keepdims=axis is not None) + eps)
    s64 = g32.astype(np.float64) / norm
    s_bf = bf16_round_nearest_even(s64.astype(np.float32))
    # The rounding midpoint next to s: halfway between s_bf and its neighbour on s's side.
    step = np.abs(s_bf).view(np.int32).astype(np.int64)
    neighbour = np.where(np.abs(s64) >= np.abs(s_bf), step + 0x10000, step - 0x10000)
    mid = (np.abs(s_bf).astype(np.float64) + neighbour.astype(np.int32).view(np.float32)) / 2
    safe = np.abs(np.abs(s64) - mid) > np.abs(s64) * 2.0 ** -14
    w = bf16_round_nearest_even((v32 * s_bf).astype(np.float32))
    return w, np.broadcast_to(safe, v32.shape)


@pytest.mark.parametrize("shape,dim", [((37, 7), 1), ((512, 600), 0), ((4, 3, 2, 5), None), ((8, 7, 1, 4097), 1)])
@pytest.mark.parametrize("path", ["fused", "composed"])
def test_bfloat16_rounds_to_nearest_even(mode, backend, rng, shape, dim, path):
    """Exact bits against numpy's round-to-nearest-even, where the rounding is determined."""
    v32 = bf16_round_nearest_even(rng.standard_normal(shape).astype(np.float32) * 3.0)
    g32 = bf16_round_nearest_even((rng.random(F.g_shape(shape, dim)) + 0.5).astype(np.float32))
    ref, safe = _bf16_reference(v32, g32, dim, 0.0)
    assert safe.mean() > 0.9  # the check covers nearly every element
    backend(path)

    def forward(v_, g_):
        return F.weight_norm(v_, g_, dim)
    w = in_mode(forward, mode)(ms.Tensor(v32).astype(ms.bfloat16), ms.Tensor(g32).astype(ms.bfloat16))
    assert w.dtype == ms.bfloat16
    got = w.astype(ms.float32).asnumpy()
    if path == "composed" and not MS_BF16_RNE:
        # MindSpore's truncating bfloat16 ops (see MS_BF16_RNE): within 1 ulp of RNE, not exact.
        assert (ulp_distance(got, ref, "bfloat16")[safe] <= 1).all()
        return
    wrong = (got.view(np.uint32) != ref.view(np.uint32)) & safe
    assert not wrong.any(), (f"{wrong.sum()} of {safe.sum()} determined elements differ from RNE, e.g. "
                             f"{got[wrong][:4]} vs {ref[wrong][:4]}")


def _negated_fused(v, g, axis, eps):
    return -_ORIGINAL_FUSED(v, g, axis, eps)


_ORIGINAL_FUSED = F._fused_weight_norm


def test_set_backend_recompiles_a_compiled_network(monkeypatch, backend, rng):
    """After set_backend, a network that already ran in GRAPH_MODE takes the new path.

    The fused path is replaced by one that negates the weight, so which path ran shows in the
    output. With drop_compiled=False the cached (composed) graph keeps running: that is the
    behaviour set_backend's default must prevent.
    """
    x_np = rng.standard_normal((3, 5)).astype(np.float32)
    x = ms.Tensor(x_np)
    backend("composed")
    layer = wn.weight_norm(nn.Dense(5, 4))
    w_np = layer.weight.asnumpy().astype(np.float64)
    b_np = layer.bias.asnumpy().astype(np.float64)
    net = nn.SequentialCell([layer])
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        composed_out = net(x).asnumpy()
        np.testing.assert_allclose(composed_out, x_np @ w_np.T + b_np, rtol=1e-5, atol=1e-6)
        monkeypatch.setattr(F, "_fused_weight_norm", _negated_fused)
        F.set_backend("fused", drop_compiled=False)
        np.testing.assert_array_equal(net(x).asnumpy(), composed_out)  # the stale graph, as documented
        F.set_backend("fused")
        np.testing.assert_allclose(net(x).asnumpy(), x_np @ -w_np.T + b_np, rtol=1e-5, atol=1e-6)
        F.set_backend("composed")
        np.testing.assert_allclose(net(x).asnumpy(), composed_out, rtol=1e-6, atol=1e-7)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_cache_key_follows_the_kernel_source(monkeypatch, tmp_path):
    """A changed kernel source gets a build of its own; an unchanged one reuses its build.

    The compiler is stood in for by a copy of the real library (the key, not the compile, is
    under test), so every build is recorded.
    """
    real = _fused.library_path()
    assert real is not None
    builds = []

    def fake_build(cxx, flags, target):
        builds.append((_fused.SOURCE.read_bytes(), target.name))
        target.write_bytes(real.read_bytes())
        return None

    monkeypatch.setenv("MS_WEIGHTNORM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_fused, "_build", fake_build)
    original = _fused.SOURCE.read_bytes()
    first, reason = _fused._locate_or_build()
    assert reason is None and len(builds) == 1
    again, _ = _fused._locate_or_build()
    assert again == first and len(builds) == 1  # same source: the cached build

    changed = tmp_path / "weight_norm_kernel.cc"
    changed.write_bytes(original + b"\n// a changed kernel\n")
    monkeypatch.setattr(_fused, "SOURCE", changed)
    second, reason = _fused._locate_or_build()
    assert reason is None and len(builds) == 2, "a changed source reused a stale build"
    assert second != first and second.parent == first.parent
    assert builds[1][0] != builds[0][0]
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, second.name])
