"""Spectral normalization (Miyato et al., 2018) on the parametrization mechanism.

``w = W / sigma(W)``: the weight divided by an estimate of its largest singular value. The
estimate comes from power iteration on the weight viewed as a matrix (axis ``dim`` first),
with two state vectors ``u`` and ``v`` kept between calls as non-trainable Parameters
(``<name>_u``, ``<name>_v``; saved in checkpoints, skipped by optimizers). The trainable
Parameter is ``<name>_orig``, as in PyTorch's ``nn.utils.spectral_norm``.

In training mode (``cell.set_train(True)``) each read of the weight (each forward) runs
``n_power_iterations`` steps, writes ``u`` and ``v`` in place (``ops.assign``, inside compiled
graphs too) and divides by ``sigma = u . (W v)``; in eval mode ``u`` and ``v`` are only read.
No gradient flows through ``u`` and ``v``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Tuple

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from . import functional as F
from . import _layouts
from ._compat import own_params
from .parametrize import (
    Parametrization,
    _kind,
    cell_label,
    original_class,
    parametrizations,
    register_parametrization,
    remove_parametrization,
)
from .weight_norm import require_floating

__all__ = [
    "SpectralNormParametrization",
    "spectral_norm",
    "remove_spectral_norm",
    "spectral_norms",
    "is_spectral_normed",
]

STYLES = ("new", "old")
WARMUP_ITERATIONS = 15


def default_dim(cell: nn.Cell) -> int:
    """PyTorch's ``dim=None``: 1 for transposed convolutions (output axis 1), else 0.

    >>> from mindspore import nn
    >>> default_dim(nn.Dense(2, 3)), default_dim(nn.Conv1dTranspose(2, 3, 4))
    (0, 1)
    """
    return _layouts.output_axis(original_class(cell))  # transposed convs: (in, out/group, ...)


def matrix_shape(shape: Tuple[int, ...], dim: int) -> Tuple[int, int]:
    """``(h, w)`` of a weight of ``shape`` viewed as a matrix with axis ``dim`` first."""
    h = int(shape[dim])
    return h, int(np.prod(shape, dtype=np.int64)) // max(h, 1)


def np_matrix(w: np.ndarray, dim: int) -> np.ndarray:
    """numpy twin of :func:`functional.spectral_matrix`."""
    return np.moveaxis(w, dim, 0).reshape(w.shape[dim], -1)


def _np_normalize(x: np.ndarray, eps: float) -> np.ndarray:
    return x / max(float(np.sqrt(np.sum(x * x))), eps)


def np_power_iteration(mat: np.ndarray, u: np.ndarray, v: np.ndarray, n: int, eps: float,
                       u_first: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`functional.power_iteration` in numpy float64 (for registration and loading)."""
    mat = mat.astype(np.float64)
    u, v = u.astype(np.float64), v.astype(np.float64)
    for _ in range(n):
        if u_first:
            u = _np_normalize(mat @ v, eps)
            v = _np_normalize(mat.T @ u, eps)
        else:
            v = _np_normalize(mat.T @ u, eps)
            u = _np_normalize(mat @ v, eps)
    return u, v


def np_sigma(w: np.ndarray, u: np.ndarray, v: np.ndarray, dim: int) -> float:
    """``u . (W v)`` in float64, ``W`` the matrix view of ``w``."""
    return float(u.astype(np.float64) @ (np_matrix(w.astype(np.float64), dim) @ v.astype(np.float64)))


def _random_unit(n: int, eps: float) -> np.ndarray:
    # MindSpore's initializer follows ms.set_seed, like the layers' own weight init.
    from mindspore.common.initializer import Normal, initializer
    x = initializer(Normal(1.0), (n,), ms.float32).init_data().asnumpy().astype(np.float64)
    return _np_normalize(x, eps)


@dataclass(frozen=True)
class SpectralNormParametrization(Parametrization):
    """``w = orig / sigma`` with ``sigma = u . (W v)`` and ``W`` = ``orig`` with axis ``dim`` first.

    ``style`` picks the order of the power step: ``"new"`` updates ``u`` from ``v`` first
    (``torch.nn.utils.parametrizations.spectral_norm``), ``"old"`` updates ``v`` from ``u``
    first (``torch.nn.utils.spectral_norm``). ``dim`` is stored canonical (non-negative).
    """

    dim: int = 0
    n_power_iterations: int = 1
    eps: float = 1e-12
    style: str = "new"
    suffixes: ClassVar[Tuple[str, ...]] = ("orig",)
    state_suffixes: ClassVar[Tuple[str, ...]] = ("u", "v")
    label: ClassVar[str] = "spectral norm"
    # PyTorch's spectral norm "inverts" by storing the value as the unnormalized weight, after
    # which the layer reads value / sigma(value), not value: that is no inverse, so say so.
    no_inverse: ClassVar[str] = ("spectral norm has no inverse: the weight is always W / sigma(W), so no "
                                 "W gives an arbitrary value")

    def check(self, cell: nn.Cell, name: str, weight: Parameter) -> None:
        label = cell_label(cell)
        require_floating(cell, name, weight, self.label)
        if weight.ndim < 2:
            raise ValueError(
                f"{label}: Parameter '{name}' has shape {tuple(weight.shape)}; spectral norm needs a "
                f"weight with at least 2 axes (a vector's spectral norm is its length: divide by it)")
        if not 0 <= self.dim < weight.ndim:
            raise ValueError(f"{label}: dim={self.dim} is out of range for Parameter '{name}' of "
                             f"shape {tuple(weight.shape)}")
        if 0 in tuple(weight.shape):
            raise ValueError(f"{label}: Parameter '{name}' of shape {tuple(weight.shape)} is empty")

    def split(self, weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        w = weight.astype(ms.float32).asnumpy() if weight.dtype == ms.bfloat16 else weight.asnumpy()
        mat = np_matrix(w.astype(np.float64), self.dim)
        h, n = mat.shape
        u, v = np_power_iteration(mat, _random_unit(h, self.eps), _random_unit(n, self.eps),
                                  WARMUP_ITERATIONS, self.eps, u_first=True)
        return (weight.copy(), Tensor(u, dtype=weight.dtype), Tensor(v, dtype=weight.dtype))

    def compose_fn(self):
        dim, n, eps, u_first = self.dim, self.n_power_iterations, self.eps, self.style == "new"

        def compose(orig, u, v, training):
            if training:
                w, u_new, v_new = F.spectral_norm(orig, u, v, dim, n, eps, u_first)
                ops.assign(u, u_new)
                ops.assign(v, v_new)
                return w
            w, _, _ = F.spectral_norm(orig, u, v, dim, 0, eps, u_first)
            return w
        return compose


def _make_parametrization(cell: nn.Cell, name: str, n_power_iterations: int, eps: float,
                          dim: Optional[int], style: str) -> SpectralNormParametrization:
    label = cell_label(cell)
    if not isinstance(cell, nn.Cell):
        raise TypeError(f"expected a mindspore.nn.Cell, got {type(cell).__name__}")
    where = f"{label}, Parameter '{name}'"
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations < 1:
        raise ValueError(f"{where}: n_power_iterations must be an int >= 1, got {n_power_iterations!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{where}: eps must be a number > 0, got {eps!r}")
    if style not in STYLES:
        raise ValueError(f"{where}: style must be 'new' (u updated first, as "
                         f"torch.nn.utils.parametrizations.spectral_norm) or 'old' (v first, as "
                         f"torch.nn.utils.spectral_norm), got {style!r}")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise TypeError(f"{where}: dim must be an int or None, got {type(dim).__name__} {dim!r}")
    weight = own_params(cell).get(name)
    if weight is None:
        # Let the mechanism give its full error (it lists the cell's Parameters).
        return SpectralNormParametrization(0, n_power_iterations, float(eps), style)
    ndim = weight.ndim
    axis = default_dim(cell) if dim is None else dim
    if not -ndim <= axis < ndim:
        raise ValueError(f"{where} of shape {tuple(weight.shape)}: dim={dim} is out of range; use an "
                         f"axis in [{-ndim}, {ndim - 1}] or None (0; 1 for transposed convolutions)")
    axis %= ndim
    shape = tuple(weight.shape)
    if shape[axis] == 1 and axis != 0 and ndim > 1:
        warnings.warn(
            f"{where} of shape {shape}: dim={dim} puts an axis of size 1 first, so sigma is the "
            f"length of the whole weight. MindSpore's Conv1d weights are 4-D (out, in, 1, k): "
            f"PyTorch's dim=2 on a Conv1d is dim=3 here.", stacklevel=3)
    return SpectralNormParametrization(axis, n_power_iterations, float(eps), style)


def spectral_norm(cell: nn.Cell, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: Optional[int] = None, *, style: str = "new") -> nn.Cell:
    """Apply spectral normalization to Parameter ``name`` of ``cell``, in place; return ``cell``.

    The Parameter is replaced by ``<name>_orig`` (trainable, the weight's shape) and two
    non-trainable state vectors ``<name>_u`` (length ``h``) and ``<name>_v`` (length ``w``),
    where ``(h, w)`` is the shape of the weight viewed as a matrix with axis ``dim`` first.
    Reading ``cell.<name>`` gives ``orig / sigma`` with ``sigma = u . (W v)``:

    - in training mode (``cell.set_train(True)``) each read first runs ``n_power_iterations``
      power steps and writes the new ``u``, ``v`` in place, in PyNative, GRAPH_MODE, ``ms.jit``
      and ``nn.TrainOneStepCell`` alike; a layer called twice in one step advances twice;
    - in eval mode ``u`` and ``v`` are read, never written.

    No gradient flows through ``u`` and ``v``; ``orig`` gets the gradient through ``sigma``
    too. At registration ``u`` and ``v`` are drawn at random (following ``ms.set_seed``) and
    improved by 15 power steps, as PyTorch does, so the first forward already divides by a good
    estimate (the layer's output does change: that is the point).

    ``dim=None`` means PyTorch's default: 0, or 1 for transposed convolutions, whose MindSpore
    weights are ``(in, out/group, ...)``. Other ``dim`` values index MindSpore's layout:
    ``nn.Conv1d`` weights are ``(out, in/group, 1, k)``. ``eps`` bounds the norms when ``u``
    and ``v`` are normalized (``x / max(||x||, eps)``). ``style="new"`` updates ``u`` first in each
    power step, as ``torch.nn.utils.parametrizations.spectral_norm``; ``style="old"`` updates
    ``v`` first, as the older ``torch.nn.utils.spectral_norm`` (for continuing a model trained
    with it step for step).

    Raises ``ValueError``/``TypeError`` (and leaves the cell unchanged) if the cell has no such
    Parameter, it is not floating point or has fewer than 2 axes, an argument is out of range,
    or the Parameter is already parametrized (weight norm or spectral norm).

    >>> import numpy as np, mindspore as ms
    >>> from mindspore import nn
    >>> dense = spectral_norm(nn.Dense(20, 40))
    >>> dense.weight_orig.shape, dense.weight_u.shape, dense.weight_v.shape
    ((40, 20), (40,), (20,))
    >>> [p.name for p in dense.trainable_params()]
    ['weight_orig', 'bias']
    >>> s = np.linalg.svd(dense.weight.asnumpy(), compute_uv=False)[0]
    >>> bool(abs(s - 1) < 0.02)  # the largest singular value of the normalized weight
    True
    >>> _ = dense.set_train(True)
    >>> dense(ms.Tensor(np.ones((3, 20), np.float32))).shape
    (3, 40)
    """
    if isinstance(cell, nn.Cell) and name in parametrizations(cell):
        existing = parametrizations(cell)[name]
        kind, undo = _kind(existing)
        raise ValueError(
            f"{cell_label(cell)}: {kind} is already applied to '{name}'; call {undo}(cell, "
            f"'{name}') first if you want spectral norm on it")
    parametrization = _make_parametrization(cell, name, n_power_iterations, eps, dim, style)
    return register_parametrization(cell, name, parametrization)


def remove_spectral_norm(cell: nn.Cell, name: str = "weight") -> nn.Cell:
    """Fold ``orig / sigma`` (with the current ``u``, ``v``; no power step) into a plain Parameter.

    ``<name>_orig``, ``<name>_u`` and ``<name>_v`` are dropped. Safe after the network ran in
    GRAPH_MODE or under ``ms.jit``: cached graphs are dropped, so the next call compiles with the
    folded weight. (PyTorch's ``remove_parametrizations`` runs one more power step when the
    module is in training mode; this never does, in either mode.)

    >>> import numpy as np
    >>> from mindspore import nn
    >>> dense = spectral_norm(nn.Dense(4, 3))
    >>> expected = dense.weight.asnumpy()
    >>> dense = remove_spectral_norm(dense)
    >>> sorted(name for name, _ in dense.parameters_and_names())
    ['bias', 'weight']
    >>> bool(np.allclose(dense.weight.asnumpy(), expected))
    True
    """
    applied = spectral_norms(cell)
    if name not in applied:
        raise ValueError(
            f"{cell_label(cell)}: spectral norm is not applied to '{name}' "
            f"(applied to: {', '.join(applied) or 'none'}); nothing to remove")
    remove_parametrization(cell, name)
    return cell


def spectral_norms(cell: nn.Cell) -> Dict[str, SpectralNormParametrization]:
    """The spectral-normed Parameter names of ``cell`` itself (not its children) and their settings.

    >>> from mindspore import nn
    >>> spectral_norms(spectral_norm(nn.Conv2dTranspose(2, 3, 3)))
    {'weight': SpectralNormParametrization(dim=1, n_power_iterations=1, eps=1e-12, style='new')}
    """
    return {k: p for k, p in parametrizations(cell).items() if isinstance(p, SpectralNormParametrization)}


def is_spectral_normed(cell: nn.Cell, name: Optional[str] = None) -> bool:
    """Whether ``cell`` itself has spectral norm, on ``name`` or on any Parameter.

    >>> from mindspore import nn
    >>> is_spectral_normed(spectral_norm(nn.Dense(2, 2))), is_spectral_normed(nn.Dense(2, 2))
    (True, False)
    """
    found = spectral_norms(cell)
    return bool(found) if name is None else name in found
