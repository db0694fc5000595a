"""Inspect and convert PyTorch checkpoints with numpy only: ``python -m ms_weightnorm.checkpoint``.

For porters, on any machine (MindSpore not needed, PyTorch never)::

    python -m ms_weightnorm.checkpoint inspect g_02500000.pt
    python -m ms_weightnorm.checkpoint convert g_02500000.pt generator.safetensors --key generator
    python -m ms_weightnorm.checkpoint convert model.safetensors model.pt

``inspect`` prints every tensor's key, shape and dtype, the weight-norm and spectral-norm
layouts the keys show (PyTorch's old ``weight_g``/``weight_v`` and ``weight_orig``/``_u``/``_v``,
its new ``parametrizations.weight.original0``/``original1`` and ``.original``/``.0._u``/``.0._v``),
and the total size. ``convert`` rewrites a checkpoint in the format its output name says
(``.safetensors``, or ``torch.save``'s zip format for ``.pt``/``.pth``/``.bin``), dtypes
(bfloat16 included) and values unchanged. Both read through the library's bounded reader
(:mod:`ms_weightnorm._checkpoint`): a file that asks to run code, or exceeds a bound, is
refused with a message naming it, and nothing from it runs.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np

from .._checkpoint import (CheckpointError, LazyTensor, guarded, read_safetensors, read_torch_zip,
                          write_safetensors)
from .._checkpoint.errors import clip, fmt_path, short
from .._checkpoint.files import open_regular
from .._checkpoint.torch_writer import BFloat16, write_torch_zip

__all__ = ["read_checkpoint", "KEY_STYLES", "detect_norms", "inspect", "convert", "main"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def _head(path: str) -> bytes:
    fd, _ = open_regular(path)  # refuses FIFOs and devices without blocking
    try:
        return os.pread(fd, 9, 0)
    finally:
        os.close(fd)


def read_checkpoint(path: str, lazy: bool = False) -> Any:
    """The object a ``.safetensors`` or ``torch.save`` file holds, told apart by content.

    ``lazy``: tensors are :class:`LazyTensor` descriptions (shape, dtype, ``stored``) and
    nothing is read until ``array()``. Raises :class:`CheckpointError` for anything else.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "w.bin")   # the name does not decide the format
    >>> write_safetensors(path, {"w": np.ones(2, np.float32)})
    >>> read_checkpoint(path)["w"].tolist()
    [1.0, 1.0]
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        # The path is the caller's, but it may be long or hold control characters: bounded, escaped.
        raise FileNotFoundError(errno.ENOENT, "no checkpoint file", fmt_path(path))
    head = guarded(_head, path)
    if _is_safetensors(path):
        return read_safetensors(path, lazy=lazy)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return read_torch_zip(path, lazy=lazy)
    reason = "neither a safetensors file nor a torch.save file"
    raise CheckpointError(
        f"{fmt_path(path)} is {reason}: expected a .safetensors, .pt, .pth or .bin checkpoint written "
        f"by PyTorch", path=path, reason=reason, rule="reader.format")


# --- what a checkpoint holds ----------------------------------------------------------------

def _is_tensor(x: Any) -> bool:
    return isinstance(x, (LazyTensor, np.ndarray))


def _leaves(obj: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``(dotted key, leaf)`` for every tensor or plain value, nested mappings and lists flattened."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix, obj


def _dtype_name(x: Any) -> str:
    return x.stored if isinstance(x, LazyTensor) else np.asarray(x).dtype.name


def _nbytes(x: Any) -> int:
    n = int(np.prod(x.shape, dtype=object)) if x.shape else 1
    return n * (2 if _dtype_name(x) == "bfloat16" else np.dtype(x.dtype).itemsize)


def _kept_axis(g_shape: Tuple[int, ...], v_shape: Tuple[int, ...]) -> str:
    """The weight-norm ``dim`` that g's shape implies for v (as PyTorch's ``dim=`` reads)."""
    if not g_shape or all(n == 1 for n in g_shape):
        return "dim=None (whole tensor)" if len(g_shape) in (0, len(v_shape)) else "g does not fit v"
    if len(g_shape) != len(v_shape) or any(a not in (1, b) for a, b in zip(g_shape, v_shape)):
        return "g does not fit v"
    kept = [i for i, n in enumerate(g_shape) if n != 1]
    return f"dim={kept[0]}" if len(kept) == 1 else "g does not fit v"


# PyTorch's key styles for one weight, as templates: ``{p}`` is the module's path with its
# trailing dot (empty at the root), ``{t}`` the weight's name. (kind, label, templates); the
# loader (:mod:`ms_weightnorm.torch_io`) reads the same table.
KEY_STYLES: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("plain", "plain", ("{p}{t}",)),
    ("wn", "weight norm, old layout (torch.nn.utils.weight_norm)", ("{p}{t}_g", "{p}{t}_v")),
    ("wn", "weight norm, new layout (torch.nn.utils.parametrizations.weight_norm)",
     ("{p}parametrizations.{t}.original0", "{p}parametrizations.{t}.original1")),
    ("sn", "spectral norm, old layout (torch.nn.utils.spectral_norm)", ("{p}{t}_orig", "{p}{t}_u", "{p}{t}_v")),
    ("sn", "spectral norm, new layout (torch.nn.utils.parametrizations.spectral_norm)",
     ("{p}parametrizations.{t}.original", "{p}parametrizations.{t}.0._u", "{p}parametrizations.{t}.0._v")),
)


def _parse(template: str, key: str) -> Optional[Tuple[str, str]]:
    """``(p, t)`` such that ``template`` gives ``key``, or None. Linear in the key's length (no
    regular expression: keys come from the file, and backtracking on a long one costs its square)."""
    middle, end = template[len("{p}"):].split("{t}")
    if not key.endswith(end):
        return None
    rest = key[:len(key) - len(end)]
    t = rest.rpartition(".")[2]
    before = rest[:len(rest) - len(t)]
    if not t or not before.endswith(middle):
        return None
    p = before[:len(before) - len(middle)]
    return (p, t) if p == "" or p.endswith(".") else None


def detect_norms(shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, List[Tuple[str, str]]]:
    """The weight-norm and spectral-norm entries among ``shapes`` (key -> shape), by layout.

    Returns ``{layout label: [(weight, detail)]}``: the weight's PyTorch name (``conv.weight``)
    and, for weight norm, the ``dim`` that g's shape implies.

    >>> found = detect_norms({"c.weight_g": (4, 1, 1), "c.weight_v": (4, 2, 3),
    ...                       "d.parametrizations.weight.original0": (1, 1),
    ...                       "d.parametrizations.weight.original1": (3, 5)})
    >>> for label, items in found.items():
    ...     print(label.split(" (")[0], items)
    weight norm, old layout [('c.weight', 'dim=0')]
    weight norm, new layout [('d.weight', 'dim=None (whole tensor)')]
    spectral norm, old layout []
    spectral norm, new layout []
    """
    styles = [style for style in KEY_STYLES if style[0] != "plain"]
    out: Dict[str, List[Tuple[str, str]]] = {label: [] for _, label, _ in styles}
    claimed = set()
    # Spectral norm first: its old layout's weight_v must not pair with a weight_g as weight norm's.
    for kind, label, templates in sorted(styles, key=lambda style: style[0] != "sn"):
        for key in shapes:
            found = _parse(templates[0], key)
            if found is None or key in claimed:
                continue
            keys = [t.format(p=found[0], t=found[1]) for t in templates]
            if not all(k in shapes and k not in claimed for k in keys):
                continue
            detail = _kept_axis(shapes[keys[0]], shapes[keys[1]]) if kind == "wn" else \
                f"u {shapes[keys[1]]}, v {shapes[keys[2]]}"
            out[label].append((found[0] + found[1], detail))
            claimed.update(keys)
    return out


def inspect(path: str, out: Optional[TextIO] = None) -> None:
    """Print what ``path`` holds: keys, shapes, dtypes, norm layouts, total size. Nothing is read
    but the file's structure (tensors stay :class:`LazyTensor` descriptions).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> write_torch_zip(path, {"fc.weight": np.ones((2, 3), np.float32), "step": 7})
    >>> inspect(path)  # doctest: +ELLIPSIS
    w.pt: torch.save zip format, ... bytes
    key        shape   dtype
    fc.weight  (2, 3)  float32
    step       7       int (not a tensor)
    <BLANKLINE>
    no weight norm or spectral norm found
    total: 1 tensor(s), 6 elements, 24 bytes of tensor data (0.0 MB)
    """
    out = sys.stdout if out is None else out
    path = os.fspath(path)
    obj = read_checkpoint(path, lazy=True)
    size = os.path.getsize(path)
    kind = "safetensors" if _is_safetensors(path) else "torch.save zip format"
    out.write(f"{os.path.basename(path)}: {kind}, {size} bytes\n")
    rows = []
    shapes: Dict[str, Tuple[int, ...]] = {}
    elements = nbytes = count = 0
    for key, leaf in _leaves(obj):
        key = clip(key, 200)
        if _is_tensor(leaf):
            shape = tuple(leaf.shape)
            shapes[key] = shape
            rows.append((key, str(shape), _dtype_name(leaf)))
            count += 1
            elements += int(np.prod(shape, dtype=object)) if shape else 1
            nbytes += _nbytes(leaf)
        else:
            rows.append((key, short(leaf), f"{type(leaf).__name__} (not a tensor)"))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("key", "shape"))]
    out.write(f"{'key'.ljust(widths[0])}  {'shape'.ljust(widths[1])}  dtype\n")
    for key, shape, dtype in rows:
        out.write(f"{key.ljust(widths[0])}  {shape.ljust(widths[1])}  {dtype}\n")
    out.write("\n")
    found = detect_norms(shapes)
    if not any(found.values()):
        out.write("no weight norm or spectral norm found\n")
    for label, items in found.items():
        if items:
            out.write(f"{label}: {len(items)} weight(s)\n")
            for weight, detail in items:
                out.write(f"  {weight}  {detail}\n")
    out.write(f"total: {count} tensor(s), {elements} elements, {nbytes} bytes of tensor data "
              f"({nbytes / 1e6:.1f} MB)\n")


def _select(obj: Any, key: Optional[str], path: str) -> Any:
    if key is None:
        return obj
    node = obj
    for part in key.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            have = sorted(k for k, v in node.items() if isinstance(v, Mapping)) if isinstance(node, Mapping) else []
            raise KeyError(f"{fmt_path(path)} has no entry {short(key)} (nested mappings here: {short(have)})")
        node = node[part]
    return node


def _materialize(obj: Any) -> Any:
    """The tree with each tensor read: numpy arrays, bfloat16 ones as :class:`BFloat16`."""
    if isinstance(obj, LazyTensor):
        return BFloat16(obj.array()) if obj.stored == "bfloat16" else obj.array()
    if isinstance(obj, Mapping):
        return type(obj)((k, _materialize(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) \
            else {k: _materialize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_materialize(v) for v in obj]
    return obj


def convert(src: str, dst: str, key: Optional[str] = None) -> int:
    """Rewrite ``src`` as ``dst``, the format chosen by ``dst``'s name; return the tensors written.

    ``key`` picks a nested entry (``generator``, or ``a/b`` for deeper ones) of a
    ``torch.save`` file; safetensors holds one flat mapping of tensors, so a nested checkpoint
    needs one to become a ``.safetensors`` file. dtypes and values are kept (bfloat16 too).

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> write_torch_zip(os.path.join(folder, "g.pt"), {"generator": {"w": np.ones(2, np.float32)}})
    >>> convert(os.path.join(folder, "g.pt"), os.path.join(folder, "g.safetensors"), key="generator")
    1
    >>> read_checkpoint(os.path.join(folder, "g.safetensors"))["w"].tolist()
    [1.0, 1.0]
    """
    src, dst = os.fspath(src), os.fspath(dst)
    obj = _select(read_checkpoint(src, lazy=True), key, src)
    if dst.endswith(".safetensors"):
        if not isinstance(obj, Mapping):
            raise TypeError(f"{src} holds a {type(obj).__name__}; safetensors holds a mapping of names to tensors")
        nested = sorted(str(k) for k, v in obj.items() if isinstance(v, Mapping))
        if nested:
            raise ValueError(f"{src} is a nested checkpoint (entries {short(nested)} are mappings); safetensors "
                             f"holds one flat mapping of tensors: pick one with --key, e.g. --key {nested[0]}")
        other = [str(k) for k, v in obj.items() if not _is_tensor(v)]
        if other:
            raise ValueError(f"{src}: entries {short(other)} are not tensors, and safetensors holds tensors only")
        # Tensors are read (and CRC-checked) only now: behind the reader's exception boundary.
        arrays = guarded(lambda _: {k: v.array() for k, v in obj.items()}, src)
        write_safetensors(dst, arrays, bfloat16={k for k, v in obj.items() if v.stored == "bfloat16"},
                          metadata={"format": "pt"})
        return len(arrays)
    if not dst.endswith(TORCH_SUFFIXES):
        raise ValueError(f"{dst!r}: name the output .safetensors, .pt, .pth or .bin")
    tree = guarded(lambda _: _materialize(obj), src)  # tensors are read (and CRC-checked) here
    if _is_safetensors(src):
        tree = OrderedDict(tree)  # a state dict, as torch's own state_dict() returns
    write_torch_zip(dst, tree)
    return sum(1 for _, leaf in _leaves(tree) if isinstance(leaf, (np.ndarray, BFloat16)))


def _is_safetensors(path: str) -> bool:
    # By content, not by name: .bin and .ckpt are used for both formats in the wild.
    return path.endswith(".safetensors") or guarded(_head, path)[8:9] == b"{"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (0, or 1 with a message on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m ms_weightnorm.checkpoint",
        description="Inspect or convert PyTorch checkpoints (.pt, .pth, .bin, .safetensors) with numpy only; "
                    "nothing in a file is run.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_inspect = sub.add_parser("inspect", help="print keys, shapes, dtypes, norm layouts and total size")
    p_inspect.add_argument("file")
    p_convert = sub.add_parser("convert", help="rewrite a checkpoint in the format OUT's name says")
    p_convert.add_argument("input")
    p_convert.add_argument("output")
    p_convert.add_argument("--key", help="a nested entry to convert alone, e.g. generator (a/b for deeper ones)")
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            inspect(args.file)
        else:
            n = convert(args.input, args.output, args.key)
            print(f"wrote {n} tensor(s) to {args.output}")
    except (CheckpointError, OSError, ValueError, TypeError, KeyError) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {text}", file=sys.stderr)
        return 1
    return 0
