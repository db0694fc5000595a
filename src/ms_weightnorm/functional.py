"""Pure tensor functions of weight normalization.

Everything here is a plain function of tensors: no Cell, no Parameter; the only state is
the backend choice below. The functions trace in GRAPH_MODE and under ``ms.jit`` and
differentiate (twice) like any other MindSpore composition, so the reparameterized weight
stays inside the traced computation and gradients reach ``g`` and ``v``.

The ``dim`` convention is PyTorch's: ``dim`` is the axis that is *kept*; the norm runs over
every other axis. ``dim=None`` and ``dim=-1`` both mean the norm of the whole tensor (a 0-d
result). Any other negative ``dim`` is an ordinary index from the end.

Two implementations of :func:`weight_norm` give the same numbers:

- ``"composed"``: a composition of MindSpore ops, differentiated by MindSpore. Runs on every
  backend.
- ``"fused"``: two C++ kernels (forward; backward from the closed-form gradients, which
  recomputes the norms in the same pass that reads ``v`` and the incoming gradient) run
  through ``ops.Custom(func_type="aot")`` on the CPU backend. The backward kernel has a
  bprop of its own written in MindSpore ops, so second-order gradients are exact. Half
  types are reduced in float32 inside the kernels, and bfloat16 gradients work on the CPU
  backend (the composed path's backward needs a bfloat16 ReduceSum that it lacks).

MindSpore 2.10's PyNative double backward through ``reshape`` is wrong, so the composed
path reshapes (for fast 2-D reductions) only inside compiled graphs; the fused path has no
reshape at all.

:func:`set_backend` or the environment variable ``MS_WEIGHTNORM_BACKEND`` chooses:
``"auto"`` (default: fused on the CPU backend when a C++ compiler is available, composed
elsewhere, with one warning if the kernel cannot be built), ``"composed"``, or ``"fused"``
(an error where the fused kernels are unavailable). The choice is read when a function is
traced, so it applies in GRAPH_MODE too; :func:`set_backend` drops compiled graphs so that
the next call re-traces with the new choice.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Optional, Tuple, Union

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn, ops

from ._compat import compiling, elementwise_type

__all__ = [
    "canonical_dim",
    "norm_except_dim",
    "weight_norm",
    "g_shape",
    "BACKENDS",
    "set_backend",
    "get_backend",
    "fused_available",
    "spectral_matrix",
    "l2_normalize",
    "power_iteration",
    "spectral_norm",
]

Dim = Optional[int]

_HALF_TYPES = (ms.float16, ms.bfloat16)


def canonical_dim(dim: Dim, ndim: int) -> Optional[int]:
    """Map a PyTorch-style ``dim`` to the kept axis in ``[0, ndim)``, or ``None`` for "whole tensor".

    ``None`` and ``-1`` mean the whole tensor (PyTorch's quirk); ``-2``, ``-3``... index from the end.

    >>> canonical_dim(0, 2), canonical_dim(-2, 4), canonical_dim(None, 3), canonical_dim(-1, 3)
    (0, 2, None, None)
    """
    if dim is None or (isinstance(dim, int) and not isinstance(dim, bool) and dim == -1):
        return None
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int or None, got {type(dim).__name__} {dim!r}")
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"dim={dim} is out of range for a {ndim}-d tensor: use an axis in [{-ndim}, {ndim - 1}], "
            f"or None/-1 for the norm of the whole tensor")
    return dim % ndim


def g_shape(shape: Tuple[int, ...], dim: Dim) -> Tuple[int, ...]:
    """Shape of the magnitude ``g`` for a weight of ``shape``: 1 on every reduced axis.

    >>> g_shape((40, 20), 0), g_shape((8, 4, 1, 3), 3), g_shape((4, 5), None)
    ((40, 1), (1, 1, 1, 3), ())
    """
    axis = canonical_dim(dim, len(shape))
    if axis is None:
        return ()
    return tuple(n if i == axis else 1 for i, n in enumerate(shape))


# ``_traced(0)``: True while MindSpore compiles a graph (GRAPH_MODE, ``ms.jit``), False in
# PyNative execution.
_traced = compiling


def _reduce_sum_keep(x: Tensor, axis: Optional[int]) -> Tensor:
    """Sum over every axis except ``axis`` (all axes when None), keeping rank (0-d when None).

    In compiled graphs, reductions over one contiguous block of axes are done on a 2-D view:
    on the CPU backend a single-axis reduction of a 2-D array is 10-20x faster than a
    multi-axis one. PyNative execution reduces without reshaping, because MindSpore 2.10's
    PyNative double backward through a reshape is wrong (second-order gradients were off by
    order 1 with any reshape in the chain).
    """
    shape = x.shape
    ndim = len(shape)
    if not _traced(0):
        if axis is None:
            return x.sum(tuple(range(ndim)))
        reduce_axes = tuple(i for i in range(ndim) if i != axis)
        return x.sum(reduce_axes, keepdims=True) if reduce_axes else x
    if axis is None:
        return x.reshape(-1).sum()
    out_shape = tuple(n if i == axis else 1 for i, n in enumerate(shape))
    if ndim == 1:
        return x
    if axis == 0:
        return x.reshape(shape[0], -1).sum(1).reshape(out_shape)
    if axis == ndim - 1:
        return x.reshape(-1, shape[-1]).sum(0).reshape(out_shape)
    # Middle axis: (before, kept, after) view, reduce the outer two.
    before = math.prod(shape[:axis])
    after = math.prod(shape[axis + 1:])
    return x.reshape(before, shape[axis], after).sum((0, 2)).reshape(out_shape)


def _reduce_max_keep(x: Tensor, axis: Optional[int]) -> Tensor:
    shape = x.shape
    if axis is None:
        return x.reshape(-1).max()
    reduce_axes = tuple(i for i in range(len(shape)) if i != axis)
    if not reduce_axes:
        return x
    return x.max(axis=reduce_axes, keepdims=True)


def _to_float32(x: Tensor) -> Tensor:
    # Half-precision sums of squares overflow and lose digits fast: accumulate in float32.
    return x.astype(ms.float32) if x.dtype in _HALF_TYPES else x


def norm_except_dim(v: Tensor, pow: Union[int, float] = 2, dim: Dim = 0, eps: float = 0.0) -> Tensor:
    """The ``pow``-norm of ``v`` over every axis except ``dim``, shaped like ``g``.

    Matches ``torch._weight_norm``'s ``norm_except_dim``: the result keeps ``v``'s rank with 1
    on the reduced axes, or is 0-d when ``dim`` is ``None``/``-1``. ``eps`` is added under
    the root (``(sum |v|^p + eps)^(1/p)``) so an all-zero slice has a finite norm and gradient.
    Half-precision inputs are reduced in float32 and the result is float32.

    >>> import numpy as np, mindspore as ms
    >>> v = ms.Tensor(np.array([[3.0, 4.0], [6.0, 8.0]], np.float32))
    >>> norm_except_dim(v, 2, 0).asnumpy().tolist()
    [[5.0], [10.0]]
    >>> norm_except_dim(v, 2, None).shape
    ()
    """
    axis = canonical_dim(dim, v.ndim)
    x = _to_float32(v)
    if pow == 2:
        return ops.sqrt(_reduce_sum_keep(x * x, axis) + eps) if eps else ops.sqrt(_reduce_sum_keep(x * x, axis))
    if pow == math.inf:
        return _reduce_max_keep(ops.abs(x), axis)
    if pow == 1:
        return _reduce_sum_keep(ops.abs(x), axis) + eps
    if not pow > 0:
        raise ValueError(f"pow must be positive, got {pow!r}")
    return ops.pow(_reduce_sum_keep(ops.pow(ops.abs(x), pow), axis) + eps, 1.0 / pow)


def weight_norm(v: Tensor, g: Tensor, dim: Dim = 0, eps: float = 0.0) -> Tensor:
    """The reparameterized weight ``w = g * v / ||v||``, norm over every axis except ``dim``.

    Differentiable in ``g`` and ``v`` (first and second order) in PyNative, GRAPH_MODE and
    under ``ms.jit``. ``eps=0`` matches PyTorch exactly (an all-zero slice gives NaN);
    ``eps>0`` uses ``sqrt(sum(v*v) + eps)``. The result has ``v``'s dtype; for float16 and
    bfloat16 the norm and the scale are computed in float32.

    When ``g`` has the shape ``g_shape(v.shape, dim)`` (the usual case), the fused CPU kernels
    compute it where :func:`set_backend` allows them, and otherwise MindSpore ops with a
    closed-form backward (see :class:`_ComposedForward`); a ``g`` that only broadcasts
    against the norm is differentiated by MindSpore's autodiff of the plain composition.

    >>> import numpy as np, mindspore as ms
    >>> v = ms.Tensor(np.array([[3.0, 4.0], [0.0, 2.0]], np.float32))
    >>> g = ms.Tensor(np.array([[10.0], [1.0]], np.float32))
    >>> weight_norm(v, g, dim=0).asnumpy().tolist()
    [[6.0, 8.0], [0.0, 1.0]]
    """
    axis = canonical_dim(dim, v.ndim)
    if _fused_applies(v.shape, v.dtype, g.shape, g.dtype, axis, eps):
        return _fused_weight_norm(v, g, axis, eps)
    if _closed_form_applies(v.shape, v.dtype, g.shape, g.dtype, axis, eps):
        return _COMPOSED_CELLS[_composed_key(axis, eps)][0](v, g)[0]
    return _composed_weight_norm(v, g, axis, eps)


def _composed_weight_norm(v: Tensor, g: Tensor, axis: Optional[int], eps: float) -> Tensor:
    if axis is None and not _traced(0):
        # PyNative double backward is also wrong through a 0-d norm broadcast against v;
        # a norm of shape (1, ..., 1) gives the same values and correct second order.
        x = _to_float32(v)
        total = (x * x).sum(tuple(range(v.ndim)), keepdims=True)
        norm = ops.sqrt(total + eps) if eps else ops.sqrt(total)
    else:
        norm = norm_except_dim(v, 2, axis, eps)
    scale = _to_float32(g) / norm
    work = elementwise_type(v.dtype)
    if work != v.dtype:
        # This backend has no multiply kernel for v's type (see _compat): multiply in float32.
        return (v.astype(work) * scale.astype(work)).astype(v.dtype)
    if scale.dtype != v.dtype:
        scale = scale.astype(v.dtype)
    return v * scale


# ---------------------------------------------------------------------------------------
# Composed path with a closed-form backward
# ---------------------------------------------------------------------------------------
#
# MindSpore's autodiff of ``v * (g / ||v||)`` costs 19 kernels per weight on the CPU backend
# (counted in the compiled graph; benchmarks/bench_weight_norm.py prints the counts): the
# gradient of every broadcast is a reduction back to the broadcast's source, the gradient of
# the norm goes through SqrtGrad, a Tile and a second broadcast multiply, and the 4-d
# broadcast of the scale is reduced over two axes at once, the slow kind of reduction here.
# The cells below give the same function a custom bprop with the closed-form gradient
# (the fused backward kernel's math), save ||v|| and g/||v|| from the forward pass, and
# work on one 2-D (or 3-D, for a middle axis) view of v so that every reduction is a single
# reduce whose result broadcasts back without a reshape. Only standard MindSpore ops: it
# runs unchanged on GPU and Ascend.
#
# Second order: the backward is a cell too, whose bprop is the same closed-form vector-
# Jacobian product that the fused backward kernel's bprop uses (_backward_vjp).
#
# Reshapes act on compute-type (float32/64) tensors: the CPU backend has no bfloat16 Reshape.
#
# MindSpore 2.10 fails to compile ("The func graph is empty") a function containing an `if`
# or a conditional expression when it is reached from a cell's bprop in a second-order
# gradient and from elsewhere in the same graph; default arguments fail the same way. So
# everything below runs branch-free code on static plans computed by constexprs, in both
# modes. PyNative's wrong double backward through a reshape does not apply: these reshapes
# are never differentiated by MindSpore (the cells' bprops replace their gradients).


@ops.constexpr
def _view_plan(shape, axis):
    """``(view, axes, red, multiples)`` for a weight of ``shape``: the view whose ``axes`` are
    summed for the norm, the shape ``red`` of that sum with ``keepdims`` (where ``g`` is
    reshaped to), and the multiples that tile ``red`` back to ``view``."""
    ndim = len(shape)
    size = math.prod(shape)
    if axis is None:
        return (size,), (0,), (1,), (size,)
    if ndim == 1:
        return (size, 1), (1,), (size, 1), (1, 1)  # nothing to reduce: a size-1 axis
    if axis == 0:
        return (shape[0], size // shape[0]), (1,), (shape[0], 1), (1, size // shape[0])
    if axis == ndim - 1:
        return (size // shape[-1], shape[-1]), (0,), (1, shape[-1]), (size // shape[-1], 1)
    # Middle axis: (before, kept, after) view, reduce the outer two.
    before, kept, after = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    return (before, kept, after), (0, 2), (1, kept, 1), (before, 1, after)


@ops.constexpr
def _compute_type(dtype):
    """float64 computes in float64, every other type in float32."""
    return ms.float64 if dtype == ms.float64 else ms.float32


# The per-slice scale (compute type, reduced view shape) laid out for an elementwise product
# with a weight-shaped tensor: `scale_fn(scale, multiples, shape, keep)`. The forward saves the
# laid-out scale for the backward, which then multiplies by it directly.

def _scale_broadcast(scale: Tensor, multiples, shape, keep) -> Tensor:
    return scale.reshape(keep)


# The primitive, not ops.tile: functional wrappers branch inside (see the note above).
_tile = ops.Tile()


def _scale_tiled(scale: Tensor, multiples, shape, keep) -> Tensor:
    # The CPU backend's broadcasting Mul takes 3x as long as a Mul of equal shapes, while
    # tiling the scale over the 2-D (or 3-D) view is a fast copy (a Tile to 4-D is not).
    # Tiled in the compute type: the CPU Tile has no bfloat16 kernel.
    return _tile(scale, multiples).reshape(shape)


def _times(x: Tensor, factor: Tensor) -> Tensor:
    """``x * factor`` in x's dtype. The casts are no-ops except for half-precision weights
    (whose scale is in float32) and for types the backend has no Mul kernel for
    (elementwise_type, see _compat)."""
    work = elementwise_type(x.dtype)
    return (x.astype(work) * factor.astype(work)).astype(x.dtype)


# Like _fused_applies, a constexpr that creates what the traced code then reads.
@ops.constexpr(reuse_result=False)
def _closed_form_applies(shape, v_dtype, g_shape_, g_dtype, axis, eps) -> bool:
    """Whether the closed-form composed cells compute this weight; creates them when they do."""
    if v_dtype not in _FUSED_TYPES or g_dtype not in _FUSED_TYPES:
        return False
    if len(shape) == 0 or any(n is None or n <= 0 for n in shape):
        return False  # scalars, empty and dynamic shapes: no static view
    if tuple(g_shape_) != g_shape(tuple(shape), axis):
        return False  # a broadcast g: the plain composition's broadcasting semantics
    _composed_cells(axis, eps)
    return True


@ops.constexpr
def _composed_key(axis, eps):
    return _axis_key(axis), eps, _device_target()


class _ComposedBackward(nn.Cell):
    """``(v, g, dw, norm, factor) -> (dv, dg)`` in MindSpore ops, from the forward's saved
    ``norm = ||v||`` (compute type, reduced view shape) and ``factor``, the scale
    ``g/||v||`` laid out by ``scale_fn`` for a product with ``v``.

    Per slice, with d = sum(dw*v): dg = d/||v|| and dv = (g/||v||) * (dw - (dg/||v||) * v),
    the form with the fewest kernels: the saved factor is reused, and only dg/||v|| is laid
    out anew. Its bprop is :func:`_backward_vjp`, which treats ``norm`` and ``factor`` as the
    functions of ``v`` and ``g`` they are (so they themselves get zero).
    """

    def __init__(self, axis: Optional[int], eps: float, scale_fn):
        super().__init__()
        self.axis = axis
        self.eps = eps
        self.scale_fn = scale_fn

    def construct(self, v, g, dw, norm, factor):
        view, axes, _, multiples = _view_plan(v.shape, self.axis)
        ct = _compute_type(v.dtype)
        vf = v.astype(ct)
        dwf = dw.astype(ct)
        dg = (dwf.reshape(view) * vf.reshape(view)).sum(axes, keepdims=True) / norm
        dv = (dwf - self.scale_fn(dg / norm, multiples, v.shape, g.shape) * vf) * factor
        return dv.astype(v.dtype), dg.reshape(g.shape).astype(g.dtype)

    def bprop(self, v, g, dw, norm, factor, out, dout):
        grad_v, grad_g, grad_dw = _backward_vjp(v, g, dw, dout, self.axis, self.eps)
        return grad_v, grad_g, grad_dw, ops.zeros_like(norm), ops.zeros_like(factor)


class _ComposedForward(nn.Cell):
    """``(v, g) -> (w, norm, factor)``. ``norm`` and ``factor`` are kept for the bprop and
    used nowhere else, so their incoming gradients are zero and the bprop ignores them. On
    the CPU backend ``factor`` is weight-sized (the tiled scale, float32 for half types) and
    stays alive until the backward, which multiplies by it directly."""

    def __init__(self, axis: Optional[int], eps: float, scale_fn, backward: _ComposedBackward):
        super().__init__()
        self.axis = axis
        self.eps = eps
        self.scale_fn = scale_fn
        self.backward = backward

    def construct(self, v, g):
        view, axes, red, multiples = _view_plan(v.shape, self.axis)
        ct = _compute_type(v.dtype)
        v2 = v.astype(ct).reshape(view)
        # sqrt then divide, not rsqrt then multiply: both are correctly rounded IEEE operations,
        # the fused kernel's own, so the two paths differ only by the order of the sum of squares.
        norm = ops.sqrt((v2 * v2).sum(axes, keepdims=True) + self.eps)
        factor = self.scale_fn(g.astype(ct).reshape(red) / norm, multiples, v.shape, g.shape)
        return _times(v, factor), norm, factor

    def bprop(self, v, g, out, dout):
        return self.backward(v, g, dout[0], out[1], out[2])


_COMPOSED_CELLS: dict = {}


def _composed_cells(axis: Optional[int], eps: float):
    """The (forward, backward) cells for one kept axis and eps on this device, created on first use."""
    key = _composed_key(axis, eps)
    device = key[2]
    if key not in _COMPOSED_CELLS:
        # A whole-tensor scale is a scalar: every backend's Mul has a fast path for it.
        scale_fn = _scale_tiled if device == "CPU" and axis is not None else _scale_broadcast
        backward = _ComposedBackward(axis, eps, scale_fn)
        _COMPOSED_CELLS[key] = (_ComposedForward(axis, eps, scale_fn, backward), backward)
    return _COMPOSED_CELLS[key]


# ---------------------------------------------------------------------------------------
# Backend choice
# ---------------------------------------------------------------------------------------

BACKENDS = ("auto", "composed", "fused")
_ENV_VAR = "MS_WEIGHTNORM_BACKEND"
_FUSED_TYPES = (ms.float16, ms.bfloat16, ms.float32, ms.float64)
_backend_state = {"name": None, "warned": False}


def _check_backend(name: str, origin: str) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"{origin}: backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name.strip().lower()


def set_backend(name: str, drop_compiled: bool = True) -> None:
    """Choose how :func:`weight_norm` computes: ``"auto"``, ``"composed"`` or ``"fused"``.

    Overrides the environment variable ``MS_WEIGHTNORM_BACKEND``. ``"auto"`` uses the fused
    CPU kernels on the CPU backend when they can be built and the composed ops elsewhere;
    ``"fused"`` raises where the kernels are unavailable (another backend, no compiler);
    ``"composed"`` never uses them. Compiled graphs are dropped, so the next call re-traces;
    with ``drop_compiled=False`` graphs compiled before keep the backend they were traced with
    (to compare both backends in one process).

    >>> previous = get_backend()
    >>> set_backend("composed"); get_backend()
    'composed'
    >>> set_backend(previous)
    """
    name = _check_backend(name, "set_backend")
    _backend_state["name"] = name
    if drop_compiled:
        from .parametrize import invalidate_compiled_graphs
        invalidate_compiled_graphs()


def get_backend() -> str:
    """The backend setting: :func:`set_backend`'s, else ``$MS_WEIGHTNORM_BACKEND``, else ``"auto"``.

    >>> get_backend() in BACKENDS
    True
    """
    if _backend_state["name"] is not None:
        return _backend_state["name"]
    return _check_backend(os.environ.get(_ENV_VAR, "auto") or "auto", f"${_ENV_VAR}")


def fused_available() -> bool:
    """Whether the fused kernels can run here: CPU backend and a kernel library that builds.

    The first call may compile the kernel (a few seconds, once per machine: it is cached).

    >>> isinstance(fused_available(), bool)
    True
    """
    return _fused_unavailable_reason() is None


def _device_target() -> str:
    try:
        return str(ms.get_context("device_target"))
    except Exception:  # pragma: no cover - context API moved
        return "unknown"


def _fused_unavailable_reason() -> Optional[str]:
    device = _device_target()
    if device != "CPU":
        return f"the fused kernels run on the CPU backend only (device_target is {device})"
    from . import _fused
    reason = _fused.unavailable_reason()
    if reason is not None:
        return reason
    if "probe" not in _FUSED_OPS:
        try:
            _fused.make_kernels(None, None)
            _FUSED_OPS["probe"] = None
        except Exception as err:  # e.g. MS_CUSTOM_AOT_WHITE_LIST excludes the cache directory
            _FUSED_OPS["probe"] = f"ops.Custom rejected the kernel: {err}"
    return _FUSED_OPS["probe"]


# A constexpr runs as Python while a graph is compiled (GRAPH_MODE would otherwise parse the
# function into the graph, which it cannot do with imports, subprocesses and warnings).
@ops.constexpr(reuse_result=False)
def _fused_applies(shape, v_dtype, g_shape_, g_dtype, axis, eps) -> bool:
    """Whether the fused kernels compute this weight; creates its primitives when they do."""
    backend = get_backend()
    if backend == "composed":
        return False
    if v_dtype not in _FUSED_TYPES or g_dtype not in _FUSED_TYPES:
        return False
    if len(shape) == 0 or any(n is None or n <= 0 for n in shape):
        return False  # scalars, empty and dynamic shapes: nothing to gain, or no static view
    if tuple(g_shape_) != g_shape(tuple(shape), axis):
        return False  # a broadcast g keeps the composed path's broadcasting semantics
    reason = _fused_unavailable_reason()
    if reason is None:
        _fused_kernels(axis, eps)
        return True
    if backend == "fused":
        raise RuntimeError(f"ms_weightnorm backend 'fused' was requested, but {reason}")
    if not _backend_state["warned"] and _device_target() == "CPU":
        _backend_state["warned"] = True
        warnings.warn(f"ms_weightnorm: using the composed weight-norm path, the fused CPU kernel is "
                      f"unavailable: {reason}", RuntimeWarning, stacklevel=3)
    return False


# ---------------------------------------------------------------------------------------
# Fused path
# ---------------------------------------------------------------------------------------

def _fused_weight_norm(v: Tensor, g: Tensor, axis: Optional[int], eps: float) -> Tensor:
    forward = _FUSED_OPS[(_axis_key(axis), eps)][0]
    return forward(v, g, _meta(eps, axis))


def _axis_key(axis: Optional[int]) -> int:
    return -1 if axis is None else axis


def _meta(eps: float, axis: Optional[int]) -> Tensor:
    # int64 [bits of eps as a float64, axis]: exact, and an integer tensor is left alone by
    # mixed precision (amp casts every floating input of a float16 cell's ops to float16,
    # which would turn eps=1e-12 into 0).
    eps_bits = int(np.array([eps], np.float64).view(np.int64)[0])
    return Tensor(np.array([eps_bits, _axis_key(axis)], np.int64))


# Custom primitives per (kept axis, eps): their bprops need both as Python values. Created
# by _fused_applies while tracing, before the traced code reads them.
_FUSED_OPS: dict = {}


def _fused_kernels(axis: Optional[int], eps: float):
    key = (_axis_key(axis), eps)
    if key not in _FUSED_OPS:
        from . import _fused
        _FUSED_OPS[key] = _fused.make_kernels(*_make_bprops(axis, eps))
    return _FUSED_OPS[key]


def _make_bprops(axis: Optional[int], eps: float):
    key = (_axis_key(axis), eps)

    def bprop_forward(v, g, meta, out, dout):
        dv, dg = _FUSED_OPS[key][1](v, g, dout, meta)
        return dv, dg, ops.zeros_like(meta)

    def bprop_backward(v, g, dw, meta, out, dout):
        grad_v, grad_g, grad_dw = _backward_vjp(v, g, dw, dout, axis, eps)
        return grad_v, grad_g, grad_dw, ops.zeros_like(meta)

    return bprop_forward, bprop_backward


def _backward_vjp(v, g, dw, dout, axis, eps):
    """Gradient of the weight-norm backward ``(v, g, dw) -> (dv, dg)``, in MindSpore ops: the
    bprop of the fused backward kernel and of the composed backward cell alike, so second-
    order gradients are exact on both paths. Branch-free, on the same view as the cells.

    Per slice, with n = sqrt(sum v^2 + eps), s = g/n, d = sum dw*v, c = d/n^2, the backward
    computes dv = s*dw - s*c*v and dg = d/n. For incoming (a, b) and A = sum a*dw,
    B = sum a*v:
      grad g  = (A - c*B) / n
      grad dw = s*a + (b/n - s*B/n^2) * v
      grad v  = -s*c*a + (b/n - s*B/n^2) * dw + ((3*s*c*B - s*A)/n^2 - b*c/n) * v
    """
    a, b = dout
    view, axes, red, _ = _view_plan(v.shape, axis)
    ct = _compute_type(v.dtype)
    vf = v.astype(ct).reshape(view)
    dwf = dw.astype(ct).reshape(view)
    af = a.astype(ct).reshape(view)
    gf = g.astype(ct).reshape(red)
    bf = b.astype(ct).reshape(red)
    n2 = (vf * vf).sum(axes, keepdims=True) + eps
    n = ops.sqrt(n2)
    s = gf / n
    c = (dwf * vf).sum(axes, keepdims=True) / n2
    big_a = (af * dwf).sum(axes, keepdims=True)
    big_b = (af * vf).sum(axes, keepdims=True)
    grad_g = ((big_a - c * big_b) / n).reshape(g.shape).astype(g.dtype)
    coef = bf / n - s * big_b / n2
    grad_dw = (s * af + coef * vf).reshape(dw.shape).astype(dw.dtype)
    grad_v = -s * c * af + coef * dwf + ((3.0 * s * c * big_b - s * big_a) / n2 - bf * c / n) * vf
    return grad_v.reshape(v.shape).astype(v.dtype), grad_g, grad_dw


# ---------------------------------------------------------------------------------------
# Spectral norm (Miyato et al., 2018): pure functions; the state update is the caller's
# ---------------------------------------------------------------------------------------

def spectral_matrix(w: Tensor, dim: int = 0) -> Tensor:
    """``w`` viewed as a matrix: axis ``dim`` first, every other axis flattened, in order.

    >>> import numpy as np, mindspore as ms
    >>> w = ms.Tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 1, 4))
    >>> spectral_matrix(w, 0).shape, spectral_matrix(w, 1).shape
    ((2, 12), (3, 8))
    """
    ndim = w.ndim
    if dim != 0:
        w = ops.transpose(w, (dim,) + tuple(i for i in range(ndim) if i != dim))
    return w.reshape(w.shape[0], -1)


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``x / max(||x||, eps)`` for a vector ``x`` (the semantics of PyTorch's ``F.normalize``).

    >>> import numpy as np, mindspore as ms
    >>> l2_normalize(ms.Tensor(np.array([3.0, 4.0], np.float32))).asnumpy().tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    return x / ops.maximum(ops.sqrt((x * x).sum()), ops.scalar_to_tensor(eps, x.dtype))


def _mv(mat: Tensor, x: Tensor) -> Tensor:
    return ops.matmul(mat, x.reshape(-1, 1)).reshape(-1)


def _mtv(mat: Tensor, x: Tensor) -> Tensor:
    return ops.matmul(x.reshape(1, -1), mat).reshape(-1)


def power_iteration(mat: Tensor, u: Tensor, v: Tensor, n_iterations: int, eps: float = 1e-12,
                    u_first: bool = True) -> Tuple[Tensor, Tensor]:
    """``n_iterations`` steps of the power method for the top singular vectors of ``mat``.

    ``u_first=True`` (PyTorch's ``nn.utils.parametrizations.spectral_norm``) updates
    ``u = normalize(mat v)`` then ``v = normalize(mat^T u)``; ``u_first=False`` (the older
    ``nn.utils.spectral_norm``) updates ``v`` from ``u`` first. No gradient flows through the
    result (the inputs are wrapped in ``stop_gradient``).

    >>> import numpy as np, mindspore as ms
    >>> mat = ms.Tensor(np.diag([3.0, 1.0]).astype(np.float32))
    >>> ones = ms.Tensor(np.ones(2, np.float32))
    >>> u, v = power_iteration(mat, ones, ones, 30)
    >>> np.round(u.asnumpy(), 4).tolist(), np.round(v.asnumpy(), 4).tolist()
    ([1.0, 0.0], [1.0, 0.0])
    """
    mat = ops.stop_gradient(mat)
    u = ops.stop_gradient(u)
    v = ops.stop_gradient(v)
    for _ in range(n_iterations):
        if u_first:
            u = l2_normalize(_mv(mat, v), eps)
            v = l2_normalize(_mtv(mat, u), eps)
        else:
            v = l2_normalize(_mtv(mat, u), eps)
            u = l2_normalize(_mv(mat, v), eps)
    return u, v


def spectral_norm(w: Tensor, u: Tensor, v: Tensor, dim: int = 0, n_power_iterations: int = 0,
                  eps: float = 1e-12, u_first: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """``(w / sigma, u', v')``: ``n_power_iterations`` power steps from ``(u, v)``, then
    ``sigma = u' . (W v')`` with ``W`` the matrix view of ``w`` (:func:`spectral_matrix`).

    Differentiable in ``w`` (through ``sigma`` as well); ``u'`` and ``v'`` carry no gradient.
    With ``n_power_iterations=0`` (eval mode) ``u' = u`` and ``v' = v``. Half-precision
    inputs are computed in float32; the results have the input dtypes.

    >>> import numpy as np, mindspore as ms
    >>> w = ms.Tensor(np.diag([4.0, 2.0]).astype(np.float32))
    >>> e1 = ms.Tensor(np.array([1.0, 0.0], np.float32))
    >>> w_sn, u, v = spectral_norm(w, e1, e1, 0, 1)
    >>> w_sn.asnumpy().tolist()
    [[1.0, 0.0], [0.0, 0.5]]
    """
    wf, uf, vf = _to_float32(w), _to_float32(u), _to_float32(v)
    mat = spectral_matrix(wf, dim)
    if n_power_iterations:
        uf, vf = power_iteration(mat, uf, vf, n_power_iterations, eps, u_first)
    else:
        uf, vf = ops.stop_gradient(uf), ops.stop_gradient(vf)
    sigma = (uf * _mv(mat, vf)).sum()
    out = wf / sigma
    return out.astype(w.dtype), uf.astype(u.dtype), vf.astype(v.dtype)
