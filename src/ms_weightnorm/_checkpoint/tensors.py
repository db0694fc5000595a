"""Tensor descriptions: dtypes, storages and strided views, bounds-checked before any data is read."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from . import limits
from .bf16 import bfloat16_bits_to_float32
from .errors import clip, error, fmt

# numpy dtype (little-endian) of each torch dtype name; "bfloat16" is decoded by hand.
TORCH_DTYPES: Dict[str, str] = {
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

STORAGE_TYPES: Dict[str, str] = {
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


def element_dtype(code: str) -> np.dtype:
    """The numpy dtype a storage of ``code`` is read as (bfloat16: its uint16 bit patterns)."""
    return np.dtype("<u2") if code == "bfloat16" else np.dtype(code)


def output_dtype(code: str) -> np.dtype:
    """The numpy dtype a tensor of ``code`` is returned as (bfloat16 widened to float32)."""
    return np.dtype(np.float32) if code == "bfloat16" else np.dtype(code)


def readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class LazyTensor:
    """A tensor of a checkpoint, described but not read: ``shape``, ``dtype``, and ``array()``.

    ``dtype`` is the numpy dtype ``array()`` returns (float32 for bfloat16). The bounds were
    checked when the description was made; ``array()`` reads the data (checking the record's
    CRC the first time) into private memory and returns a read-only array.
    """

    __slots__ = ("shape", "dtype", "_get", "stored")

    def __init__(self, shape: Tuple[int, ...], dtype: np.dtype, get: Callable[[], np.ndarray],
                 stored: str = ""):
        self.shape = shape
        self.dtype = dtype
        self._get = get
        # The dtype the file stores ("bfloat16" where ``dtype`` is its float32 widening).
        self.stored = stored or np.dtype(dtype).name

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


class Storage:
    """A storage record: checked metadata; its bytes read (and CRC-checked) when a tensor needs them.

    ``read()`` gives the whole record; ``read_span(start, stop)``, where given, the bytes
    ``[start, stop)`` of it (the record still checked whole, without keeping it). A tensor that
    uses a small part of a big storage reads only that part.
    """

    __slots__ = ("key", "code", "numel", "_read", "_read_span", "_raw", "_flat")

    def __init__(self, key: str, code: str, numel: int, read: Callable[[], memoryview],
                 read_span: Optional[Callable[[int, int], memoryview]] = None):
        self.key = key
        self.code = code      # element dtype code of TORCH_DTYPES, or "|u1" when untyped
        self.numel = numel
        self._read = read
        self._read_span = read_span
        self._raw: Optional[np.ndarray] = None
        self._flat: Dict[str, np.ndarray] = {}

    @property
    def nbytes(self) -> int:
        return self.numel * element_dtype(self.code).itemsize

    def raw(self) -> np.ndarray:
        """The whole record's bytes (read once, then shared by every tensor of this storage)."""
        if self._raw is None:
            data = self._read()
            if len(data) != self.nbytes:  # the bytes actually got, not the bytes declared
                raise error(None, f"storage '{self.key}' gave {len(data)} bytes, expected {self.nbytes}",
                            "tensor.storage_size")
            self._raw = readonly(np.frombuffer(data, np.uint8))
        return self._raw

    def span(self, start: int, stop: int) -> np.ndarray:
        """Bytes ``[start, stop)`` of the record: from the whole record when it is read anyway."""
        if self._raw is not None or self._read_span is None or 2 * (stop - start) >= self.nbytes:
            return self.raw()[start:stop]
        data = self._read_span(start, stop)
        if len(data) != stop - start:
            raise error(None, f"storage '{self.key}' gave {len(data)} bytes for [{start}, {stop})",
                        "tensor.storage_size")
        return readonly(np.frombuffer(data, np.uint8))

    def flat(self, code: str) -> np.ndarray:
        """The whole storage as a flat read-only array of ``code`` elements (bfloat16 widened once)."""
        found = self._flat.get(code)
        if found is None:
            found = self.raw().view(element_dtype(code))
            if code == "bfloat16":
                found = readonly(bfloat16_bits_to_float32(found))
            self._flat[code] = found
        return found


def checked_int(value: Any, what: str, source: str) -> int:
    if type(value) is not int or not 0 <= value <= limits.current().max_index:
        raise error(source, f"tensor {what} must be an int in [0, 2**62], got {fmt(value)}", "tensor.index")
    return value


def checked_dims(value: Any, what: str, source: str) -> Tuple[int, ...]:
    most = limits.current().max_dims
    if type(value) not in (tuple, list) or len(value) > most:
        raise error(source, f"tensor {what} must be a tuple of at most {most} ints, got {fmt(value)}", "tensor.dims")
    return tuple(checked_int(n, what, source) for n in value)


def checked_numel(shape: Tuple[int, ...], source: str, what: str = "tensor", key: Optional[str] = None) -> int:
    """The element count of ``shape``; refused when numpy could not describe it.

    numpy refuses ("array is too big") a shape whose non-zero dimensions multiply past its
    index range, even when another dimension is 0, so that product is what is bounded.
    """
    most = limits.current().max_elements
    numel = span = 1
    for n in shape:
        numel *= n
        span *= n or 1
    if span > most:
        what = what if key is None else f"tensor '{clip(key)}'"  # formatted only when it is needed
        raise error(source, f"{what} of shape {fmt(shape)} spans {fmt(span)} elements (at most "
                            f"2**{most.bit_length() - 1} allowed); the file is corrupt or hostile", "tensor.elements")
    return numel


def strided(storage: Storage, code: str, offset: Any, size: Any, stride: Any, source: str) -> LazyTensor:
    """The tensor ``storage[offset:]`` with ``size``/``stride`` (in elements of ``code``), bounds-checked.

    The check is exact and made before any data is read: ``as_strided`` reads whatever memory
    the numbers point at, so a crafted file could otherwise read outside the storage. Only the
    elements between the view's first and last are read and converted (a bfloat16 view of six
    elements widens six, not its whole storage); zero strides stay zero strides.
    """
    offset = checked_int(offset, "storage offset", source)
    size = checked_dims(size, "size", source)
    stride = checked_dims(stride, "stride", source)
    if len(size) != len(stride):
        raise error(source, f"tensor size {fmt(size)} and stride {fmt(stride)} differ in length", "tensor.dims")
    itemsize = element_dtype(code).itemsize
    if storage.code != code and storage.nbytes % itemsize:
        raise error(source, f"storage '{storage.key}' is not a whole number of {code} elements", "tensor.storage_size")
    available = storage.nbytes // itemsize
    numel = checked_numel(size, source)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else offset
    if numel:
        if last >= available:
            raise error(source, f"tensor (offset {offset}, size {fmt(size)}, stride {fmt(stride)}) reaches element "
                                f"{last} of storage '{storage.key}', which has {available}: the file is corrupt",
                        "tensor.bounds")
    elif offset > available:
        raise error(source, f"empty tensor at offset {offset} past its storage's end ({available})", "tensor.bounds")
    out_dtype = output_dtype(code)
    # A dimension of size 1 never steps, whatever its stride: 0 keeps numpy's byte strides in range.
    steps = tuple(s if n > 1 else 0 for n, s in zip(size, stride))

    def get() -> np.ndarray:
        if numel == 0:
            return readonly(np.zeros(size, out_dtype))
        used = storage.span(offset * itemsize, (last + 1) * itemsize).view(element_dtype(code))
        # Checked again against the array actually got (not the declared count).
        if last - offset >= len(used):
            raise error(source, f"tensor reaches past its storage '{storage.key}'", "tensor.bounds")
        if code == "bfloat16":
            used = readonly(bfloat16_bits_to_float32(used))
        return np.lib.stride_tricks.as_strided(
            used, shape=size, strides=tuple(s * used.itemsize for s in steps), writeable=False)

    return LazyTensor(size, out_dtype, get, "bfloat16" if code == "bfloat16" else "")


def flat_tensor(read: Callable[[], Any], code: str, shape: Tuple[int, ...], nbytes: int, source: str,
                key: str) -> LazyTensor:
    """A contiguous tensor of ``shape`` whose ``nbytes`` bytes ``read()`` gives (safetensors), checked on read."""
    out_dtype = output_dtype(code)

    def get() -> np.ndarray:
        buffer = read()
        if len(buffer) != nbytes:
            raise error(source, f"tensor '{clip(key)}' got {len(buffer)} bytes of data, expected {nbytes}",
                        "tensor.storage_size")
        array = np.frombuffer(buffer, element_dtype(code)).reshape(shape)
        return readonly(bfloat16_bits_to_float32(array)) if code == "bfloat16" else readonly(array)

    return LazyTensor(shape, out_dtype, get, "bfloat16" if code == "bfloat16" else "")


class DType(str):
    """A ``torch.<dtype>`` global: the string ``"torch.float32"``, usable as a plain value."""

    __slots__ = ()

    @property
    def torch_name(self) -> str:
        return self[len("torch."):]


class StorageType(str):
    """A ``torch.FloatStorage``-like global (or ``UntypedStorage``): its name as a string."""

    __slots__ = ()

    @property
    def dtype(self) -> Optional[str]:
        return STORAGE_TYPES.get(self.rsplit(".", 1)[-1])  # None: untyped bytes
