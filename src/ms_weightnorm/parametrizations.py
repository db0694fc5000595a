"""Ready-made parametrizations, as ``torch.nn.utils.parametrizations``: :func:`orthogonal`.

``orthogonal`` keeps a matrix (or a batch of matrices) orthogonal: its ``construct`` maps an
unconstrained ``original`` to an orthogonal matrix with the matrix exponential, the Cayley map
or a product of Householder reflections, PyTorch's three maps with PyTorch's defaults.
MindSpore 2.10 has no MatrixExp kernel on CPU and no gradients for qr/geqrf/orgqr there, so
the forward maps are built from ops that have gradients everywhere (matmul, matrix_solve);
the inverse maps (assignment, registration) run once outside graphs, with numpy's QR.

This module was a function before 0.3 (``ms_weightnorm.parametrizations(cell)``, the
parametrized names of a cell); calling the module still does that, with a
DeprecationWarning: use :func:`ms_weightnorm.parametrizations_of`.
"""
from __future__ import annotations

import math
import sys
import types
import warnings
from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from . import parametrize
from .parametrize import cell_label, parametrizations_of

__all__ = ["orthogonal"]

_MAPS = ("matrix_exp", "cayley", "householder")
# exp(A) = exp(A / 2^s)^(2^s) with the scaled 1-norm under 1/2 and a Taylor polynomial: its
# truncation error is below 0.5^(d+1)/(d+1)!, ~1e-11 for float32's degree 10 and ~1e-20 for
# float64's 16. The squarings are unrolled up to _MAX_SQUARINGS (a graph has a static shape),
# each applied only when the norm needs it: 1-norms up to 2^15 are exact, larger ones lose
# accuracy (an orthogonal weight's original rarely grows that far).
_TAYLOR_DEGREE = {ms.float64: 16}
_DEFAULT_DEGREE = 10
_MAX_SQUARINGS = 16


def _eye_like(x: Tensor, n: int, k: Optional[int] = None) -> Tensor:
    return ops.eye(n, n if k is None else k, x.dtype)


def _transpose(x: Tensor) -> Tensor:
    return ops.swapaxes(x, -1, -2)


def _matrix_exp(A: Tensor) -> Tensor:
    """exp(A) by scaling and squaring a Taylor series: matmuls only, so it has gradients on CPU."""
    n = A.shape[-1]
    norm = ops.abs(A).sum(-2).max()  # 1-norm, the largest over the batch
    s = ops.stop_gradient(ops.clamp(ops.ceil(ops.log(norm * 2.0 + 1e-30) / math.log(2.0)), 0, _MAX_SQUARINGS))
    # pow(2, -s) is exact; exp(-s ln 2) is not in float64 here (off by ~5e-10).
    X = A * ops.pow(2.0, -s).astype(A.dtype)
    eye = _eye_like(A, n)
    E = eye
    for k in range(_TAYLOR_DEGREE.get(A.dtype, _DEFAULT_DEGREE), 0, -1):  # Horner: I + X/1 (I + X/2 (...))
        E = eye + ops.matmul(X, E) / k
    for i in range(_MAX_SQUARINGS):
        keep = (s > i).astype(A.dtype)
        E = E + keep * (ops.matmul(E, E) - E)
    return E


def _cayley(A: Tensor) -> Tensor:
    """(I - A/2)^-1 (I + A/2), PyTorch's Cayley retraction."""
    n = A.shape[-1]
    eye = _eye_like(A, n)
    if A.ndim > 2:
        eye = ops.broadcast_to(eye, A.shape)
    return ops.matrix_solve(eye - 0.5 * A, eye + 0.5 * A)


def _householder_product(V: Tensor, tau: Tensor) -> Tensor:
    """H_1 H_2 ... H_k applied to the first k columns of I, H_i = I - tau_i v_i v_i^T.

    ``V`` holds the v_i below the diagonal (the unit diagonal is implicit), as LAPACK's orgqr
    and torch.linalg.householder_product take them.
    """
    n, k = V.shape[-2], V.shape[-1]
    V = ops.tril(V, -1) + _eye_like(V, n, k)
    Q = _eye_like(V, n, k)
    if V.ndim > 2:
        Q = ops.broadcast_to(Q, V.shape)
    for i in range(k - 1, -1, -1):
        v = V[..., :, i:i + 1]
        t = tau[..., i:i + 1].expand_dims(-1)
        Q = Q - t * ops.matmul(v, ops.matmul(_transpose(v), Q))
    return Q


class Orthogonal(nn.Cell):
    """The parametrization cell of :func:`orthogonal` (PyTorch's ``_Orthogonal``).

    With ``use_trivialization`` it keeps a non-trainable ``base`` (saved in checkpoints as
    ``parametrizations.<name>.0.base``, PyTorch's key) that assignment sets, and maps around it.
    """

    def __init__(self, weight: Tensor, orthogonal_map: str, use_trivialization: bool = True):
        super().__init__()
        self.shape = tuple(weight.shape)
        self.orthogonal_map = orthogonal_map
        self.use_trivialization = use_trivialization
        if use_trivialization:
            n = max(self.shape[-2:])
            eye = np.broadcast_to(np.eye(n), self.shape[:-2] + (n, n)).copy()
            self.base = Parameter(Tensor(eye.astype(ms.dtype_to_nptype(weight.dtype))), name="base",
                                  requires_grad=False)

    def construct(self, X):
        n, k = X.shape[-2], X.shape[-1]
        transposed = n < k
        if transposed:
            X = _transpose(X)
            n, k = k, n
        if self.orthogonal_map == "householder":
            A = ops.tril(X, -1)
            tau = 2.0 / (1.0 + (A * A).sum(-2))
            Q = _householder_product(A, tau)
            # torch casts the diagonal to int (truncation): only its sign matters, no gradient.
            diag = ops.stop_gradient(ops.diagonal(X, 0, -2, -1).astype(ms.int32).astype(X.dtype))
            Q = Q * diag.expand_dims(-2)
        else:
            X = ops.tril(X)
            if n != k:
                pad = ops.zeros(X.shape[:-1] + (n - k,), X.dtype)
                X = ops.cat((X, pad), -1)
            A = X - _transpose(X)
            if self.orthogonal_map == "matrix_exp":
                Q = _matrix_exp(A)
            else:
                Q = _cayley(A)
            if n != k:
                Q = Q[..., :k]
        if self.use_trivialization:
            Q = ops.matmul(self.base, Q)
        if transposed:
            Q = _transpose(Q)
        return Q

    def right_inverse(self, Q):
        """The original for an orthogonal ``Q`` (a non-orthogonal one is replaced by its QR's Q)."""
        if tuple(Q.shape) != self.shape:
            raise ValueError(f"orthogonal: expected a matrix or batch of matrices of shape {self.shape}, got one "
                             f"of shape {tuple(Q.shape)}")
        dtype = Q.dtype
        q = Q.asnumpy().astype(np.float64)
        n, k = q.shape[-2], q.shape[-1]
        transpose = n < k
        if transpose:
            q = np.swapaxes(q, -1, -2)
            n, k = k, n
        if not self.use_trivialization:
            if self.orthogonal_map != "householder":
                raise NotImplementedError(
                    "It is not possible to assign to the matrix exponential or the Cayley parametrization "
                    "when use_trivialization=False: they have no inverse map here (as in PyTorch)")
            A = _geqrf_signed(q)
            out = np.swapaxes(A, -1, -2) if transpose else A
            return Tensor(out.astype(ms.dtype_to_nptype(dtype)))
        if n == k:
            base = q.copy() if _is_orthogonal(q) else _make_orthogonal(q)
        else:
            # Complete Q to an n x n orthogonal matrix (the extra columns are random, as in torch).
            extra = np.random.standard_normal(q.shape[:-2] + (n, n - k))
            base = _make_orthogonal(np.concatenate([q, extra], -1))
        self.base.set_data(Tensor(base.astype(ms.dtype_to_nptype(self.base.dtype))))
        # -Id: householder(-Id) and the exponential/Cayley maps of 0 all give Id, so the weight is base.
        neg = np.zeros(tuple(Q.shape))
        idx = np.arange(min(Q.shape[-2:]))
        neg[..., idx, idx] = -1.0
        return Tensor(neg.astype(ms.dtype_to_nptype(dtype)))


def _is_orthogonal(q: np.ndarray) -> bool:
    n, k = q.shape[-2], q.shape[-1]
    eps = 10.0 * n * np.finfo(np.float32).eps
    return bool(np.allclose(np.swapaxes(q, -1, -2) @ q, np.eye(k), atol=eps, rtol=0))


def _make_orthogonal(a: np.ndarray) -> np.ndarray:
    """The Q of a = QR with diag(R) >= 0 (a tall matrix, or a batch of them)."""
    q, r = np.linalg.qr(a)
    sign = np.sign(np.diagonal(r, 0, -2, -1))
    sign[sign == 0] = 1
    return q * sign[..., None, :]


def _geqrf_signed(q: np.ndarray) -> np.ndarray:
    """LAPACK's geqrf reflectors of ``q`` with the diagonal replaced by the signs (torch's layout)."""
    flat = q.reshape((-1,) + q.shape[-2:])
    out = np.empty_like(flat)
    for b, m in enumerate(flat):
        h, tau = np.linalg.qr(m, mode="raw")
        a = h.T.copy()  # numpy returns the Fortran-ordered factor
        d = np.arange(min(a.shape))
        sign = np.sign(a[d, d])
        sign[tau == 0.0] *= -1
        a[d, d] = sign
        out[b] = a
    return out.reshape(q.shape)


def orthogonal(cell: nn.Cell, name: str = "weight", orthogonal_map: Optional[str] = None, *,
               use_trivialization: bool = True) -> nn.Cell:
    """Keep ``cell.<name>`` orthogonal (or semi-orthogonal), as ``torch.nn.utils.parametrizations.orthogonal``.

    ``orthogonal_map`` is ``"matrix_exp"``, ``"cayley"`` or ``"householder"``; by default
    ``"matrix_exp"`` for square matrices and ``"householder"`` otherwise (PyTorch's defaults).
    With ``use_trivialization=True`` (the default) assignment works for every map and the
    original starts at the value that gives the current weight's orthogonal QR factor.
    Registration uses :func:`ms_weightnorm.parametrize.register_parametrization` with
    ``unsafe=True``, as PyTorch does; the checkpoint keys are PyTorch's
    (``parametrizations.weight.original``, ``parametrizations.weight.0.base``).

    >>> import numpy as np
    >>> from mindspore import nn
    >>> layer = orthogonal(nn.Dense(4, 4))
    >>> w = layer.weight.asnumpy()
    >>> bool(np.allclose(w.T @ w, np.eye(4), atol=1e-5))
    True
    """
    if not isinstance(cell, nn.Cell):
        raise TypeError(f"orthogonal: expected the mindspore.nn.Cell that owns '{name}', got {type(cell).__name__}")
    weight = getattr(cell, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"{cell_label(cell)} has no Parameter named '{name}'; pass name= one of its Parameters")
    if weight.ndim < 2:
        raise ValueError(f"{cell_label(cell)}, Parameter '{name}': expected a matrix or batch of matrices, got a "
                         f"tensor of {weight.ndim} dimensions (shape {tuple(weight.shape)})")
    if weight.dtype in (ms.complex64, ms.complex128):
        raise ValueError(f"{cell_label(cell)}, Parameter '{name}': complex weights are not supported by this "
                         f"orthogonal (the real maps only)")
    if orthogonal_map is None:
        orthogonal_map = "matrix_exp" if weight.shape[-2] == weight.shape[-1] else "householder"
    if orthogonal_map not in _MAPS:
        raise ValueError(f"{cell_label(cell)}: orthogonal_map has to be one of {', '.join(map(repr, _MAPS))}, "
                         f"got {orthogonal_map!r}")
    orth = Orthogonal(weight, orthogonal_map, use_trivialization=use_trivialization)
    parametrize.register_parametrization(cell, name, orth, unsafe=True)
    return cell


class _CallableModule(types.ModuleType):
    """``ms_weightnorm.parametrizations(cell)`` was a function: keep it callable, with a warning."""

    def __call__(self, cell: nn.Cell):
        warnings.warn("ms_weightnorm.parametrizations(cell) is deprecated: ms_weightnorm.parametrizations is now "
                      "the module of ready-made parametrizations (orthogonal), as in PyTorch. Call "
                      "ms_weightnorm.parametrizations_of(cell) instead", DeprecationWarning, stacklevel=2)
        return parametrizations_of(cell)


sys.modules[__name__].__class__ = _CallableModule
