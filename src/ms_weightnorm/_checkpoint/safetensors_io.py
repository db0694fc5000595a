"""safetensors files: read (header validated by the reference implementation, then bounded here) and write."""
from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from . import limits
from .atomic import atomic_write
from .bf16 import float32_to_bfloat16_bits
from .errors import CheckpointError, clip, error, fmt, fmt_path
from .files import Bytes, FileBytes
from .tensors import LazyTensor, checked_numel, element_dtype, flat_tensor

_ST_DTYPES: Dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bfloat16",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "|i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "|u1",
    "BOOL": "|b1", "C64": "<c8",
}
_ITEMSIZE = {code: element_dtype(code).itemsize for code in _ST_DTYPES.values()}
_NP_TO_ST = {np.dtype(v).str: k for k, v in _ST_DTYPES.items() if v != "bfloat16"}
# The reference writer's order of dtypes (its Dtype enum, ascending): it writes tensors by this
# order descending, then by name, so that every tensor starts at a multiple of its alignment.
_DTYPE_RANK = {tag: i for i, tag in enumerate(
    ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"])}
# The smallest header entry a tensor can have: '"":{"dtype":"U8","shape":[],"data_offsets":[0,0]}'
# (49 bytes). So the header's bound (100,000,000 bytes, checked before anything is parsed) bounds
# the tensor count: at most 2,040,816 tensors.
MIN_ENTRY = len('"":{"dtype":"U8","shape":[],"data_offsets":[0,0]}')


def read_safetensors(path: str, lazy: bool = False) -> Dict[str, Any]:
    """Read a ``.safetensors`` file: read-only numpy arrays (BF16 widened to float32, exactly).

    The header is validated by the ``safetensors`` package (the reference implementation:
    contiguous offsets covering the data exactly, integer shapes, a 100 MB header) on a private
    copy of the header, so the reference's memory map never covers a file someone else can
    truncate; shapes are then bounded here (at most 32 dimensions, an element count numpy can
    describe) and duplicate keys refused. The data is read with ``pread`` into private memory;
    with ``lazy`` the values are :class:`LazyTensor` descriptions and nothing is read until asked.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> write_safetensors(path, {"w": np.arange(3, dtype=np.float32)}, bfloat16={"w"})
    >>> read_safetensors(path)["w"].tolist()
    [0.0, 1.0, 2.0]
    """
    data = FileBytes(path)
    try:
        out = read_bytes(data, path, lazy)
        data.check_unchanged()
        return out
    finally:
        if not lazy:
            data.close()


def read_bytes(data: Bytes, path: str, lazy: bool) -> Dict[str, Any]:
    """The tensors of the safetensors file whose bytes ``data`` reads."""
    lim = limits.current()
    size = len(data)
    if size < 8:
        raise error(path, "not a safetensors file (shorter than 8 bytes)", "safetensors.too_short")
    (header_len,) = struct.unpack("<Q", data.read(0, 8))
    if header_len > lim.safetensors_max_header or 8 + header_len > size:
        raise error(path, f"not a valid safetensors file: header length {header_len} exceeds the file ({size} "
                          f"bytes) or the {lim.safetensors_max_header}-byte limit", "safetensors.header_length")
    header = bytes(data.read(8, header_len))
    validate_header(header, size, path)
    specs = _specs(header, size - 8 - header_len, path)
    start = 8 + header_len
    if lazy:
        return {key: flat_tensor(_reader(data, start + begin, nbytes), code, shape, nbytes, path, key)
                for key, code, shape, begin, nbytes in specs}
    body = data.read(start, size - start)  # one read of the data section; tensors are views of it
    return {key: flat_tensor(_slicer(body, begin, nbytes), code, shape, nbytes, path, key).array()
            for key, code, shape, begin, nbytes in specs}


def _reader(data: Bytes, offset: int, nbytes: int):
    def read() -> memoryview:
        got = data.read(offset, nbytes)
        data.check_unchanged()
        return got
    return read


def _slicer(body: memoryview, begin: int, nbytes: int):
    return lambda: body[begin:begin + nbytes]


def validate_header(header: bytes, size: int, path: str) -> None:
    """The reference implementation's verdict on ``header`` for a file of ``size`` bytes.

    ``safetensors.safe_open`` maps the file it opens. It is given a private file holding the
    8-byte length, the header, and a hole for the data (sparse: no memory, nothing read), so
    the reference's rules apply while no mapping ever covers the caller's file.
    """
    import safetensors  # a MindSpore dependency; imported here to keep this module's import light

    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("ms_weightnorm_safetensors_header", getattr(os, "MFD_CLOEXEC", 0))
        private = f"/proc/self/fd/{fd}"
        temporary = None
    else:
        fd, temporary = tempfile.mkstemp(suffix=".safetensors")
        private = temporary
    try:
        os.write(fd, struct.pack("<Q", len(header)))
        written = 0
        view = memoryview(header)
        while written < len(header):
            written += os.write(fd, view[written:])
        os.ftruncate(fd, size)
        try:
            with safetensors.safe_open(private, framework="numpy"):
                pass
        except Exception as err:  # SafetensorError, and whatever else the binding raises
            raise error(path, f"not a valid safetensors file: {clip(str(err))}", "safetensors.header") from None
    finally:
        os.close(fd)
        if temporary is not None:
            os.unlink(temporary)


def _specs(header: bytes, data_size: int, path: str) -> List[Tuple[str, str, Tuple[int, ...], int, int]]:
    """``(key, code, shape, offset, nbytes)`` of every tensor, in data order, each checked here too."""
    lim = limits.current()
    try:
        parsed = json.loads(header)
    except (ValueError, RecursionError):
        raise error(path, "not a valid safetensors file: its header is not JSON", "safetensors.header") from None
    if type(parsed) is not dict:
        raise error(path, "not a valid safetensors file: its header is not a JSON object", "safetensors.header")
    parsed.pop("__metadata__", None)
    # json keeps the last of duplicate keys: a repeated key shows as bytes that no entry covers.
    specs = []
    for key, entry in parsed.items():
        try:
            tag, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise error(path, f"tensor '{clip(key)}' has a malformed header entry", "safetensors.header") from None
        code = _ST_DTYPES.get(tag) if type(tag) is str else None
        if code is None:
            raise error(path, f"tensor '{clip(key)}' has dtype {fmt(tag)}, which is not supported here",
                        "safetensors.dtype")
        if len(shape) > lim.max_dims:
            raise error(path, f"tensor '{clip(key)}' has {len(shape)} dimensions (at most {lim.max_dims} allowed)",
                        "safetensors.dims")
        if any(type(n) is not int or n < 0 for n in shape):
            raise error(path, f"tensor '{clip(key)}' has shape {fmt(shape)}, not of non-negative ints",
                        "safetensors.shape")
        nbytes = checked_numel(shape, path, key=key) * _ITEMSIZE[code]
        if type(begin) is not int or type(end) is not int or end - begin != nbytes:
            raise error(path, f"tensor '{clip(key)}' has data offsets that do not fit its shape",
                        "safetensors.offsets")
        specs.append((key, code, shape, begin, nbytes))
    specs.sort(key=lambda s: (s[3], s[3] + s[4]))
    at = 0
    for key, _, _, begin, nbytes in specs:
        if begin != at:
            raise error(path, f"tensor '{clip(key)}' starts at byte {begin} of the data, expected {at} (a gap, an "
                              f"overlap or a repeated key)", "safetensors.offsets")
        at += nbytes
    if at != data_size:
        raise error(path, f"the tensors end at byte {at} of {data_size} bytes of data", "safetensors.offsets")
    return specs


def check_keys(path: str, keys: Any, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Refuse, before anything is written, keys a safetensors file cannot hold (``ValueError``/``TypeError``).

    ``"__metadata__"`` is the header's metadata entry, and keys are stored as UTF-8, which a
    string holding a lone surrogate has no encoding in: a file written with either would be
    unreadable, here and by ``safetensors`` alike.
    """
    for key in keys:
        if type(key) is not str:
            raise TypeError(f"cannot save to {fmt_path(path)}: tensor names must be strings, got {fmt(key)}; "
                            f"nothing was written")
        if key == "__metadata__":
            raise ValueError(f"cannot save to {fmt_path(path)}: '__metadata__' is reserved for the safetensors "
                             f"header's metadata and cannot name a tensor; rename it (nothing was written)")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"cannot save to {fmt_path(path)}: tensor name {clip(key, 120)} is not valid "
                             f"Unicode (a lone surrogate) and cannot be stored as UTF-8; nothing was "
                             f"written") from None
    for key, value in (metadata or {}).items():
        if type(key) is not str or type(value) is not str:
            raise TypeError(f"cannot save to {fmt_path(path)}: metadata must map strings to strings, got "
                            f"{fmt(key)}: {fmt(value)}; nothing was written")
        try:
            key.encode("utf-8"), value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"cannot save to {fmt_path(path)}: metadata {clip(key, 120)} is not valid Unicode; "
                             f"nothing was written") from None


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], bfloat16=frozenset(),
                      metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write numpy arrays to ``path`` in the safetensors format; keys in ``bfloat16`` are stored as BF16.

    Laid out as the reference writer lays it out (tensors by dtype alignment, widest first,
    then by name; the header padded with spaces to a multiple of 8), so every tensor starts at
    a multiple of its element size. Written here rather than with ``safetensors.serialize``
    because numpy has no bfloat16 dtype. Keys the format cannot hold (``"__metadata__"``, lone
    surrogates) are refused before anything is written; the temporary file is read back with
    this module's reader (header, keys, dtypes, shapes, sizes) before it replaces ``path``, so
    an old file is never replaced by an unreadable one. The write is atomic (see :func:`atomic_write`).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> write_safetensors(path, {"w": np.ones(2, np.float32)})
    >>> read_safetensors(path)["w"].tolist()
    [1.0, 1.0]
    """
    path = os.fspath(path)
    check_keys(path, tensors.keys(), metadata)
    entries = []
    for key, array in tensors.items():
        array = np.asarray(array)
        if key in bfloat16:
            blob, tag = float32_to_bfloat16_bits(array.astype(np.float32)), "BF16"
        else:
            blob = array.astype(array.dtype.newbyteorder("<")) if array.dtype.byteorder == ">" else array
            tag = _NP_TO_ST.get(blob.dtype.str)
            if tag is None:
                raise TypeError(f"cannot save to {fmt_path(path)}: tensor '{clip(key)}' has dtype {array.dtype}, "
                                f"which safetensors cannot store; nothing was written")
        entries.append((key, tag, tuple(array.shape), blob))
    entries.sort(key=lambda e: (-_DTYPE_RANK[e[1]], e[0]))
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    chunks = []
    offset = 0
    for key, tag, shape, blob in entries:
        raw = np.ascontiguousarray(blob).reshape(-1).view(np.uint8)
        header[key] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + raw.nbytes]}
        chunks.append(raw)
        offset += raw.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section starts at a multiple of 8, as the reference writes it
    expected = {key: (_ST_DTYPES[tag], shape) for key, tag, shape, _ in entries}

    def verify(written: str) -> None:
        try:
            got = read_safetensors(written, lazy=True)
            for key, tensor in got.items():
                code, shape = expected[key]
                if tensor.shape != shape or tensor.dtype != (np.dtype(np.float32) if code == "bfloat16"
                                                             else np.dtype(code)):
                    raise error(written, f"tensor '{clip(key)}' reads back as {tensor.shape} {tensor.dtype}",
                                "save.verify")
            if len(got) != len(expected):
                raise error(written, f"{len(got)} tensors read back, {len(expected)} written", "save.verify")
        except CheckpointError as err:
            raise error(path, f"the file written does not read back ({err.reason}); the old file was kept",
                        "save.verify") from None

    atomic_write(path, [struct.pack("<Q", len(text)), text, *chunks], verify=verify)
