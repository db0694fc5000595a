"""Write ``torch.save``'s zip format with numpy: a protocol-2 pickle and a stored (uncompressed) zip.

What ``torch.save`` writes for a state dict, and ``torch.load(weights_only=True)`` reads:

- ``<archive>/data.pkl``: the object, pickled with protocol 2. Each tensor is
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``,
  whose storage is a persistent id ``("storage", torch.FloatStorage, "<key>", "cpu", numel)``;
- ``<archive>/data/<key>``: each storage's raw little-endian bytes, aligned to 64 bytes in the
  file (``torch.load(mmap=True)`` maps them in place);
- ``<archive>/byteorder`` (``little``) and ``<archive>/version`` (``3``; torch's reader
  requires it).

Not written: ``.format_version`` (it tells torch it may compute storage offsets from miniz's
own record layout, data descriptors included, instead of reading each local header; this
writer's layout is a plain one), ``.storage_alignment`` (64 is the default when absent) and
``.data/serialization_id`` (read only for logging).

Written by hand rather than with :mod:`pickle` and :mod:`zipfile`: pickling a reference to
``torch._utils._rebuild_tensor_v2`` with :mod:`pickle` imports torch, which this library
never needs; and :mod:`zipfile` cannot pad a record so that its data starts on a 64-byte
boundary, nor stream into :func:`.atomic.atomic_write`'s chunks. Tensors are converted to
bytes one at a time while the file is written, so a save holds one extra tensor at most.
"""
from __future__ import annotations

import collections
import struct
import zlib
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .atomic import atomic_write
from .bf16 import float32_to_bfloat16_bits
from .errors import CheckpointError, clip, fmt_path, short

__all__ = ["BFloat16", "torch_pickle", "torch_zip_chunks", "write_torch_zip"]

# The storage class torch.save names for each numpy dtype (torch's typed-storage names).
STORAGE_NAMES: Dict[str, str] = {
    "<f8": "DoubleStorage", "<f4": "FloatStorage", "<f2": "HalfStorage",
    "<i8": "LongStorage", "<i4": "IntStorage", "<i2": "ShortStorage", "|i1": "CharStorage",
    "|u1": "ByteStorage", "|b1": "BoolStorage",
    "<c8": "ComplexFloatStorage", "<c16": "ComplexDoubleStorage",
}
ALIGNMENT = 64          # torch's default storage alignment
_ZIP32_MAX = 0xFFFFFFFF  # a size or offset at or past this needs the ZIP64 fields (tests lower it)
_MARK = 0xFFFFFFFF       # a 32-bit field saying "see the ZIP64 field"
_PAD_TAG = 0x4246        # the extra field that pads a local header (the tag torch's writer uses)


class BFloat16:
    """A tensor to store as ``torch.bfloat16``: ``values`` (any float array) rounded to bfloat16
    (nearest, ties to even) when written. numpy has no bfloat16 dtype, so this marks one.

    >>> BFloat16([1.0, 2.5]).shape
    (2,)
    """

    __slots__ = ("values",)

    def __init__(self, values: Any):
        self.values = np.asarray(values, dtype=np.float32)

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.values.shape


# --- the pickle ---------------------------------------------------------------------------

class _Pickle:
    """Emits protocol-2 opcodes for the few types a checkpoint holds; collects the tensors."""

    def __init__(self) -> None:
        self.out: List[bytes] = [b"\x80\x02"]  # PROTO 2
        self.memo: Dict[Tuple[str, str], int] = {}
        self.tensors: List[Tuple[np.ndarray, bool]] = []  # (array, as bfloat16), in storage-key order

    def put(self, index: int) -> bytes:
        return b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)

    def get(self, index: int) -> bytes:
        return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)

    def global_(self, module: str, name: str) -> None:
        index = self.memo.get((module, name))
        if index is not None:
            self.out.append(self.get(index))
            return
        index = self.memo[(module, name)] = len(self.memo)
        self.out.append(b"c" + module.encode() + b"\n" + name.encode() + b"\n" + self.put(index))

    def text(self, value: str, where: str) -> None:
        try:
            raw = value.encode("utf-8")  # strict: a lone surrogate would not read back as written
        except UnicodeEncodeError:
            raise ValueError(f"{where}: the string {short(value)} is not valid UTF-8 (a lone surrogate?); "
                             f"a checkpoint cannot hold it") from None
        self.out.append(b"X" + struct.pack("<I", len(raw)) + raw)

    def int_(self, value: int) -> None:
        if 0 <= value < 256:
            self.out.append(b"K" + bytes([value]))
        elif 0 <= value < 65536:
            self.out.append(b"M" + struct.pack("<H", value))
        elif -2 ** 31 <= value < 2 ** 31:
            self.out.append(b"J" + struct.pack("<i", value))
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            if len(raw) > 255:
                raise ValueError(f"the integer {clip(str(value))} is too large for a checkpoint")
            self.out.append(b"\x8a" + bytes([len(raw)]) + raw)

    def tuple_(self, items: Tuple[int, ...]) -> None:
        if len(items) <= 3:
            for n in items:
                self.int_(n)
            self.out.append((b")", b"\x85", b"\x86", b"\x87")[len(items)])
        else:
            self.out.append(b"(")
            for n in items:
                self.int_(n)
            self.out.append(b"t")

    def empty_ordered_dict(self) -> None:
        self.global_("collections", "OrderedDict")
        self.out.append(b")R")  # OrderedDict(): EMPTY_TUPLE, REDUCE

    def tensor(self, value: Any, where: str) -> None:
        bf16 = isinstance(value, BFloat16)
        array = value.values if bf16 else value
        if bf16:
            storage = "BFloat16Storage"
        else:
            code = array.dtype.newbyteorder("<").str if array.dtype.byteorder == ">" else array.dtype.str
            storage = STORAGE_NAMES.get(code)
            if storage is None:
                raise TypeError(f"{where}: arrays of dtype {array.dtype} cannot be saved for PyTorch (supported: "
                                f"float16/32/64, bfloat16, int8/16/32/64, uint8, bool, complex64/128)")
        key = str(len(self.tensors))
        self.tensors.append((array, bf16))
        shape = tuple(int(n) for n in array.shape)
        stride, step = [], 1
        for n in reversed(shape):  # contiguous strides as torch computes them (a 0 dim counts as 1)
            stride.append(step)
            step *= max(n, 1)
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out.append(b"((")  # MARK (the call's arguments), MARK (the persistent id)
        self.text("storage", where)
        self.global_("torch", storage)
        self.text(key, where)
        self.text("cpu", where)
        self.int_(int(array.size))
        self.out.append(b"tQ")  # TUPLE, BINPERSID
        self.int_(0)
        self.tuple_(shape)
        self.tuple_(tuple(reversed(stride)))
        self.out.append(b"\x89")  # requires_grad=False
        self.empty_ordered_dict()  # backward_hooks
        self.out.append(b"tR")

    def value(self, value: Any, where: str, depth: int) -> None:
        if depth > 50:
            raise ValueError(f"{where}: containers nested deeper than 50; a checkpoint needs a few")
        if isinstance(value, (np.ndarray, BFloat16)):
            self.tensor(value, where)
        elif isinstance(value, Mapping):
            if isinstance(value, collections.OrderedDict):
                self.empty_ordered_dict()
            else:
                self.out.append(b"}")
            items = list(value.items())
            for start in range(0, len(items), 1000):  # SETITEMS in batches, as pickle does
                self.out.append(b"(")
                for key, item in items[start:start + 1000]:
                    if not isinstance(key, str):
                        raise TypeError(f"{where}: keys must be strings, got {type(key).__name__} {short(key)}")
                    self.text(key, where)
                    self.value(item, f"{where}[{short(key)}]", depth + 1)
                self.out.append(b"u")
        elif isinstance(value, list):
            self.out.append(b"]")
            for start in range(0, len(value), 1000):
                self.out.append(b"(")
                for i, item in enumerate(value[start:start + 1000], start):
                    self.value(item, f"{where}[{i}]", depth + 1)
                self.out.append(b"e")
        elif value is None:
            self.out.append(b"N")
        elif isinstance(value, (bool, np.bool_)):
            self.out.append(b"\x88" if value else b"\x89")
        elif isinstance(value, (int, np.integer)):
            self.int_(int(value))
        elif isinstance(value, (float, np.floating)):
            self.out.append(b"G" + struct.pack(">d", float(value)))
        elif isinstance(value, str):
            self.text(value, where)
        else:
            raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint written here holds numpy arrays "
                            f"(or BFloat16), dicts with string keys, lists, str, int, float, bool and None")


def torch_pickle(obj: Any) -> Tuple[bytes, List[Tuple[np.ndarray, bool]]]:
    """``data.pkl`` for ``obj`` as ``torch.save`` would write it, and its tensors by storage key.

    >>> data, tensors = torch_pickle({"w": np.zeros(2, np.float32)})
    >>> data[:2], len(tensors)
    (b'\\x80\\x02', 1)
    """
    p = _Pickle()
    p.value(obj, "checkpoint", 0)
    p.out.append(b".")
    return b"".join(p.out), p.tensors


# --- the zip ------------------------------------------------------------------------------

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_DOS_DATE = (1 << 5) | 1  # 1980-01-01: a fixed date keeps the file a function of its contents


def _tensor_bytes(array: np.ndarray, bf16: bool) -> memoryview:
    if bf16:
        flat = float32_to_bfloat16_bits(array)
    else:
        flat = np.ascontiguousarray(array)
        if flat.dtype.byteorder == ">":
            flat = flat.astype(flat.dtype.newbyteorder("<"))
    return memoryview(flat.reshape(-1).view(np.uint8))


def torch_zip_chunks(obj: Any, archive: str = "archive") -> Iterator[bytes]:
    """The bytes of a ``torch.save`` file holding ``obj``, in order (see the module's docstring).

    >>> import io, zipfile
    >>> blob = b"".join(torch_zip_chunks({"w": np.ones(3, np.float32)}))
    >>> sorted(zipfile.ZipFile(io.BytesIO(blob)).namelist())
    ['archive/byteorder', 'archive/data.pkl', 'archive/data/0', 'archive/version']
    """
    data, tensors = torch_pickle(obj)  # refuses what it cannot write before a byte is produced
    records: List[Tuple[str, Callable[[], Any]]] = [(f"{archive}/data.pkl", lambda: data),
                                                     (f"{archive}/byteorder", lambda: b"little")]
    for key, (array, bf16) in enumerate(tensors):
        records.append((f"{archive}/data/{key}", lambda a=array, b=bf16: _tensor_bytes(a, b)))
    records.append((f"{archive}/version", lambda: b"3\n"))
    return _zip(records)


def _zip(records: List[Tuple[str, Callable[[], Any]]]) -> Iterator[bytes]:
    offset = 0
    central: List[bytes] = []
    for name, produce in records:
        raw_name = name.encode("ascii")
        payload = produce()
        size = len(payload) if isinstance(payload, bytes) else payload.nbytes
        crc = zlib.crc32(payload)
        big = size >= _ZIP32_MAX or offset >= _ZIP32_MAX
        zip64 = struct.pack("<HHQQ", 1, 16, size, size) if big else b""
        pad = -(offset + _LOCAL.size + len(raw_name) + len(zip64)) % ALIGNMENT
        if pad and pad < 4:  # the padding field's own header is 4 bytes
            pad += ALIGNMENT
        extra = zip64 + (struct.pack("<HH", _PAD_TAG, pad - 4) + bytes(pad - 4) if pad else b"")
        version = 45 if big else 20
        small = _MARK if big else size
        header = _LOCAL.pack(b"PK\x03\x04", version, 0, 0, 0, _DOS_DATE, crc, small, small,
                             len(raw_name), len(extra)) + raw_name + extra
        # The directory's ZIP64 field lists, in order, the values its header marks 0xFFFFFFFF.
        wide = [size, size] + ([offset] if offset >= _ZIP32_MAX else []) if big else []
        c_extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
        c_size = _MARK if big else size
        c_offset = _MARK if offset >= _ZIP32_MAX else offset
        central.append(_CENTRAL.pack(b"PK\x01\x02", version, version, 0, 0, 0, _DOS_DATE, crc, c_size, c_size,
                                     len(raw_name), len(c_extra), 0, 0, 0, 0, c_offset) + raw_name + c_extra)
        yield header
        yield payload
        offset += len(header) + size
    directory = b"".join(central)
    count = len(central)
    # The ZIP64 end records always precede the end record, as torch.save writes them.
    zip64_at = offset + len(directory)
    yield directory
    yield _ZIP64_EOCD.pack(b"PK\x06\x06", _ZIP64_EOCD.size - 12, 45, 45, 0, 0, count, count,
                           len(directory), offset)
    yield _ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, zip64_at, 1)
    wide = len(directory) >= _ZIP32_MAX or offset >= _ZIP32_MAX
    yield _EOCD.pack(b"PK\x05\x06", 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                     _MARK if wide else len(directory), _MARK if wide else offset, 0)


# --- writing, verified --------------------------------------------------------------------

def _shape_tree(obj: Any) -> Any:
    """What a read-back must reproduce: the containers' keys and each tensor's shape and kind."""
    if isinstance(obj, BFloat16):
        return ("bfloat16", obj.shape)
    if isinstance(obj, np.ndarray):
        return ("tensor", tuple(obj.shape))
    if isinstance(obj, Mapping):
        return {k: _shape_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape_tree(v) for v in obj]
    return _scalar(obj)


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return ("float", float(value).hex())  # NaN equal to itself
    return value


def _read_shape_tree(obj: Any) -> Any:
    shape = getattr(obj, "shape", None)
    if shape is not None and hasattr(obj, "array"):  # a LazyTensor
        return ("bfloat16" if getattr(obj, "stored", "") == "bfloat16" else "tensor", tuple(shape))
    if isinstance(obj, Mapping):
        return {k: _read_shape_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_read_shape_tree(v) for v in obj]
    return _scalar(obj)


def write_torch_zip(path: str, obj: Any, archive: str = "archive") -> None:
    """Write ``obj`` to ``path`` as ``torch.save`` would (zip format), atomically, verified.

    ``obj``: numpy arrays (or :class:`BFloat16`), dicts (an ``OrderedDict`` stays one) with
    string keys, lists, and str/int/float/bool/None. Anything else is refused before a byte is
    written. The complete temporary file is read back with this library's reader, and its
    keys, shapes and dtypes compared with ``obj``, before it replaces ``path``: a file that
    would not load never replaces the old one.

    >>> import os, tempfile
    >>> from ms_weightnorm._checkpoint import read_torch_zip
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> write_torch_zip(path, {"w": np.arange(3, dtype=np.float32)})
    >>> read_torch_zip(path)["w"].tolist()
    [0.0, 1.0, 2.0]
    """
    from . import read_torch_zip  # the guarded entry point (the package imports this module's siblings)

    chunks = torch_zip_chunks(obj, archive)
    want = _shape_tree(obj)

    def verify(written: str) -> None:
        got = _read_shape_tree(read_torch_zip(written, lazy=True))
        if got != want:
            reason = "the file written did not read back as the object saved"
            raise CheckpointError(f"{fmt_path(path)}: {reason}; the old file (if any) was left in place. "
                                  f"Please report this", path=path, reason=reason, rule="save.verify")

    atomic_write(path, chunks, verify=verify)
