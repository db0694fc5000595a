"""Numpy references and small utilities shared by the tests."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn
from mindspore.ops.primitive import PrimitiveWithInfer


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


# --------------------------------------------------------------------------- really compiled


class TraceProbe(PrimitiveWithInfer):
    """A constant primitive whose inference runs only while MindSpore compiles a graph.

    ``probe(0)`` is True inside a compiled graph and False when executed eagerly; ``traces``
    counts the compilations that met it. That is how a test proves a "graph" check compiled:
    a bare function call under GRAPH_MODE runs eagerly.
    """

    def __init__(self):
        super().__init__("test_trace_probe")
        self.set_const_prim(True)
        self.add_prim_attr("constexpr_prim", True)
        self.traces = 0

    def __infer__(self, *args):
        self.traces += 1
        return {"dtype": None, "shape": None, "value": True}

    def __call__(self, *args):
        return False


def in_mode(fn, mode: str):
    """``fn`` compiled with ``ms.jit`` in graph mode (asserting that it really compiled), else eager.

    The returned callable gives ``fn``'s result. In graph mode it checks, on every call, that
    the result came out of a compiled graph.
    """
    probe = TraceProbe()

    def flagged(*args):
        out = fn(*args)
        if probe(0):
            return out, 1
        return out, 0

    if mode == "graph":
        compiled = ms.jit(flagged)

        def call(*args):
            out, flag = compiled(*args)
            assert flag == 1 and probe.traces >= 1, "the graph-mode check did not compile"
            return out
        return call

    def call_eager(*args):
        out, flag = flagged(*args)
        assert flag == 0 and probe.traces == 0
        return out
    return call_eager


# --------------------------------------------------------------------------- bits and ulps


def bf16_round_nearest_even(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest, ties to even), returned as float32, in numpy."""
    x = np.asarray(x, np.float32)
    u = np.atleast_1d(x).view(np.uint32).astype(np.uint64)
    one, sixteen = np.uint64(1), np.uint64(16)
    rounded = ((u + np.uint64(0x7FFF) + ((u >> sixteen) & one)) >> sixteen) << sixteen
    return rounded.astype(np.uint32).view(np.float32).reshape(x.shape)


def ulp_distance(a: np.ndarray, b: np.ndarray, dtype) -> np.ndarray:
    """Elementwise distance in units in the last place of ``dtype`` (float16/bfloat16/32/64).

    Values are mapped to integers that are consecutive for consecutive floats of ``dtype``.
    """
    if dtype == "bfloat16":
        bits = [np.asarray(x, np.float32).view(np.int32).astype(np.int64) >> 16 for x in (a, b)]
    else:
        itype = {np.float16: np.int16, np.float32: np.int32, np.float64: np.int64}[dtype]
        bits = [np.asarray(x, dtype).view(itype).astype(np.int64) for x in (a, b)]
    width = 16 if dtype in ("bfloat16", np.float16) else (32 if dtype == np.float32 else 64)
    sign = np.int64(1) << (width - 1) if width < 64 else None

    def ordered(i):
        if sign is None:
            return np.where(i < 0, np.iinfo(np.int64).min - i, i)
        i = i & ((np.int64(1) << width) - 1)
        return np.where(i & sign, sign - i, i)  # negative floats count down from 0
    return np.abs(ordered(bits[0]) - ordered(bits[1]))
