"""A pickle reader that understands only what ``torch.save`` writes for a state dict.

Why not :mod:`pickle`: the C unpickler offers no hook but ``find_class`` and
``persistent_load``, and the pure-Python ``pickle._Unpickler`` dispatches every opcode of every
protocol, allocating what an opcode declares before checking that the bytes exist
(``BYTEARRAY8`` with a length of 3 GiB zero-fills 3 GiB from a 20-byte file). Neither can bound
the work per opcode. So this is a small dispatch loop over a memoryview of the pickle with a
fixed table of opcodes: the ones ``torch.save`` emits at protocols 2 and 4 (and 5, which adds
nothing for a state dict but ``BYTEARRAY8``), plus the plain-value opcodes of protocols 0 and 1 (text integers,
floats and strings, ``DICT``/``LIST``/``TUPLE``). Every other opcode is refused by name before it
does anything. Every length an opcode declares is checked against the bytes left before anything
is allocated; every opcode is counted against :data:`limits.MAX_PICKLE_OPS`; integers, nesting,
dict keys and set members are bounded as they are built.

Callables are reached only through ``GLOBAL``/``STACK_GLOBAL``, which answer from an allowlist of
numpy implementations written here (tensor and storage rebuilds, ``OrderedDict``, dtypes, a few
builtins); ``REDUCE`` calls only what the allowlist returned; ``BUILD`` is accepted only on an
``OrderedDict`` (torch stores the state dict's ``_metadata`` there) and its state is dropped.
"""
from __future__ import annotations

import _compat_pickle
import collections
import struct
from typing import Any, Callable, Dict, Iterable, List, Tuple

from . import limits
from .errors import CheckpointError, UnsafeCheckpointError, clip, short
from .tensors import (TORCH_DTYPES, STORAGE_TYPES, DType, Storage, StorageType, checked_dims, checked_int,
                      strided)


# --- the allowed globals ------------------------------------------------------------------

def _make_set(items: Any = ()) -> set:
    return set(_checked_items(items))


def _make_frozenset(items: Any = ()) -> frozenset:
    return frozenset(_checked_items(items))


def _make_ordered_dict(items: Any = ()) -> collections.OrderedDict:
    out: collections.OrderedDict = collections.OrderedDict()
    for pair in _checked_sequence(items):
        if type(pair) not in (tuple, list) or len(pair) != 2:
            raise CheckpointError(f"OrderedDict item {short(pair)} is not a (key, value) pair")
        out[checked_key(pair[0])] = pair[1]
    return out


def _make_bytearray(data: Any = b"", encoding: Any = None) -> bytearray:
    # bytearray(n) would allocate n bytes: only rebuilding stored bytes is allowed.
    if type(data) is bytes and encoding is None:
        return bytearray(data)
    if type(data) is str and encoding in ("latin1", "latin-1"):
        return bytearray(data.encode("latin1"))
    raise UnsafeCheckpointError(f"bytearray({short(data)}, {short(encoding)}) does not rebuild stored bytes")


def _make_complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise CheckpointError(f"complex({short(real)}, {short(imag)}) is not made of two numbers")
    return complex(real, imag)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as ``_codecs.encode(str, "latin1")``.
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(
            f"_codecs.encode is only allowed to rebuild bytes (latin1), got encoding {short(encoding)}")
    return text.encode("latin1")


def _torch_size(dims: Any = ()) -> Tuple[int, ...]:
    return checked_dims(dims, "size", "torch.Size")


def _torch_device(kind: Any, index: Any = None) -> str:
    if type(kind) is not str or len(kind) > 64 or not (index is None or type(index) is int):
        raise CheckpointError(f"torch.device({short(kind)}, {short(index)}) is not a device")
    return kind if index is None else f"{kind}:{index}"


_HASH_SAFE = (str, bytes, bool, type(None), DType, StorageType)


def checked_key(key: Any) -> Any:
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
        f"a dict key or set member is {short(key)} ({t.__name__}); a state dict only uses strings, "
        f"small ints and flat tuples of them")


def _checked_sequence(items: Any) -> Iterable[Any]:
    if type(items) not in (list, tuple):
        raise CheckpointError(f"expected a list or tuple of items, got {type(items).__name__}")
    return items


def _checked_items(items: Any) -> List[Any]:
    return [checked_key(item) for item in _checked_sequence(items)]


ALLOWED: Dict[Tuple[str, str], Any] = {
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
REBUILDS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
            "_rebuild_parameter", "_rebuild_parameter_with_state")
for _name in REBUILDS:
    ALLOWED[("torch._utils", _name)] = _name
for _name in TORCH_DTYPES:
    ALLOWED[("torch", _name)] = DType(f"torch.{_name}")
for _name in STORAGE_TYPES:
    ALLOWED[("torch", _name)] = StorageType(f"torch.{_name}")
    ALLOWED[("torch.cuda", _name)] = StorageType(f"torch.{_name}")
ALLOWED[("torch", "UntypedStorage")] = StorageType("torch.UntypedStorage")
ALLOWED[("torch.storage", "UntypedStorage")] = StorageType("torch.UntypedStorage")


def allowed_globals() -> frozenset:
    """The ``(module, name)`` globals a checkpoint's pickle may reference; everything else is refused.

    >>> ("builtins", "eval") in allowed_globals(), ("collections", "OrderedDict") in allowed_globals()
    (False, True)
    """
    return frozenset(ALLOWED)


def _py3_name(module: str, name: str) -> Tuple[str, str]:
    """Python 2 names (``__builtin__.set``, written by protocol-2 pickles) as Python 3 names."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


# --- the opcodes ------------------------------------------------------------------------------

# Opcodes a real state dict's pickle never holds, refused by name. Those that build arbitrary
# objects or reach the copyreg registry are "unsafe"; the rest are merely not torch.save's.
_OBJECT_BUILDERS = {b"i": "INST", b"o": "OBJ", b"\x81": "NEWOBJ", b"\x92": "NEWOBJ_EX"}
_EXTENSIONS = {b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4"}
REFUSED = {
    **_OBJECT_BUILDERS, **_EXTENSIONS,
    b"0": "POP", b"1": "POP_MARK", b"2": "DUP", b"P": "PERSID",
    b"S": "STRING", b"T": "BINSTRING", b"U": "SHORT_BINSTRING",
    b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER",  # out-of-band buffers: torch.save passes none
}
# Cost of each opcode in units of MAX_PICKLE_OPS: about 56 bytes of memory it can allocate.
_COST = {b"\x8f": 4, b"\x91": 4, b"\x94": 2, b"p": 2, b"q": 2, b"r": 2, b"}": 2}


class _Truncated(Exception):
    """The pickle ends inside an opcode's argument."""


class Unpickler:
    """Loads one pickle (``data``) with the allowlisted opcodes and globals.

    ``storage(key, code, numel)`` answers a persistent id (a storage record of the archive);
    ``source`` names the file in every message.
    """

    def __init__(self, data: bytes, storage: Callable[[str, str, int], Storage], source: str):
        self._bytes = bytes(data)
        self._data = memoryview(self._bytes)
        self._end = len(data)
        self._pos = 0
        self._storage = storage
        self._source = source
        self._stack: List[Any] = []
        self._metastack: List[List[Any]] = []
        self._memo: Dict[int, Any] = {}
        self._ops = 0
        self._rebuilds = {name: getattr(self, name) for name in REBUILDS}
        self._callables = {id(f): f for f in [*(v for v in ALLOWED.values() if callable(v)),
                                              *self._rebuilds.values()]}

    # -- reading the bytes: every length checked against what is left --

    def _take(self, n: int, what: str) -> memoryview:
        left = self._end - self._pos
        if n > left:
            if n > left + 8:  # a declared length, not just a cut-off file
                raise CheckpointError(
                    f"{self._source}: its pickle declares a {what} of {n} bytes at offset {self._pos}, but only "
                    f"{left} bytes are left; the file is corrupt or hostile")
            raise _Truncated()
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def _u8(self) -> int:
        return self._take(1, "byte")[0]

    def _unpack(self, fmt: str, n: int) -> Any:
        return struct.unpack(fmt, self._take(n, "number"))[0]

    def _line(self) -> bytes:
        """A text opcode's argument up to its newline (at most MAX_LINE bytes)."""
        # Searched in place: copying a window per opcode would cost MAX_LINE bytes per opcode.
        stop = min(self._end, self._pos + limits.MAX_LINE + 1)
        end = self._bytes.find(b"\n", self._pos, stop)
        if end < 0:
            if stop - self._pos > limits.MAX_LINE:
                raise CheckpointError(f"{self._source}: a text opcode's line at offset {self._pos} is longer "
                                      f"than {limits.MAX_LINE} bytes")
            raise _Truncated()
        line = self._bytes[self._pos:end]
        self._pos = end + 1
        return line

    # -- the stack --

    def _push(self, value: Any) -> None:
        self._stack.append(value)

    def _pop(self) -> Any:
        if not self._stack:
            raise CheckpointError(f"{self._source}: its pickle is malformed (the stack is empty at offset {self._pos})")
        return self._stack.pop()

    def _top(self) -> Any:
        if not self._stack:
            raise CheckpointError(f"{self._source}: its pickle is malformed (the stack is empty at offset {self._pos})")
        return self._stack[-1]

    def _pop_mark(self) -> List[Any]:
        if not self._metastack:
            raise CheckpointError(f"{self._source}: its pickle is malformed (no MARK before offset {self._pos})")
        items = self._stack
        self._stack = self._metastack.pop()
        return items

    def _target(self, kinds: Tuple[type, ...], what: str) -> Any:
        target = self._top()
        if type(target) not in kinds:
            raise UnsafeCheckpointError(f"{self._source}: the pickle {what} a {type(target).__name__}")
        return target

    # -- integers --

    def _checked_int(self, value: int) -> int:
        # The two's-complement size of the value, as LONG1/LONG4 would store it.
        if (value.bit_length() + 8) // 8 > limits.MAX_INT_BYTES:
            raise CheckpointError(f"{self._source}: an integer of {(value.bit_length() + 8) // 8} bytes "
                                  f"(at most {limits.MAX_INT_BYTES} allowed)")
        return value

    def _long(self, n: int) -> None:
        if n < 0:
            raise CheckpointError(f"{self._source}: an integer of negative length {n}")
        if n > limits.MAX_INT_BYTES:
            raise CheckpointError(f"{self._source}: an integer of {n} bytes (at most {limits.MAX_INT_BYTES} allowed)")
        self._push(int.from_bytes(self._take(n, "integer"), "little", signed=True))

    def _text_int(self, line: bytes, long: bool) -> int:
        if long and line.endswith(b"L"):
            line = line[:-1]
        try:
            value = int(line, 0)
        except ValueError:
            raise CheckpointError(f"{self._source}: {clip(repr(line), 60)} is not an integer") from None
        return self._checked_int(value)

    # -- strings --

    def _text(self, raw: memoryview) -> str:
        try:
            return str(raw, "utf-8", "surrogatepass")
        except UnicodeDecodeError as err:
            raise CheckpointError(f"{self._source}: its pickle is malformed or truncated "
                                  f"(UnicodeDecodeError: {clip(str(err))})") from None

    # -- globals and persistent ids --

    def _find_class(self, module: Any, name: Any) -> Any:
        if type(module) is not str or type(name) is not str:
            raise UnsafeCheckpointError(f"{self._source}: a global named by a non-string {short((module, name))}")
        found = ALLOWED.get(_py3_name(module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"refusing to load {self._source}: its pickle references {short(module + '.' + name)}, "
                f"which a state dict never needs (allowed: tensors, storages, OrderedDict, plain "
                f"containers and scalars). Nothing from the file was run. If you trust the file, "
                f"convert it with PyTorch: safetensors.torch.save_file(torch.load(path), 'model.safetensors')")
        if type(found) is str:
            return self._rebuilds[found]  # a rebuild function bound to this load
        return found

    def _persistent_load(self, pid: Any) -> Storage:
        if type(pid) is not tuple or len(pid) != 5:
            raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id {short(pid)}")
        tag, storage_type, key, _location, numel = pid
        if type(tag) is bytes:
            tag = tag.decode("latin1")
        if type(key) is bytes:
            key = key.decode("latin1")
        if tag != "storage" or not isinstance(storage_type, StorageType):
            raise UnsafeCheckpointError(f"{self._source}: unexpected persistent id {short(pid)}")
        if type(key) is not str or not 0 < len(key) <= limits.MAX_KEY_LENGTH or not key.isascii() \
                or not key.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise CheckpointError(f"{self._source}: bad storage key {short(key)}")
        numel = checked_int(numel, "storage size", self._source)
        dtype = storage_type.dtype
        return self._storage(key, "|u1" if dtype is None else TORCH_DTYPES[dtype], numel)

    # -- tensor rebuilds (numpy implementations of torch._utils) --

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        if not isinstance(storage, Storage):
            raise UnsafeCheckpointError(f"{self._source}: a tensor rebuild got {type(storage).__name__}, not a storage")
        return strided(storage, storage.code, storage_offset, size, stride, self._source)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, backward_hooks,
                           dtype, metadata=None):
        # Newer dtypes (uint16/32/64, float8...) are saved on an untyped byte storage plus a dtype.
        if not isinstance(storage, Storage) or not isinstance(dtype, DType):
            raise UnsafeCheckpointError(f"{self._source}: _rebuild_tensor_v3 expects a storage and a dtype")
        code = TORCH_DTYPES.get(dtype.torch_name)
        if code is None:
            raise CheckpointError(f"{self._source}: unsupported tensor dtype {short(dtype)}")
        return strided(storage, code, storage_offset, size, stride, self._source)

    def _rebuild_parameter(self, data, requires_grad, backward_hooks):
        return data

    def _rebuild_parameter_with_state(self, data, requires_grad, backward_hooks, state):
        return data

    # -- the loop --

    def load(self) -> Any:
        """The unpickled object; :class:`CheckpointError` for anything malformed or refused."""
        try:
            return self._run()
        except _Truncated:
            raise CheckpointError(f"{self._source}: its pickle is malformed or truncated (it ends inside an "
                                  f"opcode at offset {self._pos}); the file is corrupt") from None
        except CheckpointError:
            raise
        except (TypeError, ValueError, OverflowError, KeyError, IndexError, struct.error, RecursionError) as err:
            # Raised by a rebuild called with the wrong arguments and the like. Only the
            # type is reported: such messages can quote file-controlled objects.
            raise CheckpointError(f"{self._source}: its pickle is malformed ({type(err).__name__} at offset "
                                  f"{self._pos}); the file is corrupt") from None

    def _run(self) -> Any:
        table = _DISPATCH
        cost = _COST
        budget = limits.MAX_PICKLE_OPS
        data = self._data
        while True:
            if self._pos >= self._end:
                raise _Truncated()
            op = data[self._pos:self._pos + 1].tobytes()
            start = self._pos
            self._pos += 1
            self._ops += cost.get(op, 1)
            if self._ops > budget:
                raise CheckpointError(
                    f"{self._source}: the pickle runs more opcodes than MAX_PICKLE_OPS ({budget} units); "
                    f"refusing it as a resource bomb (raise ms_weightnorm._checkpoint.limits.MAX_PICKLE_OPS "
                    f"for a trusted file)")
            handler = table.get(op)
            if handler is None:
                self._refuse(op, start)
            if handler is _stop:
                return self._pop()
            handler(self)

    def _refuse(self, op: bytes, at: int) -> None:
        name = REFUSED.get(op)
        if name is None:
            raise CheckpointError(f"{self._source}: its pickle is malformed: byte 0x{op.hex()} at offset {at} is not "
                                  f"an opcode this reader accepts; the file is corrupt")
        if op in _OBJECT_BUILDERS:
            raise UnsafeCheckpointError(
                f"refusing to load {self._source}: its pickle builds an object by instantiating a class "
                f"(opcode {name}), which a state dict never does. Nothing from the file was run.")
        if op in _EXTENSIONS:
            raise UnsafeCheckpointError(
                f"refusing to load {self._source}: its pickle uses the copyreg extension registry (opcode "
                f"{name}), which a state dict never does. Nothing from the file was run.")
        raise UnsafeCheckpointError(
            f"refusing to load {self._source}: its pickle uses opcode {name} (offset {at}), which torch.save "
            f"never writes for a state dict. Nothing from the file was run.")


# Each handler reads its argument and changes the stack. Names follow pickletools' opcode names.

def _stop(u: Unpickler) -> None:  # the loop returns on it
    raise AssertionError


def _proto(u: Unpickler) -> None:
    version = u._u8()
    if version > 5:
        raise CheckpointError(f"{u._source}: pickle protocol {version} is not supported (0-5)")


def _frame(u: Unpickler) -> None:
    n = u._unpack("<Q", 8)
    if n > u._end - u._pos:
        raise CheckpointError(f"{u._source}: its pickle declares a frame of {n} bytes at offset {u._pos}, but only "
                              f"{u._end - u._pos} bytes are left; the file is corrupt or hostile")


def _mark(u: Unpickler) -> None:
    if len(u._metastack) >= limits.MAX_DEPTH:
        raise CheckpointError(f"{u._source}: pickle marks nested deeper than {limits.MAX_DEPTH}")
    u._metastack.append(u._stack)
    u._stack = []


def _int(u: Unpickler) -> None:
    line = u._line()
    if line == b"00":
        u._push(False)
    elif line == b"01":
        u._push(True)
    else:
        u._push(u._text_int(line, long=False))


def _long_text(u: Unpickler) -> None:
    u._push(u._text_int(u._line(), long=True))


def _float_text(u: Unpickler) -> None:
    line = u._line()
    try:
        u._push(float(line))
    except ValueError:
        raise CheckpointError(f"{u._source}: {clip(repr(line), 60)} is not a float") from None


def _unicode_text(u: Unpickler) -> None:
    try:
        u._push(u._line().decode("raw-unicode-escape"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{u._source}: its pickle is malformed or truncated "
                              f"(UnicodeDecodeError: {clip(str(err))})") from None


def _global(u: Unpickler) -> None:
    module = u._text(memoryview(u._line()))
    name = u._text(memoryview(u._line()))
    u._push(u._find_class(module, name))


def _stack_global(u: Unpickler) -> None:
    name = u._pop()
    module = u._pop()
    u._push(u._find_class(module, name))


def _reduce(u: Unpickler) -> None:
    args = u._pop()
    func = u._top()
    if id(func) not in u._callables or u._callables[id(func)] is not func:
        raise UnsafeCheckpointError(f"{u._source}: the pickle calls {short(func)}, which is not allowed")
    if type(args) is not tuple:
        raise CheckpointError(f"{u._source}: call arguments are a {type(args).__name__}, not a tuple")
    u._stack[-1] = func(*args)


def _build(u: Unpickler) -> None:
    u._pop()  # the state: dropped, an OrderedDict's BUILD carries only metadata
    inst = u._top()
    if type(inst) not in (collections.OrderedDict, dict):
        raise UnsafeCheckpointError(
            f"refusing to load {u._source}: its pickle sets the state of a "
            f"{type(inst).__name__}, which a state dict never does")


def _binpersid(u: Unpickler) -> None:
    u._push(u._persistent_load(u._pop()))


def _setitem(u: Unpickler) -> None:
    value = u._pop()
    key = u._pop()
    u._target((dict, collections.OrderedDict), "sets items of")[checked_key(key)] = value


def _setitems(u: Unpickler) -> None:
    items = u._pop_mark()
    target = u._target((dict, collections.OrderedDict), "sets items of")
    if len(items) % 2:
        raise CheckpointError(f"{u._source}: SETITEMS with an odd number of items")
    for i in range(0, len(items), 2):
        target[checked_key(items[i])] = items[i + 1]


def _dict(u: Unpickler) -> None:
    items = u._pop_mark()
    if len(items) % 2:
        raise CheckpointError(f"{u._source}: DICT with an odd number of items")
    u._push({checked_key(items[i]): items[i + 1] for i in range(0, len(items), 2)})


def _additems(u: Unpickler) -> None:
    items = u._pop_mark()
    u._target((set,), "adds items to").update(_checked_items(items))


def _frozenset(u: Unpickler) -> None:
    u._push(frozenset(_checked_items(u._pop_mark())))


def _append(u: Unpickler) -> None:
    value = u._pop()
    u._target((list,), "appends to").append(value)


def _appends(u: Unpickler) -> None:
    items = u._pop_mark()
    u._target((list,), "appends to").extend(items)


def _tuple_n(n: int) -> Callable[[Unpickler], None]:
    def run(u: Unpickler) -> None:
        if len(u._stack) < n:
            raise CheckpointError(f"{u._source}: its pickle is malformed (the stack is empty at offset {u._pos})")
        items = tuple(u._stack[len(u._stack) - n:])
        del u._stack[len(u._stack) - n:]
        u._push(items)
    return run


def _put(u: Unpickler, index: int) -> None:
    u._memo[index] = u._top()


def _get(u: Unpickler, index: int) -> None:
    try:
        u._push(u._memo[index])
    except KeyError:
        raise CheckpointError(f"{u._source}: its pickle is malformed (memo entry {index} is not set)") from None


def _memo_index(line: bytes, u: Unpickler) -> int:
    try:
        index = int(line)
    except ValueError:
        raise CheckpointError(f"{u._source}: {clip(repr(line), 60)} is not a memo index") from None
    if not 0 <= index < 1 << 32:
        raise CheckpointError(f"{u._source}: memo index {short(index)} out of range")
    return index


_DISPATCH: Dict[bytes, Callable[[Unpickler], None]] = {
    b".": _stop,
    b"\x80": _proto,
    b"\x95": _frame,
    b"(": _mark,
    # integers and constants
    b"I": _int,
    b"J": lambda u: u._push(u._unpack("<i", 4)),
    b"K": lambda u: u._push(u._u8()),
    b"M": lambda u: u._push(u._unpack("<H", 2)),
    b"L": _long_text,
    b"\x8a": lambda u: u._long(u._u8()),
    b"\x8b": lambda u: u._long(u._unpack("<i", 4)),
    b"N": lambda u: u._push(None),
    b"\x88": lambda u: u._push(True),
    b"\x89": lambda u: u._push(False),
    b"F": _float_text,
    b"G": lambda u: u._push(u._unpack(">d", 8)),
    # strings and bytes
    b"V": _unicode_text,
    b"X": lambda u: u._push(u._text(u._take(u._unpack("<I", 4), "string"))),
    b"\x8c": lambda u: u._push(u._text(u._take(u._u8(), "string"))),
    b"\x8d": lambda u: u._push(u._text(u._take(u._unpack("<Q", 8), "string"))),
    b"B": lambda u: u._push(u._take(u._unpack("<I", 4), "bytes object").tobytes()),
    b"C": lambda u: u._push(u._take(u._u8(), "bytes object").tobytes()),
    b"\x8e": lambda u: u._push(u._take(u._unpack("<Q", 8), "bytes object").tobytes()),
    # protocol 5 writes a bytearray value this way; its length is checked like any other
    b"\x96": lambda u: u._push(bytearray(u._take(u._unpack("<Q", 8), "bytearray"))),
    # containers
    b")": lambda u: u._push(()),
    b"t": lambda u: u._push(tuple(u._pop_mark())),
    b"\x85": _tuple_n(1),
    b"\x86": _tuple_n(2),
    b"\x87": _tuple_n(3),
    b"]": lambda u: u._push([]),
    b"l": lambda u: u._push(u._pop_mark()),
    b"a": _append,
    b"e": _appends,
    b"}": lambda u: u._push({}),
    b"d": _dict,
    b"s": _setitem,
    b"u": _setitems,
    b"\x8f": lambda u: u._push(set()),
    b"\x90": _additems,
    b"\x91": _frozenset,
    # the memo
    b"p": lambda u: _put(u, _memo_index(u._line(), u)),
    b"q": lambda u: _put(u, u._u8()),
    b"r": lambda u: _put(u, u._unpack("<I", 4)),
    b"\x94": lambda u: _put(u, len(u._memo)),
    b"g": lambda u: _get(u, _memo_index(u._line(), u)),
    b"h": lambda u: _get(u, u._u8()),
    b"j": lambda u: _get(u, u._unpack("<I", 4)),
    # globals, calls, persistent ids
    b"c": _global,
    b"\x93": _stack_global,
    b"R": _reduce,
    b"b": _build,
    b"Q": _binpersid,
}
# The two tables partition the opcodes a pickle can hold: nothing is accepted by default.
assert not set(_DISPATCH) & set(REFUSED)


def accepted_opcodes() -> frozenset:
    """The opcodes the reader dispatches (one byte each); every other byte is refused.

    >>> b"R" in accepted_opcodes(), b"\\x81" in accepted_opcodes()  # REDUCE, NEWOBJ
    (True, False)
    """
    return frozenset(_DISPATCH)
