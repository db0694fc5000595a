"""Read PyTorch checkpoint files with numpy only: a restricted unpickler and a safetensors reader/writer.

A ``torch.save`` file (the zip format, the default since PyTorch 1.6) is a zip archive that
holds ``<archive>/data.pkl`` (a pickle of the saved object) and one raw record per tensor
storage (``<archive>/data/<key>``). Unpickling ``data.pkl`` with :mod:`pickle` would run any
callable the file names, so this module unpickles it with an allowlist: the globals a state
dict needs (tensor and storage rebuilds, ``OrderedDict``, dtypes, a few builtins) are mapped
to numpy implementations written here, and every other global is refused before anything
is called. Tensors come back as numpy arrays; bfloat16 comes back as float32 (exact).

safetensors files are read and written here as well, because ``safetensors.numpy`` cannot
handle bfloat16 (numpy has no such dtype).
"""
from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import struct
import zipfile
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = [
    "UnsafeCheckpointError",
    "read_torch_zip",
    "read_safetensors",
    "write_safetensors",
    "bfloat16_bits_to_float32",
    "float32_to_bfloat16_bits",
]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's pickle asks for something a state dict never needs; nothing was run."""


# --- dtypes -------------------------------------------------------------------------------

# numpy dtype (little-endian) of each torch dtype name; "bfloat16" is decoded by hand.
_TORCH_DTYPES: Dict[str, str] = {
    "float64": "<f8", "double": "<f8",
    "float32": "<f4", "float": "<f4",
    "float16": "<f2", "half": "<f2",
    "bfloat16": "bfloat16",
    "int64": "<i8", "long": "<i8",
    "int32": "<i4", "int": "<i4",
    "int16": "<i2", "short": "<i2",
    "int8": "|i1",
    "uint8": "|u1",
    "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
    "bool": "|b1",
    "complex64": "<c8", "cfloat": "<c8",
    "complex128": "<c16", "cdouble": "<c16",
}

_STORAGE_TYPES: Dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


class _DType:
    """Stands for a ``torch.<dtype>`` global inside a pickle."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def numpy_dtype(self) -> np.dtype:
        code = _TORCH_DTYPES[self.name]
        return np.dtype("<u2") if code == "bfloat16" else np.dtype(code)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _StorageType:
    """Stands for a ``torch.FloatStorage``-like class (or ``UntypedStorage``) inside a pickle."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: Optional[str]):
        self.name = name
        self.dtype = dtype  # None: untyped (bytes), the dtype is given to the rebuild later


class _Storage:
    """A storage record of the archive, decoded to a flat numpy array of its element type."""

    __slots__ = ("key", "dtype", "data")

    def __init__(self, key: str, dtype: Optional[str], data: np.ndarray):
        self.key = key
        self.dtype = dtype
        self.data = data


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 values, given as their uint16 bit patterns, to float32 (exact).

    >>> bfloat16_bits_to_float32(np.array([0x3FC0, 0xC000], np.uint16)).tolist()
    [1.5, -2.0]
    """
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even); return the uint16 bit patterns.

    >>> float32_to_bfloat16_bits(np.array([1.5, -2.0], np.float32)).tolist()
    [16320, 49152]
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, np.float32))
    bits = rounded.astype(np.uint16)
    # Rounding could carry a NaN's payload into the infinity pattern: keep NaNs quiet NaNs.
    bits[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return bits


# --- tensor rebuilds (numpy implementations of torch._utils) ------------------------------

def _int_tuple(value: Any, what: str) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in value):
        raise UnsafeCheckpointError(f"tensor {what} must be a tuple of ints, got {value!r}")
    return tuple(value)


def _view(data: np.ndarray, offset: Any, size: Any, stride: Any) -> np.ndarray:
    """Copy of the strided view ``data[offset:]`` with ``size``/``stride`` (in elements), bounds-checked.

    The checks matter: ``as_strided`` reads whatever memory the numbers point at, so a
    crafted file could otherwise read outside the storage.
    """
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise UnsafeCheckpointError(f"tensor storage offset must be an int >= 0, got {offset!r}")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise UnsafeCheckpointError(f"tensor size {size} and stride {stride} differ in length")
    if any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise UnsafeCheckpointError(f"negative tensor size or stride: size {size}, stride {stride}")
    numel = math.prod(size)
    if numel == 0:
        return np.zeros(size, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= data.size:
        raise UnsafeCheckpointError(
            f"tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} of a "
            f"storage of {data.size} elements: the file is corrupt")
    if numel > max(data.size, 1 << 20):
        # Overlapping (stride 0) views bigger than their storage: legal in torch, but in a
        # state dict only a crafted file would use them to blow up memory.
        raise UnsafeCheckpointError(
            f"tensor of size {size} repeats a storage of {data.size} elements; refusing to expand it")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
    return np.array(view, copy=True)


def _finish(array: np.ndarray, dtype: str) -> np.ndarray:
    return bfloat16_bits_to_float32(array) if dtype == "bfloat16" else array


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _Storage) or storage.dtype is None:
        raise UnsafeCheckpointError(f"a tensor rebuild got {type(storage).__name__}, not a typed storage")
    return _finish(_view(storage.data, storage_offset, size, stride), storage.dtype)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    # Newer dtypes (uint16/32/64, float8...) are saved on an untyped byte storage plus a dtype.
    if not isinstance(storage, _Storage) or not isinstance(dtype, _DType):
        raise UnsafeCheckpointError("_rebuild_tensor_v3 expects a storage and a dtype")
    np_dtype = dtype.numpy_dtype()
    raw = storage.data
    if storage.dtype is not None:
        raw = raw.view(np.uint8)
    if raw.size % np_dtype.itemsize:
        raise UnsafeCheckpointError(
            f"storage '{storage.key}' has {raw.size} bytes, not a whole number of {dtype} elements")
    return _finish(_view(raw.view(np_dtype), storage_offset, size, stride), dtype.name)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


def _torch_size(dims=()):
    return _int_tuple(tuple(dims), "size")


def _torch_device(kind, index=None):
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise UnsafeCheckpointError(f"torch.device({kind!r}, {index!r}) is not a device")
    return kind if index is None else f"{kind}:{index}"


def _codecs_encode(text, encoding="utf-8"):
    # Protocol-2 pickles store bytes as ``_codecs.encode(str, "latin1")``.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"_codecs.encode is only allowed to rebuild bytes (latin1), got {encoding!r}")
    return text.encode("latin1")


_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
}
for _name in _TORCH_DTYPES:
    _ALLOWED[("torch", _name)] = _DType(_name)
for _name, _dtype in _STORAGE_TYPES.items():
    _ALLOWED[("torch", _name)] = _StorageType(_name, _dtype)
    _ALLOWED[("torch.cuda", _name)] = _StorageType(_name, _dtype)
_ALLOWED[("torch", "UntypedStorage")] = _StorageType("UntypedStorage", None)
_ALLOWED[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage", None)


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with every way of reaching code closed but the allowlist.

    Callables reach a pickle only through ``find_class`` (GLOBAL, STACK_GLOBAL, INST, EXT*),
    ``persistent_load`` and ``BUILD`` (which calls ``__setstate__``/``setattr``): the first
    two are answered from the allowlist, and BUILD is only accepted on ``OrderedDict``
    (where torch stores the state dict's ``_metadata``) and ignored there. The C unpickler
    offers no hook for BUILD, hence the pure-Python one (a state dict's pickle is small:
    the tensor data lives in separate records).
    """

    def __init__(self, file, read_record, source: str):
        super().__init__(file)
        self._read_record = read_record
        self._source = source
        self._storages: Dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"refusing to load {self._source}: its pickle references '{module}.{name}', which a "
                f"state dict never needs (allowed: tensors, storages, OrderedDict, plain containers "
                f"and scalars). Nothing from the file was run. If you trust the file, convert it with "
                f"PyTorch: safetensors.torch.save_file(torch.load(path), 'model.safetensors')")
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"{self._source}: {storage_type!r} is not a storage type")
        if isinstance(key, bytes):
            key = key.decode("ascii")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise UnsafeCheckpointError(f"{self._source}: bad storage reference {pid!r}")
        cached = self._storages.get(key)
        if cached is not None:
            return cached
        code = "|u1" if storage_type.dtype is None else _TORCH_DTYPES[storage_type.dtype]
        dtype = np.dtype("<u2") if code == "bfloat16" else np.dtype(code)
        raw = self._read_record(key, numel * dtype.itemsize)
        storage = _Storage(key, storage_type.dtype, np.frombuffer(raw, dtype) if numel else np.zeros(0, dtype))
        self._storages[key] = storage
        return storage

    def _load_build(self):
        self.stack.pop()  # the state: ignored, an OrderedDict's BUILD carries only metadata
        inst = self.stack[-1]
        if not isinstance(inst, collections.OrderedDict):
            raise UnsafeCheckpointError(
                f"refusing to load {self._source}: its pickle sets the state of a "
                f"{type(inst).__name__}, which a state dict never does")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build


# --- zip archives ---------------------------------------------------------------------------

_PICKLE_MAGIC = 0x1950A86A20F9469CFC6C


def _is_legacy_torch_file(head: bytes) -> bool:
    # The pre-1.6 format starts with a protocol-2 pickle of a magic number: PROTO 2, LONG1 10.
    return head[:3] == b"\x80\x02\x8a" and int.from_bytes(head[4:14], "little") == _PICKLE_MAGIC


def read_torch_zip(path: str) -> Any:
    """Load the object ``torch.save`` wrote to ``path`` (zip format) with numpy; tensors become arrays.

    Raises :class:`UnsafeCheckpointError` (and runs nothing) if the pickle references
    anything but what a state dict needs, and ``ValueError`` for the legacy non-zip format or
    a TorchScript archive.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if not zipfile.is_zipfile(path):
        convert = ("Convert it once with PyTorch: torch.save(torch.load(path), 'converted.pt') writes "
                   "the zip format, or safetensors.torch.save_file(torch.load(path), 'model.safetensors')")
        if _is_legacy_torch_file(head):
            raise ValueError(
                f"{path} is in PyTorch's legacy (pre-1.6, non-zip) format, which is not supported "
                f"without torch. {convert}")
        if head[:1] == b"\x80":
            raise ValueError(
                f"{path} is a bare pickle, not PyTorch's zip format; it is not unpickled here (a "
                f"pickle can run code). {convert}")
        raise ValueError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a legacy torch file)")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if any(n.endswith("/constants.pkl") for n in names):
            raise ValueError(
                f"{path} is a TorchScript archive (torch.jit.save), not a state dict; in PyTorch run "
                f"torch.save(torch.jit.load(path).state_dict(), 'state.pt') and load that")
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one '<archive>/data.pkl' record in the zip, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode("ascii").strip()
        if order != "little":
            raise ValueError(
                f"{path}: byte order {order!r} is not supported (only little-endian checkpoints); "
                f"re-save it with PyTorch on a little-endian machine")

        def read_record(key: str, nbytes: int) -> bytes:
            name = f"{prefix}data/{key}"
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise ValueError(f"{path}: storage record '{name}' is missing; the file is corrupt") from None
            if info.file_size != nbytes:
                raise ValueError(
                    f"{path}: storage record '{name}' holds {info.file_size} bytes, expected {nbytes}")
            return zf.read(name)

        data = zf.read(pickles[0])
        return _plain(_RestrictedUnpickler(io.BytesIO(data), read_record, path).load(), {})


def _plain(obj: Any, seen: Dict[int, Any]) -> Any:
    """Replace the unpickler's internal markers (bare storages, dtypes) by plain values."""
    if isinstance(obj, _Storage):
        return _finish(obj.data.copy(), obj.dtype) if obj.dtype else obj.data.copy()
    if isinstance(obj, _DType):
        return repr(obj)
    if isinstance(obj, (dict, list)):
        if id(obj) in seen:
            return obj
        seen[id(obj)] = obj
        if isinstance(obj, dict):
            for key in list(obj):
                obj[key] = _plain(obj[key], seen)
        else:
            obj[:] = [_plain(x, seen) for x in obj]
        return obj
    if type(obj) is tuple:
        return tuple(_plain(x, seen) for x in obj)
    return obj


# --- safetensors ----------------------------------------------------------------------------

_ST_DTYPES: Dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bfloat16",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "|i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "|u1",
    "BOOL": "|b1", "C64": "<c8",
}
_NP_TO_ST = {np.dtype(v).str: k for k, v in _ST_DTYPES.items() if v != "bfloat16"}


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """Read a ``.safetensors`` file into numpy arrays (BF16 widened to float32, exactly).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> write_safetensors(path, {"w": np.arange(3, dtype=np.float32)}, bfloat16={"w"})
    >>> read_safetensors(path)["w"].tolist()
    [0.0, 1.0, 2.0]
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"{path} is not a safetensors file (header length {n} > file size)")
        try:
            header = json.loads(f.read(n))
        except ValueError as err:
            raise ValueError(f"{path} is not a safetensors file: {err}") from None
        data = f.read()
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (header is not a JSON object)")
    out: Dict[str, np.ndarray] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            code = _ST_DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}: tensor '{key}' has an unsupported dtype or a malformed entry {info!r}") from None
        dtype = np.dtype("<u2") if code == "bfloat16" else np.dtype(code)
        if not 0 <= begin <= end <= len(data) or end - begin != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"{path}: tensor '{key}' has data offsets {begin, end} that do not fit shape {shape}")
        array = np.frombuffer(data, dtype, count=math.prod(shape), offset=begin).reshape(shape).copy()
        out[key] = _finish(array, code)
    return out


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], bfloat16=frozenset(),
                      metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write numpy arrays to ``path`` in the safetensors format; keys in ``bfloat16`` are stored as BF16.

    The file is written to a temporary name first and renamed, so a failed write leaves no
    half-written file behind.
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
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for raw in chunks:
                f.write(raw)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
