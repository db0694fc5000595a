"""Read PyTorch checkpoint files with numpy only: a restricted, bounded unpickler and safetensors I/O.

A ``torch.save`` file (the zip format, the default since PyTorch 1.6) is a zip archive that
holds ``<archive>/data.pkl`` (a pickle of the saved object) and one raw record per tensor
storage (``<archive>/data/<key>``). Unpickling ``data.pkl`` with :mod:`pickle` would run any
callable the file names, so this module unpickles it with an allowlist: the globals a state
dict needs (tensor and storage rebuilds, ``OrderedDict``, dtypes, a few builtins) are mapped
to numpy implementations written here, and every other global is refused before anything
is called.

Everything read from a file is treated as hostile until checked. The unpickler counts its
opcodes and bounds integer sizes, nesting, container keys and everything formatted into a
message; tensors are first read as descriptions (storage, dtype, offset, size, stride) whose
bounds are checked exactly, and their data is only looked at when asked for, as read-only
views of the storage (memory-mapped), so views sharing one storage are never copied.
bfloat16 comes back as float32 (exact).

This module imports nothing but the standard library, numpy and safetensors, so that it can
be run (and fuzzed) without MindSpore.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import json
import mmap
import os
import pickle
import reprlib
import secrets
import stat
import struct
import zipfile
import zlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "LazyTensor",
    "read_torch_zip",
    "read_safetensors",
    "write_safetensors",
    "atomic_write",
    "bfloat16_bits_to_float32",
    "float32_to_bfloat16_bits",
]


class CheckpointError(ValueError):
    """A checkpoint file is malformed, truncated or exceeds a safety limit; nothing was loaded."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint's pickle asks for something a state dict never needs; nothing was run."""


# --- limits -------------------------------------------------------------------------------
# Far above what real state dicts need, low enough that no file costs more than about 150 MB
# or a few seconds to reject. Raise them for a trusted file that needs more.
MAX_PICKLE_BYTES = 64 << 20
# Opcodes are counted in units of about 56 bytes of memory they can allocate (an empty set
# costs 4, a memo entry 2, most others 1). torch.save spends about 45 units per tensor, so
# this admits state dicts of some 40k tensors.
MAX_PICKLE_OPS = 2 << 20
MAX_DEPTH = 100                 # nesting of containers (a state dict needs 3-4)
MAX_INT_BYTES = 32              # LONG1/LONG4 payloads: 256-bit integers
MAX_DIMS = 64
MAX_INDEX = 1 << 62             # any size, stride, offset or element count
MAX_KEY_LENGTH = 1 << 16        # characters of a storage key or a zip record name
MAX_ZIP_RECORDS = 1 << 20
MAX_SMALL_RECORD = 1 << 10      # the ``byteorder`` record
SAFETENSORS_MAX_HEADER = 100_000_000  # the reference implementation's limit

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxtuple = _repr.maxlist = _repr.maxarray = 6
_repr.maxdict = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 4
_repr.maxstring = 60
_repr.maxlong = 40
_repr.maxother = 60


def _short(value: Any) -> str:
    """A bounded ``repr`` of a hostile value: a few levels, a few items, a few characters each.

    Formatting a crafted object in full can take exponential time (shared sub-tuples) or
    unbounded memory; this never looks at more than a few hundred of its parts.
    """
    try:
        text = _repr.repr(value)
    except Exception:  # a value whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


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


def _element_dtype(code: str) -> np.dtype:
    """The numpy dtype a storage of ``code`` is read as (bfloat16: its uint16 bit patterns)."""
    return np.dtype("<u2") if code == "bfloat16" else np.dtype(code)


class _DType(str):
    """A ``torch.<dtype>`` global: the string ``"torch.float32"``, usable as a plain value."""

    __slots__ = ()

    @property
    def torch_name(self) -> str:
        return self[len("torch."):]


class _StorageType(str):
    """A ``torch.FloatStorage``-like global (or ``UntypedStorage``): its name as a string."""

    __slots__ = ()

    @property
    def dtype(self) -> Optional[str]:
        return _STORAGE_TYPES.get(self.rsplit(".", 1)[-1])  # None: untyped bytes


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 values, given as their uint16 bit patterns, to float32 (exact).

    >>> bfloat16_bits_to_float32(np.array([0x3FC0, 0xC000], np.uint16)).tolist()
    [1.5, -2.0]
    """
    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


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


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# --- lazy tensors -------------------------------------------------------------------------

class LazyTensor:
    """A tensor of a checkpoint, described but not read: ``shape``, ``dtype``, and ``array()``.

    ``dtype`` is the numpy dtype ``array()`` returns (float32 for bfloat16). The bounds were
    checked when the description was made; ``array()`` reads the data (checking the record's
    CRC the first time) and returns a read-only array that may be a view of the file's
    memory map: copy it to keep or modify it.
    """

    __slots__ = ("shape", "dtype", "_get")

    def __init__(self, shape: Tuple[int, ...], dtype: np.dtype, get: Callable[[], np.ndarray]):
        self.shape = shape
        self.dtype = dtype
        self._get = get

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def array(self) -> np.ndarray:
        return self._get()

    def __repr__(self) -> str:
        return f"LazyTensor(shape={self.shape}, dtype={self.dtype})"


class _Storage:
    """A storage record of a torch archive: checked metadata; its bytes read on first use."""

    __slots__ = ("key", "code", "numel", "_read", "_flat")

    def __init__(self, key: str, code: str, numel: int, read: Callable[[], memoryview]):
        self.key = key
        self.code = code      # element dtype code of _TORCH_DTYPES, or "|u1" when untyped
        self.numel = numel
        self._read = read
        self._flat: Dict[str, np.ndarray] = {}

    def flat(self, code: str) -> np.ndarray:
        """The whole storage as a flat read-only array of ``code`` elements (bfloat16 widened once)."""
        found = self._flat.get(code)
        if found is None:
            raw = self._flat.get("")
            if raw is None:
                raw = self._flat[""] = np.frombuffer(self._read(), np.uint8)
            found = raw.view(_element_dtype(code))
            if code == "bfloat16":
                found = _readonly(bfloat16_bits_to_float32(found))
            self._flat[code] = found
        return found


def _int(value: Any, what: str, source: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INDEX:
        raise CheckpointError(f"{source}: tensor {what} must be an int in [0, 2**62], got {_short(value)}")
    return value


def _int_tuple(value: Any, what: str, source: str) -> Tuple[int, ...]:
    if type(value) not in (tuple, list) or len(value) > MAX_DIMS:
        raise CheckpointError(
            f"{source}: tensor {what} must be a tuple of at most {MAX_DIMS} ints, got {_short(value)}")
    return tuple(_int(n, what, source) for n in value)


def _strided(storage: _Storage, code: str, offset: Any, size: Any, stride: Any, source: str) -> LazyTensor:
    """The tensor ``storage[offset:]`` with ``size``/``stride`` (in elements of ``code``), bounds-checked.

    The check is exact and made before any data is read: ``as_strided`` reads whatever memory
    the numbers point at, so a crafted file could otherwise read outside the storage.
    """
    offset = _int(offset, "storage offset", source)
    size = _int_tuple(size, "size", source)
    stride = _int_tuple(stride, "stride", source)
    if len(size) != len(stride):
        raise CheckpointError(f"{source}: tensor size {size} and stride {stride} differ in length")
    itemsize = _element_dtype(code).itemsize
    if storage.code != code and (storage.numel * np.dtype(storage.code).itemsize) % itemsize:
        raise CheckpointError(
            f"{source}: storage '{storage.key}' is not a whole number of {code} elements")
    available = storage.numel * np.dtype(storage.code).itemsize // itemsize
    numel = 1
    for n in size:
        numel *= n
    if numel > MAX_INDEX:
        raise CheckpointError(f"{source}: tensor size {size} has more than 2**62 elements")
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= available:
            raise CheckpointError(
                f"{source}: tensor (offset {offset}, size {size}, stride {stride}) reaches element "
                f"{last} of storage '{storage.key}', which has {available}: the file is corrupt")
    elif offset > available:
        raise CheckpointError(f"{source}: empty tensor at offset {offset} past its storage's end ({available})")
    out_dtype = np.dtype(np.float32) if code == "bfloat16" else np.dtype(code)

    def get() -> np.ndarray:
        flat = storage.flat(code)
        if numel == 0:
            return _readonly(np.zeros(size, out_dtype))
        return np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False)

    return LazyTensor(size, out_dtype, get)


# --- the unpickler ------------------------------------------------------------------------

def _make_set(items: Any = ()) -> set:
    return set(_checked_items(items))


def _make_frozenset(items: Any = ()) -> frozenset:
    return frozenset(_checked_items(items))


def _make_ordered_dict(items: Any = ()) -> collections.OrderedDict:
    out: collections.OrderedDict = collections.OrderedDict()
    for pair in _checked_sequence(items):
        if type(pair) not in (tuple, list) or len(pair) != 2:
            raise CheckpointError(f"OrderedDict item {_short(pair)} is not a (key, value) pair")
        out[_checked_key(pair[0])] = pair[1]
    return out


def _make_bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    # bytearray(n) would allocate n bytes: only rebuilding stored bytes is allowed.
    if type(data) is bytes and encoding is None:
        return bytearray(data)
    if type(data) is str and encoding in ("latin1", "latin-1"):
        return bytearray(data.encode("latin1"))
    raise UnsafeCheckpointError(f"bytearray({_short(data)}, {_short(encoding)}) does not rebuild stored bytes")


def _make_complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise CheckpointError(f"complex({_short(real)}, {_short(imag)}) is not made of two numbers")
    return complex(real, imag)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as ``_codecs.encode(str, "latin1")``.
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(
            f"_codecs.encode is only allowed to rebuild bytes (latin1), got encoding {_short(encoding)}")
    return text.encode("latin1")


def _torch_size(dims: Any = ()) -> Tuple[int, ...]:
    return _int_tuple(dims, "size", "torch.Size")


def _torch_device(kind: Any, index: Any = None) -> str:
    if type(kind) is not str or len(kind) > 64 or not (index is None or type(index) is int):
        raise CheckpointError(f"torch.device({_short(kind)}, {_short(index)}) is not a device")
    return kind if index is None else f"{kind}:{index}"


_HASH_SAFE = (str, bytes, bool, type(None), _DType, _StorageType)


def _checked_key(key: Any) -> Any:
    """``key`` if hashing and comparing it is cheap and collision-free enough, else an error.

    Hashing a crafted tuple that shares itself through the memo takes exponential time, and
    ints or floats of equal hash can be crafted to make a dict quadratic; str and bytes
    hashes are randomized per process. So dict keys and set members are str, bytes, bool,
    None, ints below 2**61 (distinct hashes) and short flat tuples of those.
    """
    t = type(key)
    if t in _HASH_SAFE or (t is int and -(1 << 61) < key < (1 << 61)):
        return key
    if t is tuple and len(key) <= 16 and all(
            type(k) in _HASH_SAFE or (type(k) is int and -(1 << 61) < k < (1 << 61)) for k in key):
        return key
    raise CheckpointError(
        f"a dict key or set member is {_short(key)} ({t.__name__}); a state dict only uses strings, "
        f"small ints and flat tuples of them")


def _checked_sequence(items: Any) -> Iterable[Any]:
    if type(items) not in (list, tuple):
        raise CheckpointError(f"expected a list or tuple of items, got {type(items).__name__}")
    return items


def _checked_items(items: Any) -> List[Any]:
    return [_checked_key(item) for item in _checked_sequence(items)]


_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _make_ordered_dict,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): _make_set,
    ("builtins", "frozenset"): _make_frozenset,
    ("builtins", "complex"): _make_complex,
    ("builtins", "bytearray"): _make_bytearray,
}
# The rebuild functions need the unpickler (its storages, its file name): bound per load.
_REBUILDS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
             "_rebuild_parameter", "_rebuild_parameter_with_state")
for _name in _REBUILDS:
    _ALLOWED[("torch._utils", _name)] = _name
for _name in _TORCH_DTYPES:
    _ALLOWED[("torch", _name)] = _DType(f"torch.{_name}")
for _name in _STORAGE_TYPES:
    _ALLOWED[("torch", _name)] = _StorageType(f"torch.{_name}")
    _ALLOWED[("torch.cuda", _name)] = _StorageType(f"torch.{_name}")
_ALLOWED[("torch", "UntypedStorage")] = _StorageType("torch.UntypedStorage")
_ALLOWED[("torch.storage", "UntypedStorage")] = _StorageType("torch.UntypedStorage")


def allowed_globals() -> frozenset:
    """The ``(module, name)`` globals a checkpoint's pickle may reference; everything else is refused.

    >>> ("builtins", "eval") in allowed_globals(), ("collections", "OrderedDict") in allowed_globals()
    (False, True)
    """
    return frozenset(_ALLOWED)


def _py3_name(module: str, name: str) -> Tuple[str, str]:
    """Python 2 names (``__builtin__.set``, written by protocol-2 pickles) as Python 3 names."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


_OPS = pickle._Unpickler.dispatch  # the pure-Python unpickler's opcode table


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with every way of reaching code closed but the allowlist, and bounded.

    Callables reach a pickle only through ``find_class`` (GLOBAL, STACK_GLOBAL, INST, EXT*),
    ``persistent_load`` and ``BUILD``: the first two are answered from the allowlist; INST,
    OBJ, NEWOBJ and EXT* are refused; REDUCE only calls what the allowlist returned; BUILD is
    only accepted on ``OrderedDict`` (where torch stores the state dict's ``_metadata``) and
    ignored there. Every opcode is counted; integers, nesting, dict keys and set members
    are checked as they are built. The C unpickler offers none of these hooks, hence the
    pure-Python one (a state dict's pickle is small: the tensor data lives in other records).
    """

    def __init__(self, data: bytes, storage: Callable[[str, str, int], _Storage], source: str):
        super().__init__(io.BytesIO(data))
        self._storage = storage
        self._source = source
        self._ops = 0
        self._opcode = 0
        self._rebuilds = {name: getattr(self, name) for name in _REBUILDS}
        self._callables = {id(f): f for f in [*(v for v in _ALLOWED.values() if callable(v)),
                                              *self._rebuilds.values()]}

    # -- globals and persistent ids --

    def find_class(self, module: str, name: str) -> Any:
        if type(module) is not str or type(name) is not str:
            raise UnsafeCheckpointError(f"{self._source}: a global named by a non-string {_short((module, name))}")
        key = _py3_name(module, name)
        found = _ALLOWED.get(key)
        if found is None:
            raise UnsafeCheckpointError(
                f"refusing to load {self._source}: its pickle references {_short(module + '.' + name)}, "
                f"which a state dict never needs (allowed: tensors, storages, OrderedDict, plain "
                f"containers and scalars). Nothing from the file was run. If you trust the file, "
                f"convert it with PyTorch: safetensors.torch.save_file(torch.load(path), 'model.safetensors')")
        if type(found) is str:
            return self._rebuilds[found]  # a rebuild function bound to this load
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        if type(pid) is not tuple or len(pid) != 5:
            raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id {_short(pid)}")
        tag, storage_type, key, _location, numel = pid
        if type(tag) is bytes:
            tag = tag.decode("latin1")
        if type(key) is bytes:
            key = key.decode("latin1")
        if tag != "storage" or not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id {_short(pid)}")
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii() \
                or not key.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise CheckpointError(f"{self._source}: bad storage key {_short(key)}")
        numel = _int(numel, "storage size", self._source)
        dtype = storage_type.dtype
        return self._storage(key, "|u1" if dtype is None else _TORCH_DTYPES[dtype], numel)

    # -- tensor rebuilds (numpy implementations of torch._utils) --

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        if not isinstance(storage, _Storage):
            raise UnsafeCheckpointError(f"{self._source}: a tensor rebuild got {type(storage).__name__}, not a storage")
        return _strided(storage, storage.code, storage_offset, size, stride, self._source)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, backward_hooks,
                           dtype, metadata=None):
        # Newer dtypes (uint16/32/64, float8...) are saved on an untyped byte storage plus a dtype.
        if not isinstance(storage, _Storage) or not isinstance(dtype, _DType):
            raise UnsafeCheckpointError(f"{self._source}: _rebuild_tensor_v3 expects a storage and a dtype")
        code = _TORCH_DTYPES.get(dtype.torch_name)
        if code is None:
            raise CheckpointError(f"{self._source}: unsupported tensor dtype {_short(dtype)}")
        return _strided(storage, code, storage_offset, size, stride, self._source)

    def _rebuild_parameter(self, data, requires_grad, backward_hooks):
        return data

    def _rebuild_parameter_with_state(self, data, requires_grad, backward_hooks, state):
        return data

    # -- opcodes --

    def _count(self, cost: int) -> None:
        self._ops += cost
        if self._ops > MAX_PICKLE_OPS:
            raise CheckpointError(
                f"{self._source}: the pickle runs more opcodes than MAX_PICKLE_OPS ({MAX_PICKLE_OPS} units); "
                f"refusing it as a resource bomb (raise ms_weightnorm._torch_pickle.MAX_PICKLE_OPS for a "
                f"trusted file)")

    def _load_long(self):
        n = self.read(1)[0] if self._opcode == pickle.LONG1[0] else struct.unpack("<i", self.read(4))[0]
        if not 0 <= n <= MAX_INT_BYTES:
            raise CheckpointError(f"{self._source}: an integer of {n} bytes (at most {MAX_INT_BYTES} allowed)")
        self.append(pickle.decode_long(self.read(n)))

    def _load_text_int(self):
        line = self.readline()
        if len(line) > 90:
            raise CheckpointError(f"{self._source}: an integer of {len(line)} digits")
        if self._opcode == pickle.INT[0]:
            if line == b"00\n":
                self.append(False)
            elif line == b"01\n":
                self.append(True)
            else:
                self.append(int(line, 0))
        else:
            text = line[:-1]
            self.append(int(text[:-1] if text.endswith(b"L") else text, 0))

    def _load_mark(self):
        if len(self.metastack) >= MAX_DEPTH:
            raise CheckpointError(f"{self._source}: pickle marks nested deeper than {MAX_DEPTH}")
        _OPS[pickle.MARK[0]](self)

    def _target(self, kinds: Tuple[type, ...], what: str) -> Any:
        target = self.stack[-1]
        if type(target) not in kinds:
            raise UnsafeCheckpointError(f"{self._source}: the pickle {what} a {type(target).__name__}")
        return target

    def _load_setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        self._target((dict, collections.OrderedDict), "sets items of")[_checked_key(key)] = value

    def _load_setitems(self):
        items = self.pop_mark()
        target = self._target((dict, collections.OrderedDict), "sets items of")
        if len(items) % 2:
            raise CheckpointError(f"{self._source}: SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            target[_checked_key(items[i])] = items[i + 1]

    def _load_additems(self):
        items = self.pop_mark()
        self._target((set,), "adds items to").update(_checked_items(items))

    def _load_frozenset(self):
        items = frozenset(_checked_items(self.pop_mark()))  # pop_mark first: it switches self.append
        self.append(items)

    def _load_append(self):
        value = self.stack.pop()
        self._target((list,), "appends to").append(value)

    def _load_appends(self):
        items = self.pop_mark()
        self._target((list,), "appends to").extend(items)

    def _load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in self._callables or self._callables[id(func)] is not func:
            raise UnsafeCheckpointError(f"{self._source}: the pickle calls {_short(func)}, which is not allowed")
        if type(args) is not tuple:
            raise CheckpointError(f"{self._source}: call arguments are a {type(args).__name__}, not a tuple")
        self.stack[-1] = func(*args)

    def _load_build(self):
        self.stack.pop()  # the state: ignored, an OrderedDict's BUILD carries only metadata
        inst = self.stack[-1]
        if type(inst) not in (collections.OrderedDict, dict):
            raise UnsafeCheckpointError(
                f"refusing to load {self._source}: its pickle sets the state of a "
                f"{type(inst).__name__}, which a state dict never does")

    def _load_inst(self):
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        self.find_class(module, name)  # names a refused global in the message, if it is one
        self._refuse()

    def _refuse(self):
        raise UnsafeCheckpointError(
            f"refusing to load {self._source}: its pickle builds an object by instantiating a class "
            f"(opcode {bytes([self._opcode])!r}), which a state dict never does. Nothing from the file was run.")

    def _load_ext(self):
        raise UnsafeCheckpointError(
            f"refusing to load {self._source}: its pickle uses the copyreg extension registry, which a "
            f"state dict never does. Nothing from the file was run.")

    _overrides = {
        pickle.LONG1: _load_long, pickle.LONG4: _load_long,
        pickle.INT: _load_text_int, pickle.LONG: _load_text_int,
        pickle.MARK: _load_mark,
        pickle.SETITEM: _load_setitem, pickle.SETITEMS: _load_setitems,
        pickle.ADDITEMS: _load_additems, pickle.FROZENSET: _load_frozenset,
        pickle.APPEND: _load_append, pickle.APPENDS: _load_appends,
        pickle.REDUCE: _load_reduce, pickle.BUILD: _load_build,
        pickle.INST: _load_inst, pickle.OBJ: _refuse, pickle.NEWOBJ: _refuse, pickle.NEWOBJ_EX: _refuse,
        pickle.EXT1: _load_ext, pickle.EXT2: _load_ext, pickle.EXT4: _load_ext,
    }



_COST = {pickle.EMPTY_SET[0]: 4, pickle.FROZENSET[0]: 4, pickle.MEMOIZE[0]: 2, pickle.PUT[0]: 2,
         pickle.BINPUT[0]: 2, pickle.LONG_BINPUT[0]: 2, pickle.EMPTY_DICT[0]: 2}


def _counted(opcode: int, handler: Callable) -> Callable:
    cost = _COST.get(opcode, 1)

    def run(self: _RestrictedUnpickler) -> None:
        self._count(cost)
        self._opcode = opcode
        handler(self)
    return run


_RestrictedUnpickler.dispatch = {op: _counted(op, fn) for op, fn in _OPS.items()}
_RestrictedUnpickler.dispatch.update(
    {op[0]: _counted(op[0], fn) for op, fn in _RestrictedUnpickler._overrides.items()})


# --- the object tree ----------------------------------------------------------------------

_CONTAINERS = (list, tuple, dict, collections.OrderedDict, set, frozenset)


def _finish_tree(root: Any, leaf: Callable[[Any], Any], source: str) -> Any:
    """``root`` with every leaf replaced by ``leaf(x)``; refuses nesting deeper than MAX_DEPTH and cycles.

    Iterative and visiting each container once, so shared sub-structures (a tuple that
    contains itself through the memo, 2**60 times once expanded) cost their size, not their
    expansion. A state dict never refers to itself, so a cycle is refused rather than kept.
    """
    done: Dict[int, Tuple[Any, int]] = {}
    open_: set = set()
    stack: List[Tuple[Any, bool]] = [(root, False)]
    while stack:
        obj, finished = stack.pop()
        if type(obj) not in _CONTAINERS or id(obj) in done:
            continue
        children = obj.values() if isinstance(obj, dict) else obj
        if not finished:
            if id(obj) in open_:
                raise CheckpointError(f"{source}: the pickle's objects contain themselves; a state dict never does")
            open_.add(id(obj))
            stack.append((obj, True))
            stack.extend((c, False) for c in children if type(c) in _CONTAINERS and id(c) not in done)
            continue
        open_.discard(id(obj))
        depth = 1 + max((done[id(c)][1] for c in children if type(c) in _CONTAINERS), default=0)
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{source}: containers nested deeper than {MAX_DEPTH}; a state dict needs a few")

        def new(c: Any) -> Any:
            return done[id(c)][0] if type(c) in _CONTAINERS else leaf(c)

        if type(obj) is list:
            obj[:] = [new(c) for c in obj]
            result = obj
        elif isinstance(obj, dict):
            for k in obj:
                obj[k] = new(obj[k])
            result = obj
        elif type(obj) is tuple:
            result = tuple(new(c) for c in obj)
        else:
            result = obj  # sets: members are hash-safe scalars
        done[id(obj)] = (result, depth)
    return done[id(root)][0] if type(root) in _CONTAINERS else leaf(root)


def _materialize(x: Any) -> Any:
    if isinstance(x, LazyTensor):
        return x.array()
    if isinstance(x, _Storage):
        return x.flat(x.code)
    return x


def _as_lazy(x: Any) -> Any:
    if isinstance(x, _Storage):  # a bare storage: its elements as a 1-D tensor
        return _strided(x, x.code, 0, (x.numel,), (1,), "")
    return x


# --- files --------------------------------------------------------------------------------

def _open_regular(path: str) -> Tuple[int, int]:
    """An fd of ``path`` and its size; refuses FIFOs, devices and directories without blocking."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{path} is not a regular file (a FIFO, device or directory); refusing to read it")
        return fd, info.st_size
    except BaseException:
        os.close(fd)
        raise


def _map(fd: int, size: int) -> Optional[mmap.mmap]:
    return mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None


_PICKLE_MAGIC = 0x1950A86A20F9469CFC6C
_CONVERT = ("Convert it once with PyTorch: torch.save(torch.load(path), 'converted.pt') writes the "
            "zip format, or safetensors.torch.save_file(torch.load(path), 'model.safetensors')")


def _is_legacy_torch_file(head: bytes) -> bool:
    # The pre-1.6 format starts with a protocol-2 pickle of a magic number: PROTO 2, LONG1 10.
    return head[:3] == b"\x80\x02\x8a" and int.from_bytes(head[4:14], "little") == _PICKLE_MAGIC


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _zip_error(path: str, err: BaseException) -> CheckpointError:
    # Only messages known to hold no file-controlled objects are quoted.
    text = str(err) if isinstance(err, (zipfile.BadZipFile, EOFError, OSError, struct.error)) else ""
    return CheckpointError(f"{path} is not a valid torch.save archive: {type(err).__name__} {_clip(text)}".rstrip())


def read_torch_zip(path: str, lazy: bool = False) -> Any:
    """Load the object ``torch.save`` wrote to ``path`` (zip format) with numpy.

    Tensors become read-only numpy arrays (views of the memory-mapped file where possible),
    or :class:`LazyTensor` descriptions when ``lazy``. Raises :class:`UnsafeCheckpointError`
    (and runs nothing) if the pickle references anything but what a state dict needs, and
    :class:`CheckpointError` (a ``ValueError``) for a malformed, truncated or oversized file,
    the legacy non-zip format or a TorchScript archive.
    """
    fd, size = _open_regular(path)
    try:
        head = os.pread(fd, 16, 0)
        mapped = _map(fd, size)
    finally:
        os.close(fd)
    if head[:2] != b"PK":
        if _is_legacy_torch_file(head):
            raise CheckpointError(
                f"{path} is in PyTorch's legacy (pre-1.6, non-zip) format, which is not supported "
                f"without torch. {_CONVERT}")
        if head[:1] == b"\x80":
            raise CheckpointError(
                f"{path} is a bare pickle, not PyTorch's zip format; it is not unpickled here (a "
                f"pickle can run code). {_CONVERT}")
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a legacy torch file)")
    try:
        with zipfile.ZipFile(_MappedFile(mapped)) as zf:
            return _read_archive(path, zf, mapped, size, lazy)
    except CheckpointError as err:
        if path in str(err):
            raise
        raise type(err)(f"{path}: {err}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, struct.error, ValueError,
            KeyError, IndexError, OverflowError, NotImplementedError, UnicodeDecodeError, MemoryError) as err:
        raise _zip_error(path, err) from None


class _MappedFile(io.RawIOBase):
    """A seekable read-only file over a memory map (zipfile reads its directory through it)."""

    def __init__(self, mapped: Optional[mmap.mmap]):
        self._data = memoryview(mapped) if mapped is not None else memoryview(b"")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = max(0, pos if whence == 0 else self._pos + pos if whence == 1 else len(self._data) + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        chunk = self._data[self._pos:self._pos + len(buffer)]
        buffer[:len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def _read_archive(path: str, zf: zipfile.ZipFile, mapped: mmap.mmap, size: int, lazy: bool) -> Any:
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_RECORDS:
        raise CheckpointError(f"{path}: {len(infos)} zip records (at most {MAX_ZIP_RECORDS})")
    by_name: Dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info.filename in by_name:
            raise CheckpointError(f"{path}: the zip holds two records named {_short(info.filename)}")
        by_name[info.filename] = info
    pickles = [n for n in by_name if n.endswith("/data.pkl") and n.count("/") == 1]
    if any(n.endswith("/constants.pkl") for n in by_name):
        raise CheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save), not a state dict; in PyTorch run "
            f"torch.save(torch.jit.load(path).state_dict(), 'state.pt') and load that")
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: expected one '<archive>/data.pkl' record in the zip, found {_short(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]

    def small(name: str, limit: int) -> bytes:
        info = by_name[name]
        if info.file_size > limit:
            raise CheckpointError(f"{path}: record '{_clip(name)}' holds {info.file_size} bytes "
                                  f"(at most {limit} allowed)")
        return zf.read(info)  # zipfile checks the CRC of a whole read

    order = "little"
    if prefix + "byteorder" in by_name:
        order = small(prefix + "byteorder", MAX_SMALL_RECORD).decode("ascii", "replace").strip()
    if order != "little":
        raise CheckpointError(
            f"{path}: byte order {_short(order)} is not supported (only little-endian checkpoints); "
            f"re-save it with PyTorch on a little-endian machine")

    view = memoryview(mapped) if mapped is not None else memoryview(b"")
    storages: Dict[str, _Storage] = {}

    def storage(key: str, code: str, numel: int) -> _Storage:
        found = storages.get(key)
        if found is not None:
            if found.code != code or found.numel != numel:
                raise CheckpointError(
                    f"{path}: storage '{key}' is referenced as {found.numel} x {found.code} and as "
                    f"{numel} x {code}; the file is corrupt")
            return found
        name = f"{prefix}data/{key}"
        info = by_name.get(name)
        if info is None:
            raise CheckpointError(f"{path}: storage record '{_clip(name)}' is missing; the file is corrupt")
        nbytes = numel * np.dtype(code).itemsize
        if info.file_size != nbytes:
            raise CheckpointError(
                f"{path}: storage record '{name}' holds {info.file_size} bytes, expected {nbytes}")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
            raise CheckpointError(
                f"{path}: storage record '{name}' is compressed or encrypted; torch.save never writes "
                f"such records (the file was repacked). Re-save it with torch.save")
        # Where the record's bytes start: after its local header (30 bytes, name, extra field).
        local = bytes(view[info.header_offset:info.header_offset + 30])
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{path}: storage record '{name}' has no valid local header; the file is corrupt")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if bytes(view[info.header_offset + 30:info.header_offset + 30 + name_len]) != info.orig_filename.encode(
                "utf-8" if info.flag_bits & 0x800 else "cp437", "replace") or start + nbytes > size:
            raise CheckpointError(f"{path}: storage record '{name}' does not match its directory entry or "
                                  f"runs past the end of the file; the file is corrupt or truncated")

        def read() -> memoryview:
            data = view[start:start + nbytes]
            if zlib.crc32(data) != info.CRC:
                raise CheckpointError(f"{path}: storage record '{name}' fails its CRC check; the file is corrupt")
            return data

        found = storages[key] = _Storage(key, code, numel, read)
        return found

    data = small(pickles[0], MAX_PICKLE_BYTES)
    unpickler = _RestrictedUnpickler(data, storage, path)
    try:
        obj = unpickler.load()
    except CheckpointError:
        raise
    except Exception as err:  # malformed pickles raise anything; never format their objects
        detail = str(err) if isinstance(err, (EOFError, pickle.UnpicklingError, UnicodeDecodeError,
                                              struct.error)) else ""
        raise CheckpointError(
            f"{path}: its pickle is malformed or truncated ({type(err).__name__}"
            f"{': ' + _clip(detail) if detail else ''}); the file is corrupt") from None
    return _finish_tree(obj, _as_lazy if lazy else _materialize, path)


# --- safetensors ----------------------------------------------------------------------------

_ST_DTYPES: Dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bfloat16",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "|i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "|u1",
    "BOOL": "|b1", "C64": "<c8",
}
_NP_TO_ST = {np.dtype(v).str: k for k, v in _ST_DTYPES.items() if v != "bfloat16"}


def _flat_tensor(buffer: memoryview, code: str, shape: Tuple[int, ...]) -> LazyTensor:
    out_dtype = np.dtype(np.float32) if code == "bfloat16" else np.dtype(code)

    def get() -> np.ndarray:
        array = np.frombuffer(buffer, _element_dtype(code)).reshape(shape)
        return _readonly(bfloat16_bits_to_float32(array)) if code == "bfloat16" else array

    return LazyTensor(shape, out_dtype, get)


def read_safetensors(path: str, lazy: bool = False) -> Dict[str, Any]:
    """Read a ``.safetensors`` file: read-only numpy arrays (BF16 widened to float32, exactly).

    The header is validated by the ``safetensors`` package (the reference implementation:
    contiguous offsets covering the data exactly, unique keys, integer shapes, a 100 MB
    header limit). The data is memory-mapped, so arrays are views of the file until copied;
    with ``lazy`` the values are :class:`LazyTensor` descriptions and nothing is read.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> write_safetensors(path, {"w": np.arange(3, dtype=np.float32)}, bfloat16={"w"})
    >>> read_safetensors(path)["w"].tolist()
    [0.0, 1.0, 2.0]
    """
    import safetensors  # a MindSpore dependency; imported here to keep this module's import light

    fd, size = _open_regular(path)
    try:
        head = os.pread(fd, 8, 0)
        if len(head) != 8:
            raise CheckpointError(f"{path} is not a safetensors file (shorter than 8 bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > SAFETENSORS_MAX_HEADER or 8 + header_len > size:
            raise CheckpointError(
                f"{path} is not a valid safetensors file: header length {header_len} exceeds the file "
                f"({size} bytes) or the 100 MB limit")
        # Validate the very file we hold open (not whatever the path names a moment later).
        proc = f"/proc/self/fd/{fd}"
        try:
            with safetensors.safe_open(proc if os.path.exists(proc) else path, framework="numpy") as f:
                # The numpy backend refuses BF16 and does not expose offsets, so the data is
                # read here: safetensors has checked that the offsets are contiguous, in
                # ``offset_keys`` order, and cover the data exactly, so each tensor's offset
                # is the sum of the sizes before it.
                specs = [(k, f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape()))
                         for k in f.offset_keys()]
        except Exception as err:  # SafetensorError, and whatever else the binding raises
            raise CheckpointError(f"{path} is not a valid safetensors file: {_clip(str(err))}") from None
        mapped = _map(fd, size)
    finally:
        os.close(fd)
    view = memoryview(mapped) if mapped is not None else memoryview(b"")
    out: Dict[str, Any] = {}
    offset = 8 + header_len
    for key, tag, shape in specs:
        code = _ST_DTYPES.get(tag)
        if code is None:
            raise CheckpointError(f"{path}: tensor '{key}' has dtype {tag}, which is not supported here")
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * _element_dtype(code).itemsize
        if offset + nbytes > size:  # safetensors checked this; kept so no read can run past the map
            raise CheckpointError(f"{path}: tensor '{key}' runs past the end of the file")
        out[key] = _flat_tensor(view[offset:offset + nbytes], code, shape)
        offset += nbytes
    if offset != size:
        raise CheckpointError(f"{path}: the tensors cover {offset - 8 - header_len} bytes of "
                              f"{size - 8 - header_len} bytes of data; the file changed while being read")
    return out if lazy else {k: t.array() for k, t in out.items()}


def atomic_write(path: str, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` so that ``path`` is always either its old file or the whole new one.

    The data goes to a new file with an unpredictable name in the same directory, created
    exclusively and without following symlinks (a link planted at any name cannot redirect
    the write), with the permissions any new file gets (the kernel applies the umask). It is
    flushed and fsynced, renamed over ``path`` (atomic; a symlink at ``path`` itself is
    replaced, not followed), and the directory is fsynced. Concurrent writers each complete:
    the last rename wins, with one writer's whole file. On any error the temporary file is
    removed and ``path`` is untouched.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f.bin")
    >>> atomic_write(path, [b"ab", b"c"])
    >>> open(path, "rb").read()
    b'abc'
    """
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename itself is done
    finally:
        os.close(dir_fd)


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], bfloat16=frozenset(),
                      metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write numpy arrays to ``path`` in the safetensors format; keys in ``bfloat16`` are stored as BF16.

    Written here rather than with ``safetensors.serialize`` because numpy has no bfloat16
    dtype and that function's signature changed across versions (dicts of bytes, then raw
    pointers); the format is a JSON header and the raw bytes, and the tests read every file
    written here back with the reference implementation. The write is atomic (see
    :func:`atomic_write`).
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
