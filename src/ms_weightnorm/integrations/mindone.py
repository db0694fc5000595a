"""Make mindone's model ports use this library's weight norm: one call, :func:`install`.

mindone 0.5 (``mindone.transformers``, ``mindone.diffusers``) binds its own
``mindone.utils.weight_norm.WeightNorm``, a wrapper that assigns ``g * v / ||v||`` into the
layer's weight: ``g`` and ``v`` get no useful gradient, and some models call it and throw the
result away. :func:`install`, made before the models are built:

- replaces that class, by identity, everywhere it is bound (``mindone.utils``, the modeling
  modules that imported it, including under the name ``weight_norm``) with :class:`WeightNorm`,
  which keeps mindone's call forms (``WeightNorm(cell, dim=2)``, ``name=``, ``axis=``,
  ``.weight_norm_cell``, ``.remove_weight_norm()``, ``WeightNorm.remove_weight_norm(layer,
  name=)``) but applies weight norm in place on the layer, with PyTorch's ``dim``. So the
  vocoders whose ``apply_weight_norm()`` discards the result end up weight-normed as in torch;
- adds the MindSpore names mindone's SpeechT5, Mimi and SeamlessM4T call
  (:mod:`ms_weightnorm.integrations.mindspore_api`);
- teaches ``from_pretrained`` (transformers and diffusers) both PyTorch checkpoint layouts of
  weight norm, ``<name>_g``/``<name>_v`` and ``parametrizations.<name>.original0/1``.

It refuses an untested mindone release before changing anything. :func:`uninstall` puts
everything back (models built meanwhile keep this library's weight norm, which stays valid).
The core library never imports this module; it imports mindone only when called.
"""
from __future__ import annotations

import types
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from mindspore import Parameter, nn

from .._compat import own_params
from ..weight_norm import weight_norms
from ..weight_norm import remove_weight_norm as _remove_weight_norm
from ..weight_norm import weight_norm as _weight_norm
from . import mindspore_api
from ._rebind import Change, find_bindings, rebind, undo

__all__ = ["install", "uninstall", "is_installed", "WeightNorm", "TESTED_VERSIONS", "torch_checkpoint_keys"]

# The mindone releases this was tested against (tests_mindone/). Others are refused: a changed
# mindone could bind weight norm in places this does not know, and half-patching would hide that.
TESTED_VERSIONS: Tuple[str, ...] = ("0.5.0",)

# Where mindone's loaders build their PyTorch-to-MindSpore key maps.
_MAPPING_MODULES = ("mindone.transformers.modeling_utils", "mindone.diffusers.models.modeling_utils")
_MAPPING_FUNCTION = "_get_pt2ms_mappings"


def _remove_layer_weight_norm(layer: nn.Cell, name: str = "weight") -> None:
    _remove_weight_norm(layer, name)
    if not weight_norms(layer):
        vars(layer).pop("remove_weight_norm", None)


def _give_remover(layer: nn.Cell) -> None:
    # fastspeech2_conformer and seamless_m4t_v2 call layer.remove_weight_norm() on the layer they
    # passed to mindone's WeightNorm (the wrapper was thrown away): give the layer that method.
    if not hasattr(type(layer), "remove_weight_norm") and "remove_weight_norm" not in vars(layer):
        object.__setattr__(layer, "remove_weight_norm", types.MethodType(_remove_layer_weight_norm, layer))


class WeightNorm(nn.Cell):
    """mindone's ``WeightNorm(cell, dim=0)`` on this library: weight norm in place, torch's ``dim``.

    ``weight_norm_cell`` (mindone's attribute) is the layer itself, now computing its weight
    from ``weight_g`` and ``weight_v`` inside the traced computation. ``dim`` (or ``axis=``)
    counts PyTorch's axes (``dim=2`` on a Conv1d is its kernel axis), as in the torch code mindone
    ports. The wrapper calls the layer unchanged; code that drops it keeps a weight-normed layer.
    ``kernel_size``, ``stride`` and ``dilation`` are the layer's, as in mindone.

    >>> from mindspore import nn
    >>> conv = nn.Conv1d(4, 4, 5, group=2)
    >>> wrapper = WeightNorm(conv, dim=2)
    >>> wrapper.weight_norm_cell is conv, conv.weight_g.shape, wrapper.weight_g is conv.weight_g
    (True, (1, 1, 1, 5), True)
    >>> wrapper.remove_weight_norm()
    >>> sorted(n for n, _ in conv.parameters_and_names())
    ['weight']
    """

    def __init__(self, weight_norm_cell: nn.Cell, dim: Optional[int] = 0, name: str = "weight", *,
                 axis: Optional[int] = None):
        # auto_prefix=False: the wrapper adds no "weight_norm_cell." to the layer's Parameter names.
        # Where mindone drops the wrapper (apply_weight_norm), a prefix would give every layer the
        # same names and GRAPH_MODE refuses duplicate names; kept, the parent's prefix still applies.
        super().__init__(auto_prefix=False)
        layer = weight_norm_cell
        _weight_norm(layer, name, mindspore_api.torch_axis(layer, name, dim, axis, "WeightNorm"))
        _give_remover(layer)
        self.weight_norm_cell = layer
        self.dim = dim if axis is None else axis  # PyTorch's numbering, as mindone keeps it
        self.param_name = name
        self.use_weight_norm = True
        for attr in ("kernel_size", "stride", "dilation"):
            if hasattr(layer, attr):
                setattr(self, attr, getattr(layer, attr))

    @property
    def weight_g(self) -> Parameter:
        """The layer's magnitude Parameter (``weight_norm_cell.<name>_g``)."""
        return getattr(self.weight_norm_cell, f"{self.param_name}_g")

    @property
    def weight_v(self) -> Parameter:
        """The layer's direction Parameter (``weight_norm_cell.<name>_v``)."""
        return getattr(self.weight_norm_cell, f"{self.param_name}_v")

    def construct(self, *inputs, **kwargs):
        return self.weight_norm_cell(*inputs, **kwargs)

    def remove_weight_norm(self, name: Optional[str] = None) -> None:
        """Fold the weight back into a plain Parameter of the layer.

        Also works called on the class with a layer (``WeightNorm.remove_weight_norm(conv,
        name="weight")``), as mindone's UnivNet and Xcodec do.
        """
        if isinstance(self, WeightNorm):
            _remove_layer_weight_norm(self.weight_norm_cell, name or self.param_name)
            self.use_weight_norm = False
        else:
            _remove_layer_weight_norm(self, name or "weight")


def _torch_path(path: str) -> str:
    # mindone's wrapper adds a ".weight_norm_cell" level that the torch module does not have.
    return ".".join(p for p in path.split(".") if p != "weight_norm_cell")


def _reshaper(shape: Tuple[int, ...]) -> Callable[[Any], Any]:
    size = int(np.prod(shape, dtype=np.int64))

    def reshape(x):
        # Torch's Conv1d g/v lack MindSpore's size-1 axis. A value of another size is passed on
        # unchanged, so the loader reports the mismatch instead of a reshape error here.
        if tuple(x.shape) == shape or int(np.prod(tuple(x.shape), dtype=np.int64)) != size:
            return x
        return Parameter(x.reshape(shape), name=getattr(x, "name", None))
    return reshape


def torch_checkpoint_keys(model: nn.Cell) -> Dict[str, Tuple[str, Callable[[Any], Any]]]:
    """For every weight-normed Parameter of ``model``: PyTorch checkpoint key -> (MindSpore key, converter).

    Both PyTorch layouts map onto ``g`` and ``v``: ``<name>_g``/``<name>_v``
    (``torch.nn.utils.weight_norm``) and ``parametrizations.<name>.original0``/``original1``
    (``torch.nn.utils.parametrizations.weight_norm``). The converter reshapes Conv1d values to
    MindSpore's 4-D layout. This is the table :func:`install` adds to mindone's loaders.

    >>> from mindspore import nn
    >>> net = nn.SequentialCell([WeightNorm(nn.Conv1d(2, 3, 5))])
    >>> keys = torch_checkpoint_keys(net)
    >>> for key in sorted(keys):
    ...     print(key)
    0.parametrizations.weight.original0
    0.parametrizations.weight.original1
    0.weight_g
    0.weight_v
    >>> keys['0.parametrizations.weight.original0'][0]
    '0.weight_norm_cell.weight_g'
    """
    out: Dict[str, Tuple[str, Callable[[Any], Any]]] = {}
    for path, cell in model.cells_and_names():
        for name in weight_norms(cell):
            ms_prefix = f"{path}." if path else ""
            pt_path = _torch_path(path)
            pt_prefix = f"{pt_path}." if pt_path else ""
            for suffix, original in (("g", "original0"), ("v", "original1")):
                param = own_params(cell)[f"{name}_{suffix}"]
                target = (f"{ms_prefix}{name}_{suffix}", _reshaper(tuple(param.shape)))
                out[f"{pt_prefix}{name}_{suffix}"] = target
                out[f"{pt_prefix}parametrizations.{name}.{original}"] = target
    return out


def _with_torch_keys(original: Callable[[nn.Cell], dict]) -> Callable[[nn.Cell], dict]:
    def mappings(m):
        out = original(m)
        out.update(torch_checkpoint_keys(m))
        return out
    mappings.__wrapped__ = original
    mappings._ms_weightnorm = True
    return mappings


# What install() changed, to be undone by uninstall().
_CHANGES: List[Change] = []
_STATE: Dict[str, Any] = {}


def is_installed() -> bool:
    """Whether :func:`install` is in effect."""
    return bool(_STATE)


def _mindone_version() -> str:
    try:
        import mindone
    except ImportError as err:
        raise RuntimeError(f"ms_weightnorm.integrations.mindone.install(): mindone is not importable ({err}); "
                           f"install mindone {' or '.join(TESTED_VERSIONS)} first") from None
    return str(getattr(mindone, "__version__", "unknown"))


def install() -> List[str]:
    """Make mindone use this library's weight norm; return what was changed (idempotent).

    Call it before building models. Raises ``RuntimeError`` and changes nothing when the
    installed mindone is not a tested release (:data:`TESTED_VERSIONS`) or does not have the
    parts this patches. Importing ``mindone.transformers`` takes a while (about 800 modules).

    >>> from ms_weightnorm.integrations import mindone as integration
    >>> changed = integration.install()
    >>> import mindone.utils
    >>> mindone.utils.WeightNorm is integration.WeightNorm, integration.install() == changed
    (True, True)
    >>> bool(integration.uninstall()), mindone.utils.WeightNorm is integration.WeightNorm
    (True, False)
    """
    if _STATE:
        return list(_STATE["changed"])
    version = _mindone_version()
    if version not in TESTED_VERSIONS:
        raise RuntimeError(
            f"ms_weightnorm.integrations.mindone.install(): mindone {version} is not a tested release "
            f"(tested: {', '.join(TESTED_VERSIONS)}); nothing was changed. Install mindone "
            f"{TESTED_VERSIONS[-1]}, or apply weight norm by hand (ms_weightnorm.weight_norm) and load "
            f"with ms_weightnorm.load_torch_state_dict")
    import importlib
    # Check every part before changing any (no half-patching).
    try:
        source = importlib.import_module("mindone.utils.weight_norm")
        loaders = [importlib.import_module(m) for m in _MAPPING_MODULES]
    except ImportError as err:
        raise RuntimeError(f"ms_weightnorm.integrations.mindone.install(): mindone {version} lacks a module it "
                           f"patches ({err}); nothing was changed") from None
    old = getattr(source, "WeightNorm", None)
    if not (isinstance(old, type) and issubclass(old, nn.Cell)):
        raise RuntimeError(f"ms_weightnorm.integrations.mindone.install(): mindone.utils.weight_norm.WeightNorm "
                           f"is {old!r}, not mindone's wrapper Cell; nothing was changed")
    for mod in loaders:
        if not callable(getattr(mod, _MAPPING_FUNCTION, None)):
            raise RuntimeError(f"ms_weightnorm.integrations.mindone.install(): {mod.__name__} has no "
                               f"{_MAPPING_FUNCTION}; nothing was changed")
    changed = []
    # Every module namespace that bound mindone's class, under any name.
    for namespace, key, _, _, label in find_bindings(((old, WeightNorm),)):
        rebind(namespace, key, old, WeightNorm, _CHANGES)
        changed.append(label)
    for mod in loaders:
        original = getattr(mod, _MAPPING_FUNCTION)
        rebind(vars(mod), _MAPPING_FUNCTION, original, _with_torch_keys(original), _CHANGES)
        changed.append(f"{mod.__name__}.{_MAPPING_FUNCTION}")
    had_api = bool(mindspore_api.installed())
    api = mindspore_api.install()
    _STATE.update(changed=changed + ([] if had_api else api), api_ours=not had_api)
    return list(_STATE["changed"])


def uninstall() -> List[str]:
    """Undo :func:`install` (only where its values are still in place); return what was restored."""
    if not _STATE:
        return []
    restored = undo(_CHANGES)
    if _STATE.get("api_ours"):
        restored.extend(mindspore_api.uninstall())
    _STATE.clear()
    return restored
