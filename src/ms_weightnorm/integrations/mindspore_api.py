"""PyTorch's weight-norm entry points under MindSpore's names, where MindSpore lacks them.

Code ported from PyTorch (and ports such as mindone's SpeechT5, Mimi and SeamlessM4T) calls
``mindspore.nn.utils.weight_norm``, ``mindspore.nn.utils.parametrizations.weight_norm``,
``mindspore.mint.nn.utils.weight_norm`` and ``remove_weight_norm``; MindSpore 2.7-2.10 has none
of them. :func:`install` adds the missing ones, backed by this library, with PyTorch's
signatures and PyTorch's meaning of ``dim`` (translated for MindSpore's 4-D Conv1d weights by
:func:`ms_weightnorm.weight_norm.torch_dim`). A name MindSpore already has is never replaced.
:func:`uninstall` removes exactly what :func:`install` added.

>>> import mindspore
>>> from mindspore import nn
>>> from ms_weightnorm.integrations import mindspore_api
>>> added = mindspore_api.install()
>>> conv = mindspore.nn.utils.weight_norm(nn.Conv1d(2, 3, 5), dim=2)  # PyTorch's dim: the kernel axis
>>> conv.weight_g.shape
(1, 1, 1, 5)
>>> mindspore.nn.utils.remove_weight_norm(conv) is conv
True
>>> mindspore_api.uninstall() == added
True
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any, List, Optional, Tuple

from mindspore import nn

from ..weight_norm import remove_weight_norm as _remove_weight_norm
from ..weight_norm import torch_dim
from ..weight_norm import weight_norm as _weight_norm

__all__ = ["weight_norm", "remove_weight_norm", "install", "uninstall", "installed"]


def weight_norm(module: nn.Cell, name: str = "weight", dim: Optional[int] = 0, *,
                axis: Optional[int] = None) -> nn.Cell:
    """``torch.nn.utils.weight_norm(module, name="weight", dim=0)`` for MindSpore cells.

    ``dim`` counts PyTorch's axes (``dim=2`` on a Conv1d is its kernel axis). ``axis=`` is
    accepted for ``dim`` (mindone's SpeechT5 passes it). Applies weight norm in place and
    returns ``module``. Also installed as ``parametrizations.weight_norm``: in this library
    both layouts are the same Parameters (``<name>_g``, ``<name>_v``).

    >>> from mindspore import nn
    >>> weight_norm(nn.Dense(3, 2)).weight_g.shape
    (2, 1)
    """
    return _weight_norm(module, name, torch_axis(module, name, dim, axis, "weight_norm()"))


def torch_axis(module: nn.Cell, name: str, dim: Optional[int], axis: Optional[int], caller: str) -> Optional[int]:
    """The ``dim`` this library takes for PyTorch's ``dim=`` or its other name ``axis=`` (one of them).

    >>> from mindspore import nn
    >>> torch_axis(nn.Conv1d(2, 2, 3), "weight", 0, 2, "weight_norm()")
    3
    """
    if axis is not None:
        if dim not in (0, axis):
            raise TypeError(f"{caller} got dim={dim} and axis={axis}; pass one of them (axis= is another "
                            f"name for PyTorch's dim=)")
        dim = axis
    return torch_dim(module, dim, name)


def remove_weight_norm(module: nn.Cell, name: str = "weight") -> nn.Cell:
    """``torch.nn.utils.remove_weight_norm(module, name="weight")``: fold ``g`` and ``v`` back.

    >>> from mindspore import nn
    >>> sorted(n for n, _ in remove_weight_norm(weight_norm(nn.Dense(3, 2))).parameters_and_names())
    ['bias', 'weight']
    """
    return _remove_weight_norm(module, name)


# (module path, attribute) -> what install() added there; restored by uninstall() in reverse.
_ADDED: List[Tuple[str, str, Any]] = []


def _parametrizations_namespace(name: str) -> types.ModuleType:
    mod = types.ModuleType(name, "PyTorch's nn.utils.parametrizations names, added by ms_weightnorm")
    mod.weight_norm = weight_norm
    return mod


def _add(owner: Any, owner_path: str, attr: str, value: Any, added: List[Tuple[str, str, Any]]) -> Any:
    if hasattr(owner, attr):
        return getattr(owner, attr)
    setattr(owner, attr, value)
    added.append((owner_path, attr, value))
    if isinstance(value, types.ModuleType):
        sys.modules.setdefault(value.__name__, value)
    return value


def installed() -> List[str]:
    """The dotted names :func:`install` added and that are still in place."""
    return [f"{path}.{attr}" for path, attr, _ in _ADDED]


def install() -> List[str]:
    """Add the missing names; return all the names this module has added (idempotent).

    Added only where absent: ``mindspore.nn.utils.{weight_norm, remove_weight_norm,
    parametrizations.weight_norm}`` and ``mindspore.mint.nn.utils`` with the same names.
    """
    mint_nn = importlib.import_module("mindspore.mint.nn")
    nn_utils = importlib.import_module("mindspore.nn.utils")
    added: List[Tuple[str, str, Any]] = []
    for owner, path in ((nn_utils, "mindspore.nn.utils"),):
        _add(owner, path, "weight_norm", weight_norm, added)
        _add(owner, path, "remove_weight_norm", remove_weight_norm, added)
        params = _add(owner, path, "parametrizations", _parametrizations_namespace(f"{path}.parametrizations"), added)
        _add(params, f"{path}.parametrizations", "weight_norm", weight_norm, added)
    utils = _add(mint_nn, "mindspore.mint.nn", "utils", types.ModuleType(
        "mindspore.mint.nn.utils", "PyTorch's nn.utils weight-norm names, added by ms_weightnorm"), added)
    _add(utils, "mindspore.mint.nn.utils", "weight_norm", weight_norm, added)
    _add(utils, "mindspore.mint.nn.utils", "remove_weight_norm", remove_weight_norm, added)
    params = _add(utils, "mindspore.mint.nn.utils", "parametrizations",
                  _parametrizations_namespace("mindspore.mint.nn.utils.parametrizations"), added)
    _add(params, "mindspore.mint.nn.utils.parametrizations", "weight_norm", weight_norm, added)
    _ADDED.extend(added)
    return installed()


def _resolve(path: str) -> Any:
    head, *rest = path.split(".")
    obj = importlib.import_module(head)
    for part in rest:
        obj = getattr(obj, part)
    return obj


def uninstall() -> List[str]:
    """Remove what :func:`install` added (only where it is still the value added); return those names."""
    removed = []
    while _ADDED:
        path, attr, value = _ADDED.pop()
        try:
            owner = _resolve(path)
        except (AttributeError, ImportError):
            continue
        if getattr(owner, attr, None) is value:
            delattr(owner, attr)
            if isinstance(value, types.ModuleType) and sys.modules.get(value.__name__) is value:
                del sys.modules[value.__name__]
            removed.append(f"{path}.{attr}")
    return removed[::-1]  # in the order install() added them
