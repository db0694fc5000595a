"""Numpy references and small utilities shared by the tests."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn


def kept_axis(dim, ndim) -> Optional[int]:
    """PyTorch's dim convention, independently of the library: None/-1 = whole tensor."""
    if dim is None or dim == -1:
        return None
    return dim % ndim


def np_norm_except_dim(v: np.ndarray, dim, p: float = 2.0, eps: float = 0.0) -> np.ndarray:
    axis = kept_axis(dim, v.ndim)
    axes = tuple(range(v.ndim)) if axis is None else tuple(i for i in range(v.ndim) if i != axis)
    a = np.abs(v.astype(np.float64))
    if p == np.inf:
        out = a.max(axis=axes, keepdims=axis is not None)
    else:
        out = ((a ** p).sum(axis=axes, keepdims=axis is not None) + eps) ** (1.0 / p)
    return np.asarray(out)


def np_weight_norm(v: np.ndarray, g: np.ndarray, dim, eps: float = 0.0) -> np.ndarray:
    return g.astype(np.float64) * v.astype(np.float64) / np_norm_except_dim(v, dim, 2.0, eps)


def np_weight_norm_grads(v, g, grad_w, dim, eps: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """The closed-form gradients of w = g v / ||v|| (Salimans & Kingma 2016, eq. 3)."""
    v = v.astype(np.float64)
    g = g.astype(np.float64)
    grad_w = grad_w.astype(np.float64)
    n = np_norm_except_dim(v, dim, 2.0, eps)
    axis = kept_axis(dim, v.ndim)
    axes = tuple(range(v.ndim)) if axis is None else tuple(i for i in range(v.ndim) if i != axis)
    grad_g = (grad_w * v).sum(axis=axes, keepdims=axis is not None) / n
    grad_v = g / n * grad_w - g * grad_g / n ** 2 * v
    return grad_g, grad_v


class SumSquares(nn.Cell):
    """Wraps a layer into a scalar loss: sum of squares of its (first) output."""

    def __init__(self, layer: nn.Cell):
        super().__init__()
        self.layer = layer

    def construct(self, x):
        y = self.layer(x)
        if isinstance(y, tuple):
            y = y[0]
        return (y * y).sum()


def grads(net: nn.Cell, x, params: Sequence[ms.Parameter]):
    """Loss and gradients of ``net(x)`` with respect to ``params``, as numpy arrays."""
    loss, gs = ms.value_and_grad(net, None, list(params))(x)
    return float(loss.asnumpy()), [g.asnumpy() for g in gs]


def param_names(cell: nn.Cell):
    return [name for name, _ in cell.parameters_and_names()]
