"""Weight normalization on top of the parametrization mechanism: the public functions."""
from __future__ import annotations

import math
import numbers
import operator
import warnings
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple, Type, Union

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from . import functional as F
from . import _layouts
from ._compat import own_params
from .parametrize import (
    Parametrization,
    StaleTrainerWarning,
    cell_label,
    original_class,
    parametrizations,
    register_parametrization,
    register_parametrizations,
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
    "torch_dim",
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
    label: ClassVar[str] = "weight norm"

    def check(self, cell: nn.Cell, name: str, weight: Parameter) -> None:
        label = cell_label(cell)
        require_floating(cell, name, weight, self.label)
        if weight.ndim == 0:
            raise ValueError(
                f"{label}: Parameter '{name}' is a scalar; weight norm needs at least 1 axis. Choose another "
                f"name= (its weight)")

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


def require_floating(cell: nn.Cell, name: str, weight: Parameter, kind: str) -> None:
    """Raise TypeError, naming the cell and Parameter, unless ``weight`` is floating point
    (shared by weight norm and spectral norm)."""
    if weight.dtype not in _FLOAT_TYPES:
        raise TypeError(
            f"{cell_label(cell)}: Parameter '{name}' has dtype {weight.dtype}; {kind} needs a "
            f"floating Parameter (float16, bfloat16, float32 or float64). Cast the cell first, e.g. "
            f"cell.to_float(ms.float32), or choose another name=")


def _check_eps(eps, where: str) -> float:
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{where}: eps must be a real number >= 0 (e.g. 1e-12), got {type(eps).__name__} {eps!r}")
    value = float(eps)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{where}: eps must be finite and >= 0, got {eps!r}; it is added under the square root of "
            f"the norm (0 matches PyTorch, a small value like 1e-12 keeps all-zero slices finite)")
    return value


def _check_dim(dim, where: str) -> Optional[int]:
    if dim is None:
        return None
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(
            f"{where}: dim must be an int or None, got {type(dim).__name__} {dim!r}; pass the axis to keep "
            f"(0: one g per output channel) or None for the norm of the whole tensor")
    return operator.index(dim)  # numpy integers become plain ints


def _torch_layout_extra_axis(cell: nn.Cell, weight) -> bool:
    # MindSpore's nn.Conv1d/nn.Conv1dTranspose keep a 4-D weight (a, b, 1, k): see _layouts.
    return _layouts.has_extra_axis(original_class(cell), weight)


def torch_dim(module: nn.Cell, dim: F.Dim, name: str = "weight") -> F.Dim:
    """PyTorch's ``dim`` for ``module.<name>``, as the ``dim`` this library takes.

    Code ported from PyTorch passes PyTorch's axis numbers: ``dim=2`` on a Conv1d is the kernel
    axis of its 3-D ``(out, in, k)`` weight. MindSpore's ``nn.Conv1d`` and ``nn.Conv1dTranspose``
    weights are 4-D ``(a, b, 1, k)``, so PyTorch's axes 0, 1, 2 (or -3, -2) are 0, 1, 3 here.
    Every other layer has PyTorch's layout and ``dim`` is returned as it is, as are ``None``
    and ``-1`` (the whole tensor, in both libraries). ``g`` then has PyTorch's values, in
    MindSpore's layout (an extra axis of size 1; :mod:`ms_weightnorm.torch_io` maps it).

    >>> from mindspore import nn
    >>> conv = nn.Conv1d(4, 4, 5)
    >>> torch_dim(conv, 2), torch_dim(conv, 0), torch_dim(conv, None), torch_dim(nn.Conv2d(2, 2, 3), 2)
    (3, 0, None, 2)
    >>> weight_norm(conv, dim=torch_dim(conv, 2)).weight_g.shape
    (1, 1, 1, 5)
    """
    dim = _check_dim(dim, f"torch_dim on {cell_label(module) if isinstance(module, nn.Cell) else module!r}")
    if not isinstance(module, nn.Cell):
        raise TypeError(f"torch_dim: expected the mindspore.nn.Cell that owns '{name}', got a {type(module).__name__}")
    weight = own_params(module).get(name)
    if dim is None or dim == -1 or not _torch_layout_extra_axis(module, weight):
        return dim
    torch_axis = dim + 3 if dim < 0 else dim
    if not 0 <= torch_axis < 3:
        raise ValueError(
            f"{cell_label(module)}, Parameter '{name}': PyTorch's dim={dim} is out of range for its 3-D "
            f"weight (PyTorch's shape {(weight.shape[0], weight.shape[1], weight.shape[3])}); pass 0, 1, 2 or None")
    return (0, 1, 3)[torch_axis]


def _make_parametrization(cell: nn.Cell, name: str, dim: F.Dim, eps: float) -> WeightNormParametrization:
    """Validate ``dim``/``eps`` against ``cell.<name>`` and build the parametrization."""
    label = cell_label(cell)
    where = f"{label}, Parameter '{name}'"
    eps = _check_eps(eps, where)
    dim = _check_dim(dim, where)
    weight = own_params(cell).get(name) if isinstance(cell, nn.Cell) else None
    if weight is None:
        # Let the mechanism produce its full error (it lists the cell's Parameters).
        return WeightNormParametrization(0, eps)
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
                f"(out, in, 1, k): PyTorch's dim=2 on a Conv1d is dim=3 here "
                f"(dim=torch_dim(cell, 2) translates PyTorch's dim).", stacklevel=3)
        elif all(n == 1 for i, n in enumerate(shape) if i != axis):
            warnings.warn(
                f"{label}, Parameter '{name}' of shape {shape}: dim={dim} leaves only axes of size 1 "
                f"to normalize over, so w = g * sign(v) and v gets no gradient", stacklevel=3)
    return WeightNormParametrization(axis, eps)


class _Unset:
    """A default meaning "not given", shown readably by help() and in signatures."""

    def __init__(self, shown: str):
        self.shown = shown

    def __repr__(self) -> str:
        return self.shown


_UNSET = _Unset("<required>")  # module=: the layer, given as module or as cell
_ALIAS = _Unset("<alias of module>")  # cell=: this library's earlier name for module=


def _module_arg(module, cell, func: str) -> nn.Cell:
    """PyTorch's ``module=`` and this library's earlier ``cell=``: exactly one of them."""
    if cell is not _ALIAS:
        if module is not _UNSET:
            raise TypeError(f"{func}() got both module= and cell=; pass the layer once (module= is PyTorch's name)")
        module = cell
    if module is _UNSET:
        raise TypeError(f"{func}() missing the layer: {func}(module, ...)")
    return module


def weight_norm(module: nn.Cell = _UNSET, name: str = "weight", dim: F.Dim = 0, eps: float = 0.0, *,
                cell: nn.Cell = _ALIAS) -> nn.Cell:
    """Apply weight normalization to Parameter ``name`` of ``module``, in place; return it.

    The arguments are PyTorch's (``torch.nn.utils.weight_norm(module, name="weight", dim=0)``),
    plus ``eps``; ``cell=`` is accepted for ``module=``. The Parameter is replaced by
    ``<name>_g`` (magnitude, shaped like the weight with 1 on every reduced axis) and
    ``<name>_v`` (direction, the weight's shape). Reading ``module.<name>`` then gives
    ``g * v / ||v||``, computed inside the traced computation, so gradients reach ``g`` and
    ``v`` in PyNative, GRAPH_MODE and ``ms.jit``. At apply time ``g = ||w||``: the layer's
    output does not change. Setting the computed weight (``module.<name> = X`` or
    ``module.<name>.set_data(X)``, outside a compiled graph) re-splits it: ``g = ||X||``,
    ``v = X``, as PyTorch's parametrizations do, so weight-init code may run afterwards.

    ``dim`` is the axis kept (PyTorch's meaning); ``None`` or ``-1`` normalize the whole
    tensor. Note MindSpore's layouts: ``nn.Conv1d`` weights are ``(out, in, 1, k)``, so
    PyTorch's ``dim=2`` on a Conv1d is ``dim=3`` here; ``dim=torch_dim(module, 2)`` translates
    PyTorch's axis numbers for any layer. ``eps > 0`` computes
    ``sqrt(sum(v*v) + eps)`` so an all-zero slice stays finite; ``eps=0`` matches PyTorch.
    Python and numpy numbers are accepted for ``dim`` and ``eps``.

    Tied weights: if another cell holds the same Parameter (``head.weight =
    embed.embedding_table``), this refuses, because changing one cell would untie them. Use
    :func:`apply_weight_norm` on a cell containing both: they then share one ``g`` and ``v``.
    The same refusal comes when an optimizer or training cell built earlier holds the
    Parameter: build those after weight norm.

    Raises ``ValueError``/``TypeError`` (and leaves the module unchanged) if it has no such
    Parameter, it is not floating point, ``dim`` is out of range, ``eps`` is negative or not
    finite, the Parameter is tied, or weight norm is already applied to it.

    >>> import numpy as np, mindspore as ms
    >>> from mindspore import nn
    >>> dense = weight_norm(nn.Dense(20, 40))
    >>> dense.weight_g.shape, dense.weight_v.shape
    ((40, 1), (40, 20))
    >>> sorted(name for name, _ in dense.parameters_and_names())
    ['bias', 'weight_g', 'weight_v']
    >>> dense(ms.Tensor(np.ones((3, 20), np.float32))).shape
    (3, 40)
    >>> conv = weight_norm(module=nn.Conv2d(2, 4, 3), name="weight", dim=0)
    >>> conv.weight_g.shape
    (4, 1, 1, 1)
    """
    module = _module_arg(module, cell, "weight_norm")
    if isinstance(module, WeightNorm):
        raise TypeError(
            f"weight_norm() got a WeightNorm wrapper (around a {type(module.module).__name__} cell); it "
            f"already applies weight norm to its module's '{module.param_name}'. Pass the inner layer: "
            f"weight_norm(wrapper.module, name=...)")
    parametrization = _make_parametrization(module, name, dim, eps)
    return register_parametrization(module, name, parametrization)


def _unwrap(module: nn.Cell) -> nn.Cell:
    return module.module if isinstance(module, WeightNorm) else module


def remove_weight_norm(module: nn.Cell = _UNSET, name: Optional[str] = None, *,
                       cell: nn.Cell = _ALIAS) -> nn.Cell:
    """Fold ``g * v / ||v||`` into a plain Parameter ``name`` again and drop ``g`` and ``v``.

    PyTorch's arguments (``remove_weight_norm(module, name="weight")``); ``cell=`` is accepted
    for ``module=``. ``name`` defaults to ``"weight"``, or for a :class:`WeightNorm` wrapper to
    its own Parameter name: a wrapper is accepted and its module is changed. Use it for
    inference and export: the layer then runs at its plain speed. It is safe after the network
    has run in GRAPH_MODE or under ``ms.jit``: cached graphs are dropped so the next call
    compiles with the folded weight. Cells that share the weight-normed Parameters (a tie
    kept by :func:`apply_weight_norm`) are folded together and keep sharing one Parameter.
    Returns ``module`` (the wrapper when given one).

    >>> from mindspore import nn
    >>> dense = remove_weight_norm(weight_norm(nn.Dense(4, 3)))
    >>> sorted(name for name, _ in dense.parameters_and_names())
    ['bias', 'weight']
    >>> wrapped = remove_weight_norm(WeightNorm(nn.Dense(4, 3)))
    >>> wrapped.use_weight_norm, sorted(n for n, _ in wrapped.parameters_and_names())
    (False, ['module.bias', 'module.weight'])
    """
    module = _module_arg(module, cell, "remove_weight_norm")
    if not isinstance(module, nn.Cell):
        raise TypeError(
            f"remove_weight_norm() expects the mindspore.nn.Cell weight norm was applied to (or its WeightNorm "
            f"wrapper), got a {type(module).__name__}")
    target = _unwrap(module)
    if name is None:
        name = module.param_name if isinstance(module, WeightNorm) else "weight"
    applied = _own_weight_norms(target)
    if name not in applied:
        label = f"{type(target).__name__} cell" + (" (inside a WeightNorm wrapper)" if target is not module else "")
        if applied:
            hint = f"weight norm is on {', '.join(repr(n) for n in applied)}: pass name= one of those"
        elif isinstance(module, WeightNorm):
            hint = "it was already removed from this wrapper"
        else:
            hint = ("it has no weight norm: pass the layer weight_norm() was applied to (for a network, "
                    "remove_all_weight_norm(net))")
        raise ValueError(f"{label}: weight norm is not applied to '{name}', nothing to remove; {hint}")
    remove_parametrization(target, name)
    if isinstance(module, WeightNorm) and name == module.param_name:
        module.use_weight_norm = False
    return module


def _own_weight_norms(cell: nn.Cell) -> Dict[str, WeightNormParametrization]:
    return {k: p for k, p in parametrizations(cell).items() if isinstance(p, WeightNormParametrization)}


def weight_norms(module: nn.Cell) -> Dict[str, WeightNormParametrization]:
    """The weight-normed Parameter names of ``module`` itself (not its children) and their settings.

    A :class:`WeightNorm` wrapper answers for the module it wraps.

    >>> from mindspore import nn
    >>> weight_norms(weight_norm(nn.Dense(2, 2), dim=1))
    {'weight': WeightNormParametrization(dim=1, eps=0.0)}
    >>> weight_norms(WeightNorm(nn.Dense(2, 2)))
    {'weight': WeightNormParametrization(dim=0, eps=0.0)}
    """
    return _own_weight_norms(_unwrap(module))


def is_weight_normed(module: nn.Cell, name: Optional[str] = None) -> bool:
    """Whether ``module`` itself (not its children) has weight norm, on ``name`` or on any Parameter.

    A :class:`WeightNorm` wrapper answers for the module it wraps.

    >>> from mindspore import nn
    >>> is_weight_normed(weight_norm(nn.Dense(2, 2))), is_weight_normed(nn.Dense(2, 2))
    (True, False)
    >>> is_weight_normed(WeightNorm(nn.Dense(2, 2)), "weight")
    True
    """
    found = weight_norms(module)
    return bool(found) if name is None else name in found


def _as_type_tuple(cell_types: CellTypes) -> Optional[Tuple[type, ...]]:
    if cell_types is None:
        return None
    types = tuple(cell_types) if isinstance(cell_types, (list, tuple)) else (cell_types,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Cell)):
            raise TypeError(f"apply_weight_norm: cell_types must be Cell classes (e.g. nn.Dense), got {t!r}")
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

    Tied weights stay tied: when a selected Parameter is also held by other cells of ``net``
    (``head.weight = embed.embedding_table``), those cells get weight norm too, and all of them
    share one ``g`` and ``v`` (named after the cell the Parameter was created in), so they keep
    reading one weight and optimizers and checkpoints see each Parameter once. If one of the
    cells sharing it is outside ``net`` or excluded by ``cell_types``, this raises a
    ``ValueError`` naming them and changes nothing.

    >>> from mindspore import nn
    >>> net = nn.SequentialCell([nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 2)])
    >>> apply_weight_norm(net)
    ['0', '2']
    >>> net[0].weight_g.name
    '0.weight_g'
    >>> lm = nn.SequentialCell([nn.Embedding(10, 4), nn.Dense(4, 10, has_bias=False)])
    >>> lm[1].weight = lm[0].embedding_table  # tied output layer
    >>> apply_weight_norm(lm)
    ['0', '1']
    >>> lm[1].weight_v is lm[0].embedding_table_v, [p.name for p in lm.trainable_params()]
    (True, ['0.embedding_table_g', '0.embedding_table_v'])
    """
    types = _as_type_tuple(cell_types)
    if not isinstance(net, nn.Cell):
        raise TypeError(f"apply_weight_norm: net must be a mindspore.nn.Cell, got {type(net).__name__}")
    dim = _check_dim(dim, f"apply_weight_norm on {type(net).__name__}")
    eps = _check_eps(eps, f"apply_weight_norm on {type(net).__name__}")
    chosen = [(path, cell, name) for path, cell in net.cells_and_names() if _is_candidate(cell, name, types)]

    def make(cell: nn.Cell, key: str) -> WeightNormParametrization:
        return _make_parametrization(cell, key, dim, eps)

    def follow(cell: nn.Cell) -> bool:
        return types is None or issubclass(original_class(cell), types)

    return register_parametrizations(net, chosen, make, follow)


def remove_all_weight_norm(net: nn.Cell) -> List[str]:
    """Remove weight norm from every cell inside ``net`` (all its names); return their paths.

    :class:`WeightNorm` wrappers inside ``net`` are marked ``use_weight_norm = False``.

    >>> from mindspore import nn
    >>> net = nn.SequentialCell([nn.Dense(4, 8), nn.Dense(8, 2)])
    >>> apply_weight_norm(net)
    ['0', '1']
    >>> remove_all_weight_norm(net)
    ['0', '1']
    >>> sorted(name for name, _ in net.parameters_and_names())
    ['0.bias', '0.weight', '1.bias', '1.weight']
    """
    if not isinstance(net, nn.Cell):
        raise TypeError(f"remove_all_weight_norm: net must be a mindspore.nn.Cell, got {type(net).__name__}")
    cells = list(net.cells_and_names())
    normed = [(path, cell) for path, cell in cells if _own_weight_norms(cell)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StaleTrainerWarning)
        stale_paths = []
        for path, cell in normed:
            seen = len(caught)
            # A tied cell may have been folded already, together with the first cell of its group.
            for n in list(_own_weight_norms(cell)):
                remove_parametrization(cell, n)
            if any(issubclass(w.category, StaleTrainerWarning) for w in caught[seen:]):
                stale_paths.append(repr(path))
    stale = [w for w in caught if issubclass(w.category, StaleTrainerWarning)]
    for w in caught:
        if w not in stale:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if stale:
        # One warning for the network, naming its cells, not one per layer.
        warnings.warn(f"remove_all_weight_norm: in cell{'s' if len(stale_paths) > 1 else ''} "
                      f"{', '.join(stale_paths)}: {stale[0].message}", StaleTrainerWarning, stacklevel=2)
    for _, cell in cells:
        if isinstance(cell, WeightNorm) and not is_weight_normed(cell.module, cell.param_name):
            cell.use_weight_norm = False
    return [path for path, _ in normed]


class WeightNorm(nn.Cell):
    """A Cell that wraps ``module`` with weight norm on its Parameter ``name``.

    The wrapper form of :func:`weight_norm`, with the attributes of the original MindSpore
    request: ``param_g``, ``param_v``, ``use_weight_norm`` and ``remove_weight_norm()``.
    It calls ``module`` unchanged; the module itself computes its weight from ``g`` and
    ``v``, so the same code runs in PyNative and GRAPH_MODE. :func:`remove_weight_norm`,
    :func:`is_weight_normed` and :func:`weight_norms` accept the wrapper, and
    :mod:`ms_weightnorm.torch_io` maps a network of wrappers onto the PyTorch module it mirrors
    (the wrapper's ``module.`` level does not appear in PyTorch keys).

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
                f"WeightNorm({type(self.module).__name__}): weight norm was removed from "
                f"'{self.param_name}', so there is no {attr}; the folded weight is "
                f"module.{self.param_name}")
        return super().__getattr__(attr)

    def construct(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)

    def remove_weight_norm(self) -> None:
        """Fold the weight into ``module.<name>`` and stop normalizing (for inference)."""
        remove_weight_norm(self, self.param_name)
