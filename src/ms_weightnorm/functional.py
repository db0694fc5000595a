"""Pure tensor functions of weight normalization.

Everything here is a plain function of tensors: no Cell, no Parameter, no state. The
functions trace in GRAPH_MODE and under ``ms.jit`` and differentiate (twice) like any
other MindSpore composition, so the reparameterized weight stays inside the traced
computation and gradients reach ``g`` and ``v``.

The ``dim`` convention is PyTorch's: ``dim`` is the axis that is *kept*; the norm runs over
every other axis. ``dim=None`` and ``dim=-1`` both mean the norm of the whole tensor (a 0-d
result). Any other negative ``dim`` is an ordinary index from the end.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import mindspore as ms
from mindspore import Tensor, ops

__all__ = ["canonical_dim", "norm_except_dim", "weight_norm", "g_shape"]

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


def _reduce_sum_keep(x: Tensor, axis: Optional[int]) -> Tensor:
    """Sum over every axis except ``axis`` (all axes when None), keeping rank (0-d when None).

    Reductions over one contiguous block of axes are done on a 2-D view: on the CPU backend a
    single-axis reduction of a 2-D array is much faster than a multi-axis one.
    """
    shape = x.shape
    ndim = len(shape)
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

    >>> import numpy as np, mindspore as ms
    >>> v = ms.Tensor(np.array([[3.0, 4.0], [0.0, 2.0]], np.float32))
    >>> g = ms.Tensor(np.array([[10.0], [1.0]], np.float32))
    >>> weight_norm(v, g, dim=0).asnumpy().tolist()
    [[6.0, 8.0], [0.0, 1.0]]
    """
    scale = _to_float32(g) / norm_except_dim(v, 2, dim, eps)
    if scale.dtype != v.dtype:
        scale = scale.astype(v.dtype)
    return v * scale
