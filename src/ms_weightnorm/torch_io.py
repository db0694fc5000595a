"""Move weights between PyTorch checkpoints and MindSpore networks, weight norm included.

PyTorch is never imported here. ``.pt``/``.pth``/``.bin`` files are read with a restricted,
bounded unpickler (see :mod:`ms_weightnorm._checkpoint`): only what a state dict needs is
admitted, anything else is refused before it runs. ``.safetensors`` files are validated by the
``safetensors`` package; data is read with ``pread``, never mapped. Loading reads tensors as descriptions first and
copies only those that go into the network; saving is atomic.

Names are matched cell by cell: the checkpoint key of a Parameter is the cell's path plus the
Parameter's PyTorch name. Three things differ between the frameworks and are mapped here:

- weight norm: PyTorch stores ``<p>.weight_g``/``<p>.weight_v`` (``torch.nn.utils.weight_norm``)
  or ``<p>.parametrizations.weight.original0``/``original1``
  (``torch.nn.utils.parametrizations.weight_norm``); this library stores ``<p>.weight_g`` and
  ``<p>.weight_v``. A weight-normed entry loads into a plain Parameter (folded to
  ``g * v / ||v||``) and a plain weight loads into a weight-normed cell (split into ``g = ||w||``
  and ``v = w``), whatever either side's ``dim``.
- spectral norm: PyTorch stores ``<p>.weight_orig``/``<p>.weight_u``/``<p>.weight_v``
  (``torch.nn.utils.spectral_norm``) or ``<p>.parametrizations.weight.original`` with
  ``<p>.parametrizations.weight.0._u``/``._v`` (``torch.nn.utils.parametrizations.spectral_norm``);
  this library stores ``<p>.weight_orig``, ``<p>.weight_u``, ``<p>.weight_v``. Into a plain or a
  weight-normed cell such an entry loads folded (``orig / sigma`` with the stored ``u``, ``v``);
  into a spectral-normed cell ``orig``, ``u``, ``v`` are copied exactly. A plain or weight-normed
  entry loads into a spectral-normed cell as ``orig = w``, with ``u``, ``v`` re-estimated from
  it (15 power steps from the cell's current ones).
- layouts: PyTorch's 3-D Conv1d/ConvTranspose1d weights ``(a, b, k)`` are ``(a, b, 1, k)`` in
  MindSpore; their ``g`` gets the same extra axis, so PyTorch's ``dim=2`` lands on axis 3.
- names: Embedding ``weight`` is ``embedding_table``; BatchNorm/InstanceNorm ``weight``,
  ``bias``, ``running_mean``, ``running_var`` are ``gamma``, ``beta``, ``moving_mean``,
  ``moving_variance`` (``num_batches_tracked`` has no counterpart and is dropped); LayerNorm
  and GroupNorm ``weight``/``bias`` are ``gamma``/``beta``.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from .functional import g_shape
from . import _layouts
from ._compat import own_params
from ._checkpoint import (
    CheckpointError,
    LazyTensor,
    UnsafeCheckpointError,
    guarded,
    write_safetensors,
)
from ._checkpoint.errors import clip, clip_message, fmt_path as _fmt_path, names as _names, short as _short
from ._checkpoint.limits import Limits, limits
from .checkpoint import KEY_STYLES, read_checkpoint
from ._checkpoint.torch_writer import BFloat16, write_torch_zip
from .parametrize import invalidate_compiled_graphs, original_class
from .spectral_norm import (WARMUP_ITERATIONS, SpectralNormParametrization, default_dim, matrix_shape,
                            np_matrix, np_power_iteration, np_sigma, spectral_norms)
from .weight_norm import WeightNorm, WeightNormParametrization, weight_norms

__all__ = [
    "LoadResult",
    "CheckpointError",
    "UnsafeCheckpointError",
    "load_torch_state_dict",
    "save_torch_state_dict",
    "save_torch_checkpoint",
    "to_torch_state_dict",
    "read_torch_checkpoint",
    "Limits",
    "limits",
]

PathLike = Union[str, "os.PathLike[str]"]


class LoadResult(NamedTuple):
    """What :func:`load_torch_state_dict` did not load.

    ``missing``: this network's Parameters (by path, MindSpore names) that got no value.
    ``unexpected``: keys of the checkpoint that were not used.
    """

    missing: List[str]
    unexpected: List[str]


# --- names -----------------------------------------------------------------------------------

def _renames(cell: nn.Cell) -> Dict[str, str]:
    return _layouts.renames(original_class(cell))


def _dropped(cell: nn.Cell) -> Tuple[str, ...]:
    return _layouts.dropped(original_class(cell))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass
class _Target:
    """One logical weight of the network: a plain Parameter, or a weight-normed pair (g, v)."""

    path: str                      # the cell's path in PyTorch terms (no WeightNorm wrapper level)
    cell: nn.Cell
    name: str                      # MindSpore attribute name (``weight``, ``gamma``...)
    torch_name: str                # its PyTorch name (``weight`` for ``gamma``...)
    wn: Optional[WeightNormParametrization]
    params: Tuple[Parameter, ...]  # (p,) or (g, v) or (orig, u, v)
    keys: Tuple[str, ...]          # their paths in the network
    sn: Optional[SpectralNormParametrization] = None

    @property
    def torch_key(self) -> str:
        return _join(self.path, self.torch_name)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple((self.params[0] if self.sn is not None else self.params[-1]).shape)

    @property
    def is_conv1d(self) -> bool:
        return issubclass(original_class(self.cell), _layouts.CONV1D)


def _targets(net: nn.Cell) -> List[_Target]:
    if not isinstance(net, nn.Cell):
        raise TypeError(f"expected a mindspore.nn.Cell, got {type(net).__name__}")
    out = []
    # A WeightNorm wrapper mirrors PyTorch's weight_norm(module): the module is the layer
    # itself there, so the wrapper's "module." level has no PyTorch key.
    torch_paths: Dict[str, Tuple[str, bool]] = {}  # MindSpore path -> (PyTorch path, is a wrapper)
    for ms_path, cell in net.cells_and_names():
        parent, _, leaf = ms_path.rpartition(".")
        parent_path, parent_wraps = torch_paths.get(parent, ("", False))
        path = "" if not ms_path else parent_path if parent_wraps and leaf == "module" else _join(parent_path, leaf)
        torch_paths[ms_path] = (path, isinstance(cell, WeightNorm))
        if isinstance(cell, WeightNorm):
            continue  # no Parameters of its own; weight_norms() would answer for its module
        renames = _renames(cell)
        wn = weight_norms(cell)
        wn_keys = {f"{k}_{s}": k for k in wn for s in WeightNormParametrization.suffixes}
        for name, p in wn.items():
            params = own_params(cell)
            g, v = params[f"{name}_g"], params[f"{name}_v"]
            out.append(_Target(path, cell, name, renames.get(name, name), p, (g, v),
                               (_join(ms_path, f"{name}_g"), _join(ms_path, f"{name}_v"))))
        for name, p in spectral_norms(cell).items():
            sn_names = tuple(f"{name}_{s}" for s in _SN_SUFFIXES)
            wn_keys.update((k, name) for k in sn_names)
            out.append(_Target(path, cell, name, renames.get(name, name), None,
                               tuple(own_params(cell)[k] for k in sn_names),
                               tuple(_join(ms_path, k) for k in sn_names), sn=p))
        for key, param in own_params(cell).items():
            if key in wn_keys or param is None:
                continue
            out.append(_Target(path, cell, key, renames.get(key, key), None, (param,), (_join(ms_path, key),)))
    return out


# --- numpy weight-norm math -----------------------------------------------------------------

def _norm(v: np.ndarray, axis: Optional[int], eps: float = 0.0) -> np.ndarray:
    """``||v||`` over every axis but ``axis`` (all axes when None), shaped like ``g``, float64."""
    v = v.astype(np.float64)
    if axis is None:
        return np.sqrt(np.sum(v * v) + eps)
    axes = tuple(i for i in range(v.ndim) if i != axis)
    return np.sqrt(np.sum(v * v, axis=axes, keepdims=True) + eps)


def _wn_axis(g: np.ndarray, v: np.ndarray, key: str) -> Optional[int]:
    """The kept axis a checkpoint's ``g`` implies for its ``v`` (None: the whole tensor).

    A kept axis of size 1 normalizes the whole tensor, so an all-ones ``g`` shape is read
    as "whole tensor": the resulting weight is the same.
    """
    if g.ndim == 0:
        return None
    if g.ndim != v.ndim or any(a not in (1, b) for a, b in zip(g.shape, v.shape)):
        raise _Problem(f"'{key}': g of shape {g.shape} does not fit v of shape {v.shape}")
    kept = [i for i, n in enumerate(g.shape) if n != 1]
    if len(kept) > 1:
        raise _Problem(f"'{key}': g of shape {g.shape} keeps more than one axis of v {v.shape}")
    return kept[0] if kept else None


class _Problem(Exception):
    """A key that cannot be loaded; collected, then reported together."""


class _ValueProblem(_Problem):
    """A key whose values would change silently if loaded (complex into real, overflow to inf):
    refused whatever ``strict``."""


def _fit(array: np.ndarray, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """``array`` in MindSpore's layout for a Parameter of ``shape``, or None if it does not fit."""
    if array.shape == shape:
        return array
    # PyTorch's 3-D Conv1d/ConvTranspose1d layout (a, b, k) is (a, b, 1, k) here.
    if array.ndim == 3 and len(shape) == 4 and shape[2] == 1 and array.shape == shape[:2] + shape[3:]:
        return array[:, :, None, :]
    return None


# --- reading sources --------------------------------------------------------------------------

def _is_torch_tensor(x: Any) -> bool:
    # Detected without importing torch: a caller who passes torch tensors has torch loaded.
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "numpy")


def _check_value(key: str, x: Any) -> None:
    """Raise the error :func:`_to_numpy` would, without converting anything."""
    if isinstance(x, (np.ndarray, Tensor, int, float, bool, np.generic)) or _is_torch_tensor(x):
        return
    _to_numpy(key, x)


def _to_numpy(key: str, x: Any) -> np.ndarray:
    if isinstance(x, LazyTensor):
        return x.array()
    if isinstance(x, np.ndarray):
        return x
    if _is_torch_tensor(x):
        t = x.detach().cpu()
        if "bfloat16" in str(t.dtype) or "float8" in str(t.dtype):
            t = t.float()  # numpy has no such dtype; float32 holds them exactly
        return t.numpy()
    if isinstance(x, Tensor):
        return x.astype(ms.float32).asnumpy() if x.dtype == ms.bfloat16 else x.asnumpy()
    if isinstance(x, (int, float, bool, np.generic)):
        return np.asarray(x)
    if isinstance(x, Mapping):
        raise TypeError(
            f"source[{_short(key, 120)}] is a {type(x).__name__}, not a tensor: the checkpoint nests its state "
            f"dict (a training checkpoint?). Pass the inner mapping, e.g. "
            f"load_torch_state_dict(net, read_torch_checkpoint(path)[{_short(key, 120)}])")
    raise TypeError(f"source[{_short(key)}] is a {type(x).__name__}, not an array or tensor")


def read_torch_checkpoint(path: PathLike, limits: Optional[Limits] = None) -> Any:
    """Read a PyTorch checkpoint without PyTorch; tensors come back as numpy arrays.

    ``.safetensors`` files give a dict of arrays. ``torch.save`` files (``.pt``, ``.pth``,
    ``.bin``; the zip format) give the saved object (often a dict, possibly nested, e.g.
    ``{"generator": state_dict}``), unpickled with an allowlist: tensors, storages,
    ``OrderedDict``, plain containers and scalars. A file that references anything else
    raises :class:`UnsafeCheckpointError` and nothing from it runs; a malformed, truncated or
    oversized file raises :class:`CheckpointError` (a ``ValueError``) naming it. bfloat16
    tensors are returned as float32 (exactly). Arrays are read-only (tensors sharing a storage
    share memory): copy one to modify it. ``limits`` (a :class:`Limits`) raises the reader's
    bounds for this call, for a trusted file that needs more; ``with limits(...)`` does the same
    for a block (``load_torch_state_dict`` included).

    >>> import os, tempfile, numpy as np
    >>> from ms_weightnorm._checkpoint import write_safetensors
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> write_safetensors(path, {"fc.weight": np.eye(2, dtype=np.float32)})
    >>> read_torch_checkpoint(path)["fc.weight"].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    if limits is not None:
        with _limits_context(limits):
            return _read(path, lazy=False)
    return _read(path, lazy=False)


_limits_context = limits


def _read(path: PathLike, lazy: bool) -> Any:
    return read_checkpoint(os.fspath(path), lazy=lazy)


class _Source(Mapping):
    """A checkpoint's entries, each converted to numpy only when the loader asks for it.

    Entries read from a file are :class:`LazyTensor` descriptions: one that is bigger than
    every Parameter of the network cannot be loaded anywhere, so instead of reading it the
    loader gets a zero-cost stand-in of its shape (``np.broadcast_to``), which the shape
    checks then report. So loading costs what the network needs, whatever the file holds.
    """

    def __init__(self, entries: Mapping[str, Any], limit: int, path: Optional[str] = None):
        self._entries = entries
        self._limit = limit
        self._path = path  # the file the entries come from: errors reading them name it
        self._done: Dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        found = self._done.get(key)
        if found is None:
            value = self._entries[key]
            if isinstance(value, LazyTensor):
                if value.size > self._limit:
                    found = np.broadcast_to(np.zeros((), value.dtype), value.shape)
                elif self._path is not None:
                    # Data is read (and CRC-checked) only now: behind the reader's exception boundary.
                    found = guarded(lambda _: value.array(), self._path)
                else:
                    found = value.array()
            else:
                found = _to_numpy(key, value)
            self._done[key] = found
        return found

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _source_arrays(source: Any, limit: int) -> _Source:
    if isinstance(source, (str, os.PathLike)):
        loaded = _read(source, lazy=True)
        if not isinstance(loaded, Mapping):
            raise TypeError(f"{_fmt_path(source)} holds a {type(loaded).__name__}, not a state dict")
        source, path = loaded, os.fspath(source)
    else:
        path = None
    if not isinstance(source, Mapping):
        raise TypeError(
            f"source must be a checkpoint path or a mapping of names to arrays, got {type(source).__name__}")
    for key, value in source.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be strings, got {_short(key)}")
        if not isinstance(value, (LazyTensor, np.ndarray)):
            _check_value(key, value)
    return _Source(source, limit, path)


# --- loading ----------------------------------------------------------------------------------

_NP_DTYPES = {
    ms.float16: np.float16, ms.float32: np.float32, ms.float64: np.float64,
    # bfloat16 has no numpy dtype: carry float32 and let MindSpore round (values from a
    # bfloat16 source are exact in float32, so nothing changes).
    ms.bfloat16: np.float32,
    ms.int8: np.int8, ms.int16: np.int16, ms.int32: np.int32, ms.int64: np.int64,
    ms.uint8: np.uint8, ms.uint16: np.uint16, ms.uint32: np.uint32, ms.uint64: np.uint64,
    ms.bool_: np.bool_,
}


def _np_dtype(param: Parameter) -> np.dtype:
    found = _NP_DTYPES.get(param.dtype)
    if found is None:
        raise _Problem(f"Parameter '{param.name}' has dtype {param.dtype}, which cannot be loaded from a state dict")
    return np.dtype(found)


_SN_SUFFIXES = SpectralNormParametrization.suffixes + SpectralNormParametrization.state_suffixes


class _Keys(NamedTuple):
    """The checkpoint keys that could hold one weight, per style of PyTorch's."""

    plain: Tuple[str]                # <p>.weight
    wn_old: Tuple[str, str]          # <p>.weight_g, <p>.weight_v  (torch.nn.utils.weight_norm)
    wn_new: Tuple[str, str]          # <p>.parametrizations.weight.original0/1
    sn_old: Tuple[str, str, str]     # <p>.weight_orig, _u, _v     (torch.nn.utils.spectral_norm)
    sn_new: Tuple[str, str, str]     # <p>.parametrizations.weight.original, .0._u, .0._v

    def all(self) -> Tuple[str, ...]:
        return tuple(k for keys in self for k in keys)

    def styles(self) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
        """``(kind, keys)`` for each style, kind being what :func:`_values_for` takes."""
        return (("plain", self.plain), ("wn", self.wn_old), ("wn", self.wn_new),
                ("sn", self.sn_old), ("sn", self.sn_new))

    def saved(self, weight_normed: bool, spectral_normed: bool, style: str) -> Tuple[str, ...]:
        """The keys :func:`to_torch_state_dict` writes in ``style`` (``"old"`` or ``"new"``)."""
        if spectral_normed:
            return self.sn_old if style == "old" else self.sn_new
        if weight_normed:
            return self.wn_old if style == "old" else self.wn_new
        return self.plain


def _candidate_keys(target: _Target) -> _Keys:
    """The checkpoint keys that could hold ``target``, by style (the table is the checkpoint tool's)."""
    prefix = _join(target.path, "")
    return _Keys(*(tuple(t.format(p=prefix, t=target.torch_name) for t in templates)
                   for _, _, templates in KEY_STYLES))


def _find(target: _Target, src: Mapping[str, np.ndarray]) -> Tuple[str, Tuple[str, ...]]:
    """Which of the checkpoint's styles holds ``target``: ('plain'|'wn'|'sn', keys), or ('', ())."""
    styles = [(kind, keys) for kind, keys in _candidate_keys(target).styles() if all(k in src for k in keys)]
    if len(styles) > 1:
        found = ", ".join(k for _, keys in styles for k in keys)
        raise _Problem(f"'{target.torch_key}' is in the checkpoint more than once ({found}); keep one style")
    return styles[0] if styles else ("", ())


def _what(target: _Target) -> str:
    """How messages name a weight: its PyTorch key, where it lives in the network, its shape."""
    return f"{target.torch_key} (MindSpore {', '.join(target.keys)}, shape {target.shape})"


def _in_cell(target: _Target, message: str) -> str:
    """``message`` naming the cell it concerns by its path in the network (and class)."""
    if message.startswith(_what(target)):
        return message  # already names the Parameters' paths
    where = f"cell '{target.path}'" if target.path else "the network itself"
    return f"{where} ({original_class(target.cell).__name__}), {_what(target)}: {message}"


def _compose(g: np.ndarray, v: np.ndarray, keys: Tuple[str, ...], axis: Optional[int]) -> np.ndarray:
    """The plain weight ``g * v / ||v||`` (float64) from a checkpoint's g and v, refusing complex ones."""
    return _real(g, keys[0]).astype(np.float64) * (_real(v, keys[1]).astype(np.float64) / _norm(v, axis))


def _values_for(target: _Target, kind: str, keys: Tuple[str, ...],
                src: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, ...]:
    """The arrays to put into ``target.params``, in MindSpore layout and dtype."""
    shape = target.shape
    what = _what(target)
    if kind == "sn":
        return _sn_values(target, keys, src, what)
    if kind == "plain":
        w = _fit(src[keys[0]], shape)
        if w is None:
            raise _Problem(f"{what}: checkpoint '{clip(keys[0])}' has shape {src[keys[0]].shape}")
        w = _real(w, keys[0])
        g = v = None
    else:
        g, v = src[keys[0]], src[keys[1]]
        v_fit = _fit(v, shape)
        if v_fit is None:
            raise _Problem(f"{what}: checkpoint '{keys[1]}' has shape {v.shape}")
        if v_fit.ndim != v.ndim and g.ndim == v.ndim:
            g = g[:, :, None, :]  # g follows v into MindSpore's Conv1d layout
        v = v_fit
        src_axis = _wn_axis(g, v, keys[0])
        w = None

    if target.sn is not None:
        if w is None:
            w = _compose(g, v, keys, src_axis)
        return _sn_split(target, w, keys[0])
    if target.wn is None:
        if w is None:
            w = _compose(g, v, keys, src_axis)
        values: Tuple[np.ndarray, ...] = (w,)
    else:
        want_g = g_shape(shape, target.wn.dim)
        if w is None and g.shape == want_g:
            values = (g, v)  # same split: copy exactly
        else:
            if w is None:
                w = _compose(g, v, keys, src_axis)
            values = (_norm(w, target.wn.dim, target.wn.eps).reshape(want_g), w)
    return tuple(_cast(a, p, k) for a, p, k in zip(values, target.params, keys * 2 if len(keys) == 1 else keys))


# Largest finite value of each float type a Parameter can have; a value that rounds past it
# becomes inf. bfloat16's: (2 - 2**-7) * 2**127.
_FLOAT_MAX = {ms.float16: float(np.finfo(np.float16).max), ms.float32: float(np.finfo(np.float32).max),
              ms.float64: float(np.finfo(np.float64).max), ms.bfloat16: (2 - 2 ** -7) * 2.0 ** 127}


def _real(x: np.ndarray, key: str) -> np.ndarray:
    """``x`` if it is real; complex values are refused (they never load into a real Parameter)."""
    if np.asarray(x).dtype.kind == "c":
        raise _ValueProblem(f"checkpoint '{clip(key)}' is complex ({x.dtype}); complex values are not loaded into "
                       f"a real Parameter (PyTorch would drop the imaginary part). Store x.real (or abs(x)) "
                       f"in the checkpoint if that is what you mean")
    return x


def _cast(x: np.ndarray, param: Parameter, key: str) -> np.ndarray:
    """``x`` as ``param``'s dtype, refusing the two casts that change values without a word.

    Complex into real is refused. A float value that is finite in the checkpoint but would
    overflow to inf in the Parameter's narrower float type (float64 1e6 into float16) is refused,
    naming the key. Everything else converts as numpy's ``astype`` and PyTorch's ``copy_`` do:
    floats round to the nearest representable value (subnormals and underflow to 0 included),
    NaN and inf stay, floats into ints truncate toward zero, ints wrap into narrower ints.
    """
    x = _real(np.asarray(x), key)
    dtype = _np_dtype(param)
    limit = _FLOAT_MAX.get(param.dtype)
    if limit is not None and x.dtype.kind in "fiu" and x.size:
        wide = x.astype(np.float64) if x.dtype.kind in "iu" else x
        finite = np.isfinite(wide)
        with np.errstate(over="ignore", invalid="ignore"):
            if param.dtype == ms.bfloat16:
                # Rounded to nearest, ties to even: from the max plus half its last place on, inf.
                overflow = np.abs(np.where(finite, wide, 0)) >= (2 - 2 ** -8) * 2.0 ** 127
            else:
                overflow = np.isinf(np.where(finite, wide, 0).astype(dtype))
        overflow &= finite
        if overflow.any():
            big = float(np.max(np.abs(wide[overflow])))
            raise _ValueProblem(f"checkpoint '{clip(key)}': {int(overflow.sum())} finite value(s) (largest magnitude "
                           f"{big:.6g}) overflow to inf in the Parameter's {param.dtype} (largest finite "
                           f"{limit:.6g}); nothing was converted. Rescale the weights, or give the Parameter a "
                           f"wider dtype")
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(dtype)


def _sn_split(target: _Target, w: np.ndarray, key: str) -> Tuple[np.ndarray, ...]:
    """(orig, u, v) for a spectral-normed ``target`` from a plain weight: u, v re-estimated."""
    sn = target.sn
    u0, v0 = (_param_numpy(p).astype(np.float64) for p in target.params[1:])
    u, v = np_power_iteration(np_matrix(w.astype(np.float64), sn.dim), u0, v0, WARMUP_ITERATIONS, sn.eps)
    return tuple(_cast(a, p, key) for a, p in zip((w, u, v), target.params))


def _sn_values(target: _Target, keys: Tuple[str, ...], src: Mapping[str, np.ndarray],
               what: str) -> Tuple[np.ndarray, ...]:
    """Values for ``target`` from a spectral-norm entry (orig, u, v) of the checkpoint."""
    shape = target.shape
    orig = _fit(src[keys[0]], shape)
    if orig is None:
        raise _Problem(f"{what}: checkpoint '{keys[0]}' has shape {src[keys[0]].shape}")
    u, v = src[keys[1]], src[keys[2]]
    for key, x in ((keys[1], u), (keys[2], v)):
        if x.ndim != 1 or x.dtype.kind != "f":
            raise _Problem(f"{what}: checkpoint '{key}' should be a float vector, got {x.dtype} {x.shape}")
    # The checkpoint does not record its dim: take the axis whose matrix view fits u and v,
    # preferring the cell's own dim, then PyTorch's default for the layer type.
    order = ([target.sn.dim] if target.sn is not None else []) + [default_dim(target.cell)] + list(range(len(shape)))
    dim = next((d for d in order if d < len(shape) and matrix_shape(shape, d) == (u.size, v.size)), None)
    if dim is None:
        raise _Problem(f"{what}: checkpoint '{keys[1]}' {u.shape} and '{keys[2]}' {v.shape} fit no "
                       f"matrix view of the weight")
    if target.sn is not None and dim == target.sn.dim:
        return tuple(_cast(a, p, k) for a, p, k in zip((orig, u, v), target.params, keys))
    sigma = np_sigma(_real(orig, keys[0]), u, v, dim)
    if not np.isfinite(sigma) or sigma == 0:
        raise _Problem(f"{what}: checkpoint '{keys[0]}' with its u, v gives sigma = {sigma}")
    w = orig.astype(np.float64) / sigma
    if target.sn is not None:
        return _sn_split(target, w, keys[0])
    if target.wn is None:
        return (_cast(w, target.params[0], keys[0]),)
    return _values_for(target, "plain", keys[:1], {keys[0]: w})


def load_torch_state_dict(net: nn.Cell, source: Union[PathLike, Mapping[str, Any]],
                          strict: bool = True) -> LoadResult:
    """Load a PyTorch state dict into ``net``, mapping weight norm, layouts and names.

    ``source`` is a path to a ``.safetensors``, ``.pt``, ``.pth`` or ``.bin`` file, or a
    mapping of names to numpy arrays (or torch tensors, or MindSpore tensors). PyTorch is
    not needed: ``.pt`` files are read by a restricted unpickler that refuses anything but
    tensors and plain containers (see :func:`read_torch_checkpoint`).

    Either weight-norm style of PyTorch (``<p>.weight_g/_v`` or
    ``<p>.parametrizations.weight.original0/1``) loads into a weight-normed cell of this
    library (copied exactly when both use the same ``dim``, otherwise folded and split
    again) or into a plain cell (folded to ``g * v / ||v||``); a plain weight loads into a
    weight-normed cell as ``g = ||w||``, ``v = w``. Conv1d/ConvTranspose1d weights and their
    ``g`` get MindSpore's extra axis 2. Embedding, BatchNorm, InstanceNorm, LayerNorm and
    GroupNorm names are mapped; BatchNorm's ``num_batches_tracked`` is dropped.

    With ``strict=True`` (the default) any missing Parameter, unused key or shape mismatch
    raises one ``ValueError`` listing all of them, and nothing is loaded. With
    ``strict=False`` everything that fits is loaded and the rest is returned: a key whose
    shape does not fit counts as missing (its Parameter) and unexpected (its key).

    Tied Parameters (one Parameter object reachable under two paths, e.g. an output layer
    sharing the embedding's table) take the value of whichever of their keys the checkpoint
    holds; if it holds several with different values, a ``ValueError`` names them and nothing
    is loaded, whatever ``strict``.

    A file is read as tensor descriptions first; only the tensors that go into the network
    are read and copied. A malformed file raises :class:`CheckpointError` (a ``ValueError``)
    naming it, and one that asks to run code raises :class:`UnsafeCheckpointError`; in both
    cases nothing is loaded.

    Values are converted to each Parameter's dtype (bfloat16 included). The network may
    have run already, in GRAPH_MODE or under ``ms.jit``: its compiled graphs are dropped so
    that the next call uses the loaded values.

    Returns ``LoadResult(missing, unexpected)``: the network's Parameter paths that got no
    value and the checkpoint keys that were not used.

    >>> import numpy as np
    >>> from mindspore import nn
    >>> from ms_weightnorm import weight_norm
    >>> net = nn.SequentialCell([weight_norm(nn.Dense(3, 2))])
    >>> g = np.array([[2.0], [1.0]], np.float32)
    >>> v = np.array([[3.0, 0.0, 4.0], [0.0, 1.0, 0.0]], np.float32)
    >>> state = {"0.weight_g": g, "0.weight_v": v, "0.bias": np.zeros(2, np.float32)}
    >>> load_torch_state_dict(net, state)
    LoadResult(missing=[], unexpected=[])
    >>> net[0].weight.asnumpy().astype(float).round(3).tolist()
    [[1.2, 0.0, 1.6], [0.0, 1.0, 0.0]]
    """
    targets = _targets(net)
    limit = max((int(np.prod(p.shape)) for t in targets for p in t.params), default=0)
    src = _source_arrays(source, limit)
    used: set = set()
    absent: List[_Target] = []   # weights with no key at all
    problems: List[str] = []     # keys found but unusable (shape, format)
    bad_params: List[str] = []
    bad_keys: set = set()
    # id(Parameter) -> (value, checkpoint key it came from): a tied Parameter appears once.
    values_of: Dict[int, Tuple[Parameter, np.ndarray, str]] = {}
    conflicts: List[str] = []
    value_errors: List[str] = []
    for target in targets:
        try:
            kind, keys = _find(target, src)
            if not kind:
                absent.append(target)
                continue
            values = _values_for(target, kind, keys, src)
        except _ValueProblem as err:
            value_errors.append(_in_cell(target, str(err)))
            continue
        except _Problem as err:
            problems.append(_in_cell(target, str(err)))
            bad_params.extend(target.keys)
            bad_keys.update(k for k in _candidate_keys(target).all() if k in src)
            continue
        used.update(keys)
        for param, value, key in zip(target.params, values, keys * len(target.params) if len(keys) == 1 else keys):
            seen = values_of.get(id(param))
            if seen is None:
                values_of[id(param)] = (param, value, key)
            elif not _same(seen[1], value):
                conflicts.append(f"'{clip(seen[2])}' and '{clip(key)}'")
    if value_errors:
        raise ValueError(clip_message(
            f"cannot load the state dict into {type(net).__name__}; nothing was loaded, whatever strict: "
            f"{len(value_errors)} key(s) would change value in the conversion: " + "; ".join(value_errors)))
    if conflicts:
        raise ValueError(clip_message(
            f"cannot load the state dict into {type(net).__name__}; nothing was loaded: these keys go to "
            f"one Parameter shared (tied) by several cells of the network, but the checkpoint gives them "
            f"different values: {_names(conflicts)}. Keep one of each pair in the checkpoint, or "
            f"untie the Parameters in the network."))
    # A tied weight is loaded through any of its paths: it is missing only if none has a key.
    missing = [k for t in absent if not all(id(p) in values_of for p in t.params) for k in t.keys]
    updates = [(param, value) for param, value, _ in values_of.values()]
    dropped = {_join(t.path, n) for t in targets for n in _dropped(t.cell)}
    unexpected = [k for k in src if k not in used and k not in dropped]
    if strict and (missing or unexpected or problems):
        lines = [f"cannot load the state dict into {type(net).__name__}; nothing was loaded:"]
        if problems:
            lines.append(f"  {len(problems)} mismatched:")
            lines += [f"    {clip(p, 300)}" for p in problems[:20]]
            if len(problems) > 20:
                lines.append(f"    ... and {len(problems) - 20} more")
        if missing:
            lines.append(f"  {len(missing)} missing (Parameters of the network that no key provides): "
                         + _names(missing))
        extra = [k for k in unexpected if k not in bad_keys]
        if extra:
            lines.append(f"  {len(extra)} unexpected (keys the network has no Parameter for): " + _names(extra))
        lines.append("  Fix the names/shapes, or pass strict=False to load what matches and get the rest back.")
        raise ValueError(clip_message("\n".join(lines)))
    # Everything is computed and converted: only now touch the network.
    for param, value in updates:
        param.set_data(Tensor(value, dtype=param.dtype))
    if updates:
        invalidate_compiled_graphs()
    return LoadResult(missing + bad_params, unexpected)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and values (NaN equal to NaN): two keys may then fill one tied Parameter."""
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))



# --- saving -----------------------------------------------------------------------------------

def _param_numpy(param: Parameter) -> np.ndarray:
    if param.dtype == ms.bfloat16:
        return param.astype(ms.float32).asnumpy()
    return param.asnumpy()


def _check_style(style: str) -> None:
    if style not in ("new", "old"):
        raise ValueError(f"style must be 'new' (parametrizations.<name>.original0/1) or 'old' "
                         f"(<name>_g/<name>_v), got {style!r}")


def _torch_entries(net: nn.Cell, style: str) -> Dict[str, Tuple[np.ndarray, bool]]:
    _check_style(style)
    out: Dict[str, Tuple[np.ndarray, bool]] = {}
    owners: Dict[str, str] = {}  # PyTorch key -> the network path it came from
    for target in _targets(net):
        arrays = [_param_numpy(p) for p in target.params]
        if target.is_conv1d:
            # MindSpore's (a, b, 1, k) Conv1d layout is PyTorch's (a, b, k); g follows.
            arrays = [a[:, :, 0, :] if a.ndim == 4 and a.shape[2] == 1 else a for a in arrays]
        keys = _candidate_keys(target).saved(target.wn is not None, target.sn is not None, style)
        for key, array, param, path in zip(keys, arrays, target.params, target.keys):
            if key in out and not np.array_equal(out[key][0], array):
                raise ValueError(clip_message(
                    f"two Parameters of the network, '{owners[key]}' and '{path}', map to the PyTorch key "
                    f"'{key}' with different values; rename one of the cells"))
            out[key] = (array, param.dtype == ms.bfloat16)
            owners.setdefault(key, path)
    return out


def to_torch_state_dict(net: nn.Cell, style: str = "new") -> Dict[str, np.ndarray]:
    """The PyTorch state dict of ``net`` as numpy arrays (PyTorch names, layouts, weight-norm keys).

    ``style="new"`` names weight-normed entries ``<p>.parametrizations.<name>.original0``
    (g) and ``original1`` (v), as ``torch.nn.utils.parametrizations.weight_norm`` does;
    ``style="old"`` names them ``<p>.<name>_g``/``<p>.<name>_v`` (``torch.nn.utils.weight_norm``).
    Spectral-normed entries are ``<p>.parametrizations.<name>.original`` and ``.0._u``/``.0._v``
    (new) or ``<p>.<name>_orig``/``_u``/``_v`` (old).
    bfloat16 Parameters come back as float32 (exactly). PyTorch's BatchNorm keeps its own
    ``num_batches_tracked`` when the key is absent, so none is written.

    >>> from mindspore import nn
    >>> from ms_weightnorm import weight_norm
    >>> net = nn.SequentialCell([weight_norm(nn.Conv1d(2, 3, 5))])
    >>> {k: v.shape for k, v in to_torch_state_dict(net).items()}
    {'0.parametrizations.weight.original0': (3, 1, 1), '0.parametrizations.weight.original1': (3, 2, 5)}
    """
    return {k: a for k, (a, _) in _torch_entries(net, style).items()}


_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def _torch_state(net: nn.Cell, style: str) -> "OrderedDict[str, Any]":
    """``net``'s PyTorch state dict for :func:`.write_torch_zip`: bfloat16 Parameters marked as such."""
    return OrderedDict((k, BFloat16(a) if bf16 else a) for k, (a, bf16) in _torch_entries(net, style).items())


def save_torch_state_dict(net: nn.Cell, path: PathLike, style: str = "new") -> List[str]:
    """Write ``net``'s weights to a file that PyTorch's ``load_state_dict`` accepts.

    The file's name picks the format: ``.pt``, ``.pth`` or ``.bin`` give ``torch.save``'s zip
    format (an ``OrderedDict`` of tensors; ``torch.load(path, weights_only=True)`` reads it,
    no pickle of code involved), ``.safetensors`` a safetensors file (load it with
    ``safetensors.torch.load_file(path)``). Keys, layouts and weight-norm names are those of
    the equivalent PyTorch model (see :func:`to_torch_state_dict` for ``style``); bfloat16
    Parameters are stored as bfloat16. The write is atomic, and the complete file is read
    back before it replaces an existing one. Returns the keys written. For a nested
    checkpoint (``{"generator": ..., "discriminator": ...}``) see :func:`save_torch_checkpoint`.

    >>> import os, tempfile
    >>> from mindspore import nn
    >>> folder = tempfile.mkdtemp()
    >>> net = nn.SequentialCell([nn.Dense(2, 3)])
    >>> save_torch_state_dict(net, os.path.join(folder, "model.safetensors"))
    ['0.weight', '0.bias']
    >>> save_torch_state_dict(net, os.path.join(folder, "model.pt"))
    ['0.weight', '0.bias']
    >>> sorted(read_torch_checkpoint(os.path.join(folder, "model.pt")))
    ['0.bias', '0.weight']
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        entries = _torch_entries(net, style)
        write_safetensors(path, {k: a for k, (a, _) in entries.items()},
                          bfloat16={k for k, (_, bf16) in entries.items() if bf16},
                          metadata={"format": "pt"})
        return list(entries)
    if not path.endswith(_TORCH_SUFFIXES):
        raise ValueError(f"{_fmt_path(path)}: name the file .pt, .pth or .bin (torch.save's format) or .safetensors")
    state = _torch_state(net, style)
    write_torch_zip(path, state)
    return list(state)


def _checkpoint_value(value: Any, where: str, style: str, depth: int = 0) -> Any:
    """One value of a nested checkpoint, ready for :func:`.write_torch_zip`."""
    if depth > 50:
        raise ValueError(f"{where}: containers nested deeper than 50")
    if isinstance(value, nn.Cell):
        return _torch_state(value, style)
    if isinstance(value, Mapping):
        out = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {_short(key)}")
            out[key] = _checkpoint_value(item, f"{where}[{_short(key)}]", style, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_checkpoint_value(item, f"{where}[{i}]", style, depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Tensor) and value.dtype == ms.bfloat16:
        return BFloat16(value.astype(ms.float32).asnumpy())
    if isinstance(value, LazyTensor):
        return BFloat16(value.array()) if value.stored == "bfloat16" else np.asarray(value.array())
    if _is_torch_tensor(value) and "bfloat16" in str(value.dtype):
        return BFloat16(_to_numpy(where, value))
    if isinstance(value, (Tensor, np.ndarray)) or _is_torch_tensor(value):
        return np.asarray(_to_numpy(where, value))
    if value is None or isinstance(value, (str, bool, int, float, np.generic, BFloat16)):
        return value
    raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint holds networks, state dicts, tensors, "
                    f"dicts, lists and str/int/float/bool/None")


def save_torch_checkpoint(path: PathLike, entries: Mapping[str, Any], style: str = "new") -> None:
    """Write a nested ``torch.save`` checkpoint: ``{"generator": state_dict, ...}``.

    Original repositories' inference scripts often ``torch.load`` such a file and pick one
    entry (HiFi-GAN: ``model.load_state_dict(torch.load(path)["generator"])``). Each value of
    ``entries`` may be a network (saved as its PyTorch state dict, as
    :func:`save_torch_state_dict` would; ``style`` as there), a mapping of names to tensors
    (numpy, MindSpore or torch; bfloat16 kept), or plain data (step counts, learning rates,
    nested dicts and lists of them). ``path`` must end in ``.pt``, ``.pth`` or ``.bin``; the
    write is atomic and read back before it replaces an existing file.

    >>> import os, tempfile
    >>> from mindspore import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "g_00100000.pt")
    >>> save_torch_checkpoint(path, {"generator": nn.SequentialCell([nn.Dense(2, 3)]), "steps": 100000})
    >>> ckpt = read_torch_checkpoint(path)
    >>> sorted(ckpt["generator"]), ckpt["steps"]
    (['0.bias', '0.weight'], 100000)
    """
    path = os.fspath(path)
    if not path.endswith(_TORCH_SUFFIXES):
        raise ValueError(f"{_fmt_path(path)}: a nested checkpoint is written in torch.save's format; name the file .pt, "
                         f".pth or .bin (safetensors holds one flat mapping of tensors: use "
                         f"save_torch_state_dict for that)")
    if not isinstance(entries, Mapping):
        raise TypeError(f"entries must be a mapping of names to networks, state dicts or plain values, got "
                        f"{type(entries).__name__}")
    _check_style(style)
    write_torch_zip(path, _checkpoint_value(entries, "entries", style))
