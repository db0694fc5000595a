"""Where MindSpore's layers differ from PyTorch's in layout and names: one table, read everywhere.

- **Conv1d's extra axis.** ``nn.Conv1d`` and ``nn.Conv1dTranspose`` keep a 4-D weight
  ``(a, b, 1, k)`` where PyTorch's Conv1d/ConvTranspose1d keep ``(a, b, k)``: PyTorch's
  ``dim=2`` is axis 3 here, and a checkpoint's ``g`` needs the same extra axis. Every other
  layer (``mint.nn.Conv1d`` included) has PyTorch's layout.
- **Transposed convolutions** (``nn.Conv1d/2d/3dTranspose`` and ``mint.nn.ConvTranspose1d/2d/3d``)
  store ``(in, out/group, ...)``: their output features are axis 1 (PyTorch's ``dim=None``
  default for spectral norm, and data-dependent init's ``g`` axis).
- **Renamed Parameters.** Embedding's ``weight`` is ``embedding_table``; BatchNorm and
  InstanceNorm keep ``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` for PyTorch's
  ``weight``, ``bias``, ``running_mean``, ``running_var``, and have no ``num_batches_tracked``;
  LayerNorm and GroupNorm keep ``gamma``/``beta``.

Classes are matched with ``issubclass`` on a cell's original class (see
:func:`ms_weightnorm.parametrize.original_class`), so user subclasses count too.
"""
from __future__ import annotations

from typing import Dict, Tuple

from mindspore import nn

from ._compat import private_nn_class

CONV1D: Tuple[type, ...] = (nn.Conv1d, nn.Conv1dTranspose)


def _mint_classes(*names: str) -> Tuple[type, ...]:
    # mint's layers are looked up by name: not every MindSpore build has them.
    try:
        from mindspore import mint
    except ImportError:  # pragma: no cover - mint missing
        return ()
    return tuple(c for c in (getattr(mint.nn, n, None) for n in names) if isinstance(c, type))


TRANSPOSED: Tuple[type, ...] = (nn.Conv1dTranspose, nn.Conv2dTranspose, nn.Conv3dTranspose) + \
    _mint_classes("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")


def _norm_classes(*names: str) -> Tuple[type, ...]:
    found = []
    for name in names:
        cls = getattr(nn, name, None)
        if cls is None:
            # Private bases (``_BatchNorm``) also cover user subclasses.
            cls = private_nn_class("normalization", name)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


BATCH_NORMS = _norm_classes("_BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
                            "_InstanceNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")
_BN_RENAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
               "moving_variance": "running_var"}

# (classes, {MindSpore name: PyTorch name}), first match wins.
RENAMES: Tuple[Tuple[Tuple[type, ...], Dict[str, str]], ...] = (
    ((nn.Embedding,), {"embedding_table": "weight"}),
    (BATCH_NORMS, _BN_RENAMES),
    (_norm_classes("LayerNorm", "GroupNorm"), {"gamma": "weight", "beta": "bias"}),
)
# PyTorch buffers with no MindSpore counterpart, per class: dropped when loading.
DROPPED: Tuple[Tuple[Tuple[type, ...], Tuple[str, ...]], ...] = (
    (BATCH_NORMS, ("num_batches_tracked",)),
)


def renames(cls: type) -> Dict[str, str]:
    """``{MindSpore name: PyTorch name}`` for a layer class (empty when the names agree).

    >>> renames(nn.Embedding)
    {'embedding_table': 'weight'}
    """
    for classes, table in RENAMES:
        if classes and issubclass(cls, classes):
            return table
    return {}


def dropped(cls: type) -> Tuple[str, ...]:
    """PyTorch buffers of a layer class that MindSpore has no counterpart for.

    >>> dropped(nn.BatchNorm1d), dropped(nn.Dense)
    (('num_batches_tracked',), ())
    """
    return tuple(n for classes, names in DROPPED if classes and issubclass(cls, classes) for n in names)


def has_extra_axis(cls: type, weight) -> bool:
    """Whether ``weight`` of a layer of ``cls`` has MindSpore's extra Conv1d axis (4-D, axis 2 of size 1).

    >>> has_extra_axis(nn.Conv1d, nn.Conv1d(2, 3, 5).weight), has_extra_axis(nn.Conv2d, nn.Conv2d(2, 3, 5).weight)
    (True, False)
    """
    return issubclass(cls, CONV1D) and weight is not None and weight.ndim == 4 and weight.shape[2] == 1


def output_axis(cls: type) -> int:
    """The axis of a layer's weight that holds its output features: 1 for transposed convolutions, else 0.

    >>> output_axis(nn.Dense), output_axis(nn.Conv2dTranspose)
    (0, 1)
    """
    return 1 if issubclass(cls, TRANSPOSED) else 0
