"""safetensors files: read (header validated by the reference implementation, then bounded here) and write."""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from . import limits
from .atomic import atomic_write
from .bf16 import float32_to_bfloat16_bits
from .errors import CheckpointError, clip
from .files import map_file, open_regular
from .tensors import LazyTensor, checked_numel, element_dtype, flat_tensor

_ST_DTYPES: Dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bfloat16",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "|i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "|u1",
    "BOOL": "|b1", "C64": "<c8",
}
_NP_TO_ST = {np.dtype(v).str: k for k, v in _ST_DTYPES.items() if v != "bfloat16"}


def read_safetensors(path: str, lazy: bool = False) -> Dict[str, Any]:
    """Read a ``.safetensors`` file: read-only numpy arrays (BF16 widened to float32, exactly).

    The header is validated by the ``safetensors`` package (the reference implementation:
    contiguous offsets covering the data exactly, unique keys, integer shapes, a 100 MB
    header limit); shapes are then bounded here (at most 32 dimensions, an element count
    numpy can describe). The data is memory-mapped, so arrays are views of the file until
    copied; with ``lazy`` the values are :class:`LazyTensor` descriptions and nothing is read.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> write_safetensors(path, {"w": np.arange(3, dtype=np.float32)}, bfloat16={"w"})
    >>> read_safetensors(path)["w"].tolist()
    [0.0, 1.0, 2.0]
    """
    fd, size = open_regular(path)
    try:
        head = os.pread(fd, 8, 0)
        if len(head) != 8:
            raise CheckpointError(f"{path} is not a safetensors file (shorter than 8 bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > limits.SAFETENSORS_MAX_HEADER or 8 + header_len > size:
            raise CheckpointError(
                f"{path} is not a valid safetensors file: header length {header_len} exceeds the file "
                f"({size} bytes) or the 100 MB limit")
        # Validate the very file we hold open (not whatever the path names a moment later).
        proc = f"/proc/self/fd/{fd}"
        specs = header_specs(proc if os.path.exists(proc) else path, path)
        data = map_file(fd, size)
    finally:
        os.close(fd)
    return tensors_from(data, specs, 8 + header_len, path, lazy)


def header_specs(open_path: str, path: str):
    """``(key, dtype tag, shape)`` of every tensor, in data order, as the reference implementation reads them."""
    import safetensors  # a MindSpore dependency; imported here to keep this module's import light

    try:
        with safetensors.safe_open(open_path, framework="numpy") as f:
            # The numpy backend refuses BF16 and does not expose offsets, so the data is read
            # here: safetensors has checked that the offsets are contiguous, in ``offset_keys``
            # order, and cover the data exactly, so each tensor's offset is the sum of the
            # sizes before it.
            return [(k, f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.offset_keys()]
    except Exception as err:  # SafetensorError, and whatever else the binding raises
        raise CheckpointError(f"{path} is not a valid safetensors file: {clip(str(err))}") from None


def tensors_from(data: memoryview, specs, offset: int, path: str, lazy: bool) -> Dict[str, Any]:
    """The tensors ``specs`` describes, laid out from ``offset`` of ``data``, each slice checked."""
    size = len(data)
    out: Dict[str, Any] = {}
    for key, tag, shape in specs:
        code = _ST_DTYPES.get(tag)
        if code is None:
            raise CheckpointError(f"{path}: tensor '{clip(key)}' has dtype {clip(str(tag))}, which is not supported here")
        if len(shape) > limits.MAX_DIMS:
            raise CheckpointError(f"{path}: tensor '{clip(key)}' has {len(shape)} dimensions (at most "
                                  f"{limits.MAX_DIMS} allowed)")
        numel = checked_numel(shape, path, f"tensor '{clip(key)}'")
        nbytes = numel * element_dtype(code).itemsize
        if offset + nbytes > size:
            raise CheckpointError(f"{path}: tensor '{clip(key)}' runs past the end of the file")
        out[key] = flat_tensor(data[offset:offset + nbytes], code, shape, nbytes, path, key)
        offset += nbytes
    if offset != size:
        raise CheckpointError(f"{path}: the tensors end at byte {offset} of {size}; the file changed while "
                              f"being read")
    return out if lazy else {k: t.array() for k, t in out.items()}


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], bfloat16=frozenset(),
                      metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write numpy arrays to ``path`` in the safetensors format; keys in ``bfloat16`` are stored as BF16.

    Written here rather than with ``safetensors.serialize`` because numpy has no bfloat16
    dtype and that function's signature changed across versions (dicts of bytes, then raw
    pointers); the format is a JSON header and the raw bytes, and the tests read every file
    written here back with the reference implementation. The write is atomic (see
    :func:`atomic_write`).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> write_safetensors(path, {"w": np.ones(2, np.float32)})
    >>> read_safetensors(path)["w"].tolist()
    [1.0, 1.0]
    """
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    chunks = []
    offset = 0
    for key, array in tensors.items():
        array = np.asarray(array)
        if key in bfloat16:
            blob, tag = float32_to_bfloat16_bits(array.astype(np.float32)), "BF16"
        else:
            blob = array.astype(array.dtype.newbyteorder("<")) if array.dtype.byteorder == ">" else array
            tag = _NP_TO_ST.get(blob.dtype.str)
            if tag is None:
                raise TypeError(f"tensor '{key}' has dtype {array.dtype}, which safetensors cannot store")
        raw = np.ascontiguousarray(blob).tobytes()
        header[key] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format aligns the data section to 8 bytes
    atomic_write(path, [struct.pack("<Q", len(text)), text, *chunks])
