"""Weight normalization on top of the parametrization mechanism: the public functions."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple, Type, Union

import mindspore as ms
from mindspore import Parameter, Tensor, nn

from . import functional as F
from ._compat import own_params
from .parametrize import (
    Parametrization,
    check_registration,
    original_class,
    parametrizations,
    register_parametrization,
    remove_parametrization,
)

__all__ = [
    "WeightNormParametrization",
    "weight_norm",
    "remove_weight_norm",
    "apply_weight_norm",
    "remove_all_weight_norm",
    "is_weight_normed",
    "weight_norms",
    "WeightNorm",
]

CellTypes = Union[Type[nn.Cell], Tuple[Type[nn.Cell], ...], None]


@dataclass(frozen=True)
class WeightNormParametrization(Parametrization):
    """``w = g * v / ||v||`` with the norm over every axis but ``dim`` (``None``: all axes).

    ``dim`` is stored canonical (a non-negative axis, or ``None`` for the whole tensor).
    """

    dim: Optional[int]
    eps: float = 0.0
    suffixes: ClassVar[Tuple[str, ...]] = ("g", "v")

    def check(self, cell: nn.Cell, name: str, weight: Parameter) -> None:
        label = f"{type(cell).__name__} cell"
        if weight.dtype not in _FLOAT_TYPES:
            raise TypeError(
                f"{label}: Parameter '{name}' has dtype {weight.dtype}; weight norm needs a floating "
                f"Parameter (float16, bfloat16, float32 or float64). Cast the cell first, e.g. "
                f"cell.to_float(ms.float32), or choose another name=")
        if weight.ndim == 0:
            raise ValueError(f"{label}: Parameter '{name}' is a scalar; weight norm needs at least 1 axis")

    def split(self, weight: Tensor) -> Tuple[Tensor, Tensor]:
        # g = ||w|| (with the same eps as compose) so that wrapping leaves outputs unchanged.
        g = F.norm_except_dim(weight, 2, self.dim, self.eps).astype(weight.dtype)
        return g, weight.copy()

    def compose_fn(self):
        dim, eps = self.dim, self.eps

        def compose(g, v):
            return F.weight_norm(v, g, dim, eps)
        return compose


_FLOAT_TYPES = (ms.float16, ms.bfloat16, ms.float32, ms.float64)


def _make_parametrization(cell: nn.Cell, name: str, dim: F.Dim, eps: float) -> WeightNormParametrization:
    """Validate ``dim``/``eps`` against ``cell.<name>`` and build the parametrization."""
    label = f"{type(cell).__name__} cell"
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{label}, Parameter '{name}': eps must be a number >= 0, got {eps!r}")
    weight = own_params(cell).get(name) if isinstance(cell, nn.Cell) else None
    if weight is None:
        # Let the mechanism produce its full error (it lists the cell's Parameters).
        return WeightNormParametrization(0, float(eps))
    try:
        axis = F.canonical_dim(dim, weight.ndim)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{label}, Parameter '{name}' of shape {tuple(weight.shape)}: {err}") from None
    shape = tuple(weight.shape)
    if axis is not None and len(shape) > 1:
        # Axis 0 of size 1 is a layer with a single output: natural, not worth a warning.
        if shape[axis] == 1 and axis != 0:
            warnings.warn(
                f"{label}, Parameter '{name}' of shape {shape}: dim={dim} keeps an axis of size 1, so "
                f"the norm covers the whole tensor. MindSpore's Conv1d weights are 4-D "
                f"(out, in, 1, k): PyTorch's dim=2 on a Conv1d is dim=3 here.", stacklevel=3)
        elif all(n == 1 for i, n in enumerate(shape) if i != axis):
            warnings.warn(
                f"{label}, Parameter '{name}' of shape {shape}: dim={dim} leaves only axes of size 1 "
                f"to normalize over, so w = g * sign(v) and v gets no gradient", stacklevel=3)
    return WeightNormParametrization(axis, float(eps))


def weight_norm(cell: nn.Cell, name: str = "weight", dim: F.Dim = 0, eps: float = 0.0) -> nn.Cell:
    """Apply weight normalization to Parameter ``name`` of ``cell``, in place; return ``cell``.

    The Parameter is replaced by ``<name>_g`` (magnitude, shaped like the weight with 1 on
    every reduced axis) and ``<name>_v`` (direction, the weight's shape). Reading
    ``cell.<name>`` then gives ``g * v / ||v||``, computed inside the traced computation,
    so gradients reach ``g`` and ``v`` in PyNative, GRAPH_MODE and ``ms.jit``. At apply time
    ``g = ||w||``: the layer's output does not change.

    ``dim`` is the axis kept (PyTorch's meaning); ``None`` or ``-1`` normalize the whole
    tensor. Note MindSpore's layouts: ``nn.Conv1d`` weights are ``(out, in, 1, k)``, so
    PyTorch's ``dim=2`` on a Conv1d is ``dim=3`` here. ``eps > 0`` computes
    ``sqrt(sum(v*v) + eps)`` so an all-zero slice stays finite; ``eps=0`` matches PyTorch.

    Raises ``ValueError``/``TypeError`` (and leaves the cell unchanged) if the cell has no such
    Parameter, it is not floating point, ``dim`` is out of range, ``eps < 0``, or weight norm
    is already applied to it.

    >>> import numpy as np, mindspore as ms
    >>> from mindspore import nn
    >>> dense = weight_norm(nn.Dense(20, 40))
    >>> dense.weight_g.shape, dense.weight_v.shape
    ((40, 1), (40, 20))
    >>> sorted(name for name, _ in dense.parameters_and_names())
    ['bias', 'weight_g', 'weight_v']
    >>> dense(ms.Tensor(np.ones((3, 20), np.float32))).shape
    (3, 40)
    """
    parametrization = _make_parametrization(cell, name, dim, eps)
    return register_parametrization(cell, name, parametrization)


def remove_weight_norm(cell: nn.Cell, name: str = "weight") -> nn.Cell:
    """Fold ``g * v / ||v||`` into a plain Parameter ``name`` again and drop ``g`` and ``v``.

    Use it for inference and export: the layer then runs at its plain speed. It is safe
    after the network has run in GRAPH_MODE or under ``ms.jit``: cached graphs are dropped so
    the next call compiles with the folded weight.

    >>> from mindspore import nn
    >>> dense = remove_weight_norm(weight_norm(nn.Dense(4, 3)))
    >>> sorted(name for name, _ in dense.parameters_and_names())
    ['bias', 'weight']
    """
    applied = weight_norms(cell)
    if name not in applied:
        raise ValueError(
            f"{type(cell).__name__} cell: weight norm is not applied to '{name}' "
            f"(applied to: {', '.join(applied) or 'none'}); nothing to remove")
    remove_parametrization(cell, name)
    return cell


def weight_norms(cell: nn.Cell) -> Dict[str, WeightNormParametrization]:
    """The weight-normed Parameter names of ``cell`` itself (not its children) and their settings.

    >>> from mindspore import nn
    >>> weight_norms(weight_norm(nn.Dense(2, 2), dim=1))
    {'weight': WeightNormParametrization(dim=1, eps=0.0)}
    """
    return {k: p for k, p in parametrizations(cell).items() if isinstance(p, WeightNormParametrization)}


def is_weight_normed(cell: nn.Cell, name: Optional[str] = None) -> bool:
    """Whether ``cell`` itself (not its children) has weight norm, on ``name`` or on any Parameter.

    >>> from mindspore import nn
    >>> is_weight_normed(weight_norm(nn.Dense(2, 2))), is_weight_normed(nn.Dense(2, 2))
    (True, False)
    """
    found = weight_norms(cell)
    return bool(found) if name is None else name in found


def _as_type_tuple(cell_types: CellTypes) -> Optional[Tuple[type, ...]]:
    if cell_types is None:
        return None
    types = tuple(cell_types) if isinstance(cell_types, (list, tuple)) else (cell_types,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Cell)):
            raise TypeError(f"cell_types must be Cell classes, got {t!r}")
    return types


def _is_candidate(cell: nn.Cell, name: str, types: Optional[Tuple[type, ...]]) -> bool:
    param = own_params(cell).get(name)
    if param is None:
        return False
    if types is not None:
        return issubclass(original_class(cell), types)
    return param.dtype in _FLOAT_TYPES and param.ndim >= 2


def apply_weight_norm(net: nn.Cell, cell_types: CellTypes = None, name: str = "weight",
                      dim: F.Dim = 0, eps: float = 0.0) -> List[str]:
    """Apply :func:`weight_norm` to every matching cell inside ``net``; return their paths.

    ``cell_types=None`` selects every cell that owns a floating Parameter ``name`` with at
    least 2 axes; otherwise cells of those classes that own ``name``. Cells that already have
    weight norm on ``name`` are left as they are. Everything is validated before anything
    changes: on error the network is unchanged.

    >>> from mindspore import nn
    >>> net = nn.SequentialCell([nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 2)])
    >>> apply_weight_norm(net)
    ['0', '2']
    >>> net[0].weight_g.name
    '0.weight_g'
    """
    types = _as_type_tuple(cell_types)
    chosen = [(path, cell) for path, cell in net.cells_and_names() if _is_candidate(cell, name, types)]
    plans = [(path, cell, _make_parametrization(cell, name, dim, eps)) for path, cell in chosen]
    for _, cell, p in plans:
        check_registration(cell, name, p)  # dtype, name clashes...: before any cell changes
    for _, cell, p in plans:
        register_parametrization(cell, name, p)
    return [path for path, _, _ in plans]


def remove_all_weight_norm(net: nn.Cell) -> List[str]:
    """Remove weight norm from every cell inside ``net`` (all its names); return their paths.

    >>> from mindspore import nn
    >>> net = nn.SequentialCell([nn.Dense(4, 8), nn.Dense(8, 2)])
    >>> apply_weight_norm(net)
    ['0', '1']
    >>> remove_all_weight_norm(net)
    ['0', '1']
    >>> sorted(name for name, _ in net.parameters_and_names())
    ['0.bias', '0.weight', '1.bias', '1.weight']
    """
    changed = []
    for path, cell in list(net.cells_and_names()):
        names = list(weight_norms(cell))
        for n in names:
            remove_parametrization(cell, n)
        if names:
            changed.append(path)
    return changed


class WeightNorm(nn.Cell):
    """A Cell that wraps ``module`` with weight norm on its Parameter ``name``.

    The wrapper form of :func:`weight_norm`, with the attributes of the original MindSpore
    request: ``param_g``, ``param_v``, ``use_weight_norm`` and ``remove_weight_norm()``.
    It calls ``module`` unchanged; the module itself computes its weight from ``g`` and
    ``v``, so the same code runs in PyNative and GRAPH_MODE.

    >>> import numpy as np, mindspore as ms
    >>> from mindspore import nn
    >>> m = WeightNorm(nn.Dense(20, 40))
    >>> m.param_g.shape, m.param_v.shape
    ((40, 1), (40, 20))
    >>> m(ms.Tensor(np.random.randn(10, 20).astype(np.float32))).shape
    (10, 40)
    >>> m.remove_weight_norm()
    >>> m.use_weight_norm
    False
    """

    def __init__(self, module: nn.Cell, dim: F.Dim = 0, name: str = "weight", eps: float = 0.0):
        super().__init__()
        weight_norm(module, name, dim, eps)
        self.module = module
        self.dim = dim
        self.param_name = name
        self.use_weight_norm = True

    @property
    def param_g(self) -> Parameter:
        """The magnitude ``g`` (``module.<name>_g``)."""
        return getattr(self.module, f"{self.param_name}_g")

    @property
    def param_v(self) -> Parameter:
        """The direction ``v`` (``module.<name>_v``)."""
        return getattr(self.module, f"{self.param_name}_v")

    def __getattr__(self, attr: str):
        # Reached when a property above raised AttributeError (Python's fallback), i.e. after
        # removal: say why instead of Cell's generic "no attribute".
        if attr in ("param_g", "param_v"):
            raise AttributeError(
                f"WeightNorm({type(self.module).__name__}): weight norm was removed, so there is no "
                f"{attr}; the folded weight is module.{self.param_name}")
        return super().__getattr__(attr)

    def construct(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)

    def remove_weight_norm(self) -> None:
        """Fold the weight into ``module.<name>`` and stop normalizing (for inference)."""
        remove_weight_norm(self.module, self.param_name)
        self.use_weight_norm = False
