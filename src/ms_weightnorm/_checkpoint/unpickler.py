"""A pickle reader that understands only what ``torch.save`` writes, with a cost model.

Why not :mod:`pickle`: the C unpickler offers no hook but ``find_class`` and
``persistent_load``, and the pure-Python ``pickle._Unpickler`` dispatches every opcode of every
protocol, allocating what an opcode declares before checking that the bytes exist. Neither can
bound what an opcode costs. So this is a small dispatch loop over the pickle's bytes with a fixed
table of opcodes: the ones ``torch.save`` emits at protocols 2 to 5 for state dicts, optimizer
state dicts and nested checkpoints (``{"generator": state_dict, "optim": ...}``), plus the
plain-value opcodes of protocols 0 and 1. Every other opcode is refused by name before it acts.

**The cost model.** Every opcode is charged what it allocates or copies, in units of about one
byte of memory (:data:`COSTS`: a base per opcode, the bytes of every string built, container
slots, one hash insert per dict item or memo entry, per-tensor records), *before* it builds
when the size is known. Charges add up over the whole load and are never credited back, so work
that builds and discards (a ``BUILD`` state, an overwritten ``SETITEM``) is paid for too. The
total may not exceed ``Limits.pickle_budget(len(pickle))``: ``pickle_cost_per_byte`` (64) units
per byte of the pickle plus ``pickle_cost_base`` (16 MiB), so no file can multiply its own size
by more than that. docs/security.md gives the measured memory and time per unit.

**Only what a state dict needs is built.** dict and OrderedDict keys are strings or ints (what
``torch.save`` writes: names, and an optimizer's parameter indices), ints within +-2**61 whose
hashes are distinct, so no crafted key set can make a dict quadratic (str hashes are randomized
per process). Tuples are values (call arguments, sizes, an optimizer's ``betas``), never keys.
set, frozenset and bytearray are refused: no ``torch.save`` checkpoint holds them.

Callables are reached only through ``GLOBAL``/``STACK_GLOBAL``, which answer from an allowlist of
numpy implementations written here (tensor and storage rebuilds, ``OrderedDict``, dtypes, a few
builtins); ``REDUCE`` calls only what the allowlist returned; ``BUILD`` is accepted only on a
dict or ``OrderedDict`` (torch stores the state dict's ``_metadata`` there) and its state is
dropped. ``FRAME`` boundaries are enforced as CPython's pure-Python unpickler enforces them.
"""
from __future__ import annotations

import _compat_pickle
import collections
import struct
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import limits
from .errors import CheckpointError, clip, error, fmt
from .tensors import (TORCH_DTYPES, STORAGE_TYPES, DType, Storage, StorageType, checked_dims, checked_int,
                      strided)

# What each thing built is charged, in units of about one byte of memory (measured ratios of peak
# RSS to units are in docs/security.md). Every opcode pays OP; the rest are added to it.
COSTS: Dict[str, int] = {
    "OP": 16,           # dispatch (time), and the stack slot of whatever it pushes
    "SCALAR": 40,       # an int (32 bytes up to 2**60), float or complex object
    "STRING": 56,       # a bytes value's or a device name's header, besides its bytes (a str pays its getsizeof)
    "CONTAINER": 160,   # a list, tuple or dict header, and its visit when the tree is finished
    "SLOT": 16,         # one list or tuple slot (with list over-allocation)
    "HASH": 96,         # one dict or memo insert (entry, index, amortized growth)
    "ORDERED_DICT": 320,  # an OrderedDict: a dict, its linked list's root, and its first table
    "ORDERED_HASH": 160,  # one OrderedDict insert (its linked node too)
    "STORAGE": 512,     # a storage record description
    "TENSOR": 1024,     # a tensor description (the closure that reads it, its bounds)
    "TENSOR_DIM": 48,   # per dimension of a tensor: its shape, strides and steps (three tuple slots)
}
_OP = COSTS["OP"]
_SCALAR = COSTS["SCALAR"]
_STRING = COSTS["STRING"]
_CONTAINER = COSTS["CONTAINER"]
_SLOT = COSTS["SLOT"]
_HASH = COSTS["HASH"]

# Dict keys: ints within this bound have distinct hashes (hash(n) == n for |n| < 2**61 - 1).
_KEY_INT = (1 << 61) - 2


# --- the allowed globals ------------------------------------------------------------------

def _make_ordered_dict(u: "Unpickler", items: Any = ()) -> collections.OrderedDict:
    pairs = _checked_sequence(u, items)
    u._charge(COSTS["ORDERED_DICT"] + COSTS["ORDERED_HASH"] * len(pairs))
    out: collections.OrderedDict = collections.OrderedDict()
    for pair in pairs:
        if type(pair) not in (tuple, list) or len(pair) != 2:
            raise u._error(f"OrderedDict item {fmt(pair)} is not a (key, value) pair", "pickle.ordered_dict")
        out[u._key(pair[0])] = pair[1]
    return out


def _make_complex(u: "Unpickler", real: Any = 0.0, imag: Any = 0.0) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise u._error(f"complex({fmt(real)}, {fmt(imag)}) is not made of two numbers", "pickle.complex")
    u._charge(_SCALAR)
    return complex(real, imag)


def _codecs_encode(u: "Unpickler", text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles (torch.save's default) store bytes as ``_codecs.encode(str, "latin1")``.
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise u._error(f"_codecs.encode is only allowed to rebuild bytes (latin1), got encoding {fmt(encoding)}",
                       "pickle.codecs", unsafe=True)
    u._charge(_STRING + 2 * len(text))  # each call copies: a memoized string encoded again is paid again
    return text.encode("latin1")


def _torch_size(u: "Unpickler", dims: Any = ()) -> Tuple[int, ...]:
    out = checked_dims(dims, "size", u._source)
    u._charge(_CONTAINER + _SLOT * len(out))
    return out


def _torch_device(u: "Unpickler", kind: Any, index: Any = None) -> str:
    if type(kind) is not str or len(kind) > 64 or not (index is None or type(index) is int):
        raise u._error(f"torch.device({fmt(kind)}, {fmt(index)}) is not a device", "pickle.device")
    u._charge(_STRING + 80)
    return kind if index is None else f"{kind}:{index}"


ALLOWED: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): "_make_ordered_dict",
    ("torch", "Size"): "_torch_size",
    ("torch", "device"): "_torch_device",
    ("_codecs", "encode"): "_codecs_encode",
    ("builtins", "complex"): "_make_complex",
}
_HELPERS = {"_make_ordered_dict": _make_ordered_dict, "_torch_size": _torch_size, "_torch_device": _torch_device,
            "_codecs_encode": _codecs_encode, "_make_complex": _make_complex}
# Globals a pickle may name that no torch.save checkpoint needs: refused with the reason.
NOT_NEEDED = {("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray")}
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


def _checked_sequence(u: "Unpickler", items: Any) -> Any:
    if type(items) not in (list, tuple):
        raise u._error(f"expected a list or tuple of items, got {type(items).__name__}", "pickle.items")
    return items


# --- the opcodes ------------------------------------------------------------------------------

# Opcodes a real state dict's pickle never holds, refused by name. Those that build arbitrary
# objects or reach the copyreg registry are "unsafe"; the rest are merely not torch.save's.
_OBJECT_BUILDERS = {b"i": "INST", b"o": "OBJ", b"\x81": "NEWOBJ", b"\x92": "NEWOBJ_EX"}
_EXTENSIONS = {b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4"}
# Containers no torch.save checkpoint holds: refused (they would only widen what is hashed and copied).
_NOT_NEEDED = {b"\x8f": "EMPTY_SET", b"\x90": "ADDITEMS", b"\x91": "FROZENSET", b"\x96": "BYTEARRAY8"}
REFUSED = {
    **_OBJECT_BUILDERS, **_EXTENSIONS, **_NOT_NEEDED,
    b"0": "POP", b"1": "POP_MARK", b"2": "DUP", b"P": "PERSID",
    b"S": "STRING", b"T": "BINSTRING", b"U": "SHORT_BINSTRING",
    b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER",  # out-of-band buffers: torch.save passes none
}


class _Truncated(Exception):
    """The pickle ends inside an opcode's argument."""


class Unpickler:
    """Loads one pickle (``data``) with the allowlisted opcodes and globals, within its cost budget.

    ``storage(key, code, numel)`` answers a persistent id (a storage record of the archive);
    ``source`` names the file in every message. ``spent`` is the cost charged so far.
    """

    def __init__(self, data: bytes, storage: Callable[[str, str, int], Storage], source: str):
        self._bytes = bytes(data)
        self._data = memoryview(self._bytes)
        self._end = len(data)
        self._pos = 0
        self._frame_end: Optional[int] = None
        self._storage = storage
        self._source = source
        self._stack: List[Any] = []
        self._metastack: List[List[Any]] = []
        self._memo: Dict[int, Any] = {}
        self._limits = limits.current()
        self.budget = self._limits.pickle_budget(self._end)
        self.spent = 0
        self._globals: Dict[Tuple[str, str], Any] = {}
        self._callables: Dict[int, Callable[..., Any]] = {}
        for key, found in ALLOWED.items():
            if type(found) is str:
                method = getattr(self, found, None) or _bind(_HELPERS[found], self)
                self._callables[id(method)] = method
                self._globals[key] = method
            else:
                self._globals[key] = found

    def _error(self, reason: str, rule: str, unsafe: bool = False) -> CheckpointError:
        return error(self._source, reason, rule, unsafe)

    # -- the cost model --

    def _charge(self, units: int) -> None:
        self.spent += units
        if self.spent > self.budget:
            lim = self._limits
            raise self._error(
                f"its pickle would cost more than its budget ({self.spent} units at offset {self._pos}; "
                f"{lim.pickle_cost_per_byte} per pickle byte x {self._end} bytes + {lim.pickle_cost_base} = "
                f"{self.budget}): it builds far more than a state dict of its size; refused as a resource bomb. "
                f"For a trusted file, read it inside ms_weightnorm.torch_io.limits(pickle_cost_per_byte=...)",
                "pickle.cost")

    # -- reading the bytes: every length checked against what is left and against the frame --

    def _take(self, n: int, what: str) -> memoryview:
        if self._frame_end is not None and n:
            if self._pos == self._frame_end:
                self._frame_end = None  # the frame is used up: reading goes on unframed, as in CPython
            elif self._pos + n > self._frame_end:
                raise self._error(f"its pickle has an opcode at offset {self._pos} that runs past the end of its "
                                  f"frame (offset {self._frame_end}); the file is corrupt", "pickle.frame_overrun")
        left = self._end - self._pos
        if n > left:
            if n > left + 8:  # a declared length, not just a cut-off file
                raise self._error(f"its pickle declares a {what} of {n} bytes at offset {self._pos}, but only "
                                  f"{left} bytes are left; the file is corrupt or hostile", "pickle.length")
            raise _Truncated()
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def _u8(self) -> int:
        return self._take(1, "byte")[0]

    def _unpack(self, fmt_: str, n: int) -> Any:
        return struct.unpack(fmt_, self._take(n, "number"))[0]

    def _line(self) -> bytes:
        """A text opcode's argument up to its newline (at most max_line bytes, inside the frame)."""
        if self._frame_end is not None and self._pos == self._frame_end:
            self._frame_end = None
        limit = self._limits.max_line
        end_ = self._end if self._frame_end is None else self._frame_end
        # Searched in place: copying a window per opcode would cost max_line bytes per opcode.
        stop = min(end_, self._pos + limit + 1)
        end = self._bytes.find(b"\n", self._pos, stop)
        if end < 0:
            if stop - self._pos > limit:
                raise self._error(f"a text opcode's line at offset {self._pos} is longer than {limit} bytes",
                                  "pickle.line")
            if self._frame_end is not None:
                raise self._error(f"its pickle has a line at offset {self._pos} that runs past the end of its "
                                  f"frame (offset {self._frame_end}); the file is corrupt", "pickle.frame_overrun")
            raise _Truncated()
        line = self._bytes[self._pos:end]
        self._pos = end + 1
        self._charge(len(line))
        return line

    # -- the stack --

    def _push(self, value: Any) -> None:
        self._stack.append(value)

    def _pop(self) -> Any:
        if not self._stack:
            raise self._error(f"its pickle is malformed (the stack is empty at offset {self._pos})", "pickle.stack")
        return self._stack.pop()

    def _top(self) -> Any:
        if not self._stack:
            raise self._error(f"its pickle is malformed (the stack is empty at offset {self._pos})", "pickle.stack")
        return self._stack[-1]

    def _pop_mark(self) -> List[Any]:
        if not self._metastack:
            raise self._error(f"its pickle is malformed (no MARK before offset {self._pos})", "pickle.mark")
        items = self._stack
        self._stack = self._metastack.pop()
        return items

    def _target(self, kinds: Tuple[type, ...], what: str) -> Any:
        target = self._top()
        if type(target) not in kinds:
            raise self._error(f"the pickle {what} a {type(target).__name__}", "pickle.target", unsafe=True)
        return target

    def _key(self, key: Any) -> Any:
        """``key`` if it is a dict key ``torch.save`` writes (a str, or an int of distinct hash), else an error."""
        t = type(key)
        if t is str or (t is int and -_KEY_INT <= key <= _KEY_INT):
            return key
        raise self._error(
            f"a dict key is {fmt(key)} ({t.__name__}); checkpoints only use strings and ints as keys",
            "pickle.dict_key")

    # -- integers --

    def _checked_int(self, value: int) -> int:
        # The two's-complement size of the value, as LONG1/LONG4 would store it (the same rule for both).
        size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
        if size > self._limits.max_int_bytes:
            raise self._error(f"an integer of {size} bytes (at most {self._limits.max_int_bytes} allowed)",
                              "pickle.int_size")
        return value

    def _long(self, n: int) -> None:
        if n < 0:
            raise self._error(f"an integer of negative length {n}", "pickle.int_size")
        if n > self._limits.max_int_bytes:
            raise self._error(f"an integer of {n} bytes (at most {self._limits.max_int_bytes} allowed)",
                              "pickle.int_size")
        self._charge(_SCALAR + n)
        self._push(self._checked_int(int.from_bytes(self._take(n, "integer"), "little", signed=True)))

    def _text_int(self, line: bytes, long: bool) -> int:
        if long and line.endswith(b"L"):
            line = line[:-1]
        # Parsing decimal text is quadratic in its length: the length is bounded first (a 256-bit
        # integer has at most 78 digits; a sign, a base prefix and underscores add a few).
        most = self._limits.max_int_bytes * 8 // 3 + 8
        if len(line.strip()) > most:
            raise self._error(f"an integer of more than {self._limits.max_int_bytes} bytes (a text integer of "
                              f"{len(line)} characters)", "pickle.int_size")
        try:
            value = int(line, 0)
        except ValueError:
            raise self._error(f"{clip(line.decode('latin1'), 60)} is not an integer", "pickle.int_text") from None
        self._charge(_SCALAR)
        return self._checked_int(value)

    # -- strings --

    def _text(self, raw: memoryview) -> str:
        try:
            out = str(raw, "utf-8", "surrogatepass")
        except UnicodeDecodeError as err:
            raise self._error(f"its pickle is malformed or truncated (UnicodeDecodeError: {clip(str(err))})",
                              "pickle.utf8") from None
        self._charge(len(raw) + sys.getsizeof(out))
        return out

    def _bytes_value(self, raw: memoryview) -> bytes:
        self._charge(_STRING + 2 * len(raw))
        return raw.tobytes()

    # -- globals and persistent ids --

    def _find_class(self, module: Any, name: Any) -> Any:
        if type(module) is not str or type(name) is not str:
            raise self._error(f"a global named by a non-string {fmt((module, name))}", "pickle.global",
                              unsafe=True)
        key = _py3_name(module, name)
        found = self._globals.get(key)
        if found is None:
            if key in NOT_NEEDED:
                raise self._error(
                    f"its pickle builds a {key[1]}, which no torch.save checkpoint holds; such values are not "
                    f"read (save it as a list, or as bytes)", "pickle.not_needed")
            raise self._error(
                f"refusing to load: its pickle references {clip(module + '.' + name, 120)}, which a state dict "
                f"never needs (allowed: tensors, storages, OrderedDict, plain containers and scalars). Nothing "
                f"from the file was run. If you trust the file, convert it with PyTorch: "
                f"safetensors.torch.save_file(torch.load(path), 'model.safetensors')", "pickle.global",
                unsafe=True)
        return found

    def _persistent_load(self, pid: Any) -> Storage:
        if type(pid) is not tuple or len(pid) != 5:
            raise self._error(f"unexpected persistent id {fmt(pid)}", "pickle.persistent_id", unsafe=True)
        tag, storage_type, key, _location, numel = pid
        if type(tag) is bytes:
            tag = tag.decode("latin1")
        if type(key) is bytes:
            key = key.decode("latin1")
        if tag != "storage" or not isinstance(storage_type, StorageType):
            raise self._error(f"unexpected persistent id {fmt(pid)}", "pickle.persistent_id", unsafe=True)
        if type(key) is not str or not 0 < len(key) <= self._limits.max_key_length or not key.isascii() \
                or not key.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise self._error(f"bad storage key {fmt(key)}", "pickle.storage_key")
        numel = checked_int(numel, "storage size", self._source)
        dtype = storage_type.dtype
        self._charge(COSTS["STORAGE"])
        return self._storage(key, "|u1" if dtype is None else TORCH_DTYPES[dtype], numel)

    # -- tensor rebuilds (numpy implementations of torch._utils) --

    def _charge_tensor(self, size: Any) -> None:
        # Charged before the description is built; a size that is no sequence is refused by strided().
        dims = len(size) if type(size) in (tuple, list) else 0
        self._charge(COSTS["TENSOR"] + COSTS["TENSOR_DIM"] * dims)

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        if not isinstance(storage, Storage):
            raise self._error(f"a tensor rebuild got {type(storage).__name__}, not a storage", "pickle.rebuild",
                              unsafe=True)
        self._charge_tensor(size)
        return strided(storage, storage.code, storage_offset, size, stride, self._source)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, backward_hooks,
                           dtype, metadata=None):
        # Newer dtypes (uint16/32/64, float8...) are saved on an untyped byte storage plus a dtype.
        if not isinstance(storage, Storage) or not isinstance(dtype, DType):
            raise self._error("_rebuild_tensor_v3 expects a storage and a dtype", "pickle.rebuild", unsafe=True)
        code = TORCH_DTYPES.get(dtype.torch_name)
        if code is None:
            raise self._error(f"unsupported tensor dtype {fmt(dtype)}", "pickle.dtype")
        self._charge_tensor(size)
        return strided(storage, code, storage_offset, size, stride, self._source)

    def _rebuild_parameter(self, data, requires_grad, backward_hooks):
        return data

    def _rebuild_parameter_with_state(self, data, requires_grad, backward_hooks, state):
        return data

    # -- the loop --

    def load(self) -> Any:
        """The unpickled object; :class:`CheckpointError` for anything malformed, refused or over budget."""
        try:
            return self._run()
        except _Truncated:
            raise self._error(f"its pickle is malformed or truncated (it ends inside an opcode at offset "
                              f"{self._pos}); the file is corrupt", "pickle.truncated") from None
        except CheckpointError:
            raise
        except (TypeError, ValueError, OverflowError, KeyError, IndexError, struct.error, RecursionError) as err:
            # Raised by a rebuild called with the wrong arguments and the like. Only the
            # type is reported: such messages can quote file-controlled objects.
            raise self._error(f"its pickle is malformed ({type(err).__name__} at offset {self._pos}); the file "
                              f"is corrupt", "pickle.malformed") from None

    def _run(self) -> Any:
        table = _DISPATCH
        data = self._bytes
        budget = self.budget
        end = self._end
        while True:
            start = self._pos
            if start >= end:
                raise _Truncated()
            if self._frame_end is not None and start >= self._frame_end:
                self._frame_end = None
            op = data[start:start + 1]
            self._pos = start + 1
            self.spent += _OP
            if self.spent > budget:
                self._charge(0)  # raises, naming the budget
            handler = table.get(op)
            if handler is None:
                self._refuse(op, start)
            if handler is _stop:
                return self._pop()
            handler(self)

    def _refuse(self, op: bytes, at: int) -> None:
        name = REFUSED.get(op)
        if name is None:
            raise self._error(f"its pickle is malformed: byte 0x{op.hex()} at offset {at} is not an opcode this "
                              f"reader accepts; the file is corrupt", "pickle.opcode")
        if op in _OBJECT_BUILDERS:
            raise self._error(
                f"refusing to load: its pickle builds an object by instantiating a class (opcode {name}), which "
                f"a state dict never does. Nothing from the file was run.", "pickle.opcode", unsafe=True)
        if op in _EXTENSIONS:
            raise self._error(
                f"refusing to load: its pickle uses the copyreg extension registry (opcode {name}), which a "
                f"state dict never does. Nothing from the file was run.", "pickle.opcode", unsafe=True)
        if op in _NOT_NEEDED:
            raise self._error(
                f"its pickle builds a set, frozenset or bytearray (opcode {name}, offset {at}), which no "
                f"torch.save checkpoint holds; such values are not read", "pickle.not_needed")
        raise self._error(
            f"refusing to load: its pickle uses opcode {name} (offset {at}), which torch.save never writes for "
            f"a state dict. Nothing from the file was run.", "pickle.opcode", unsafe=True)


def _bind(function: Callable[..., Any], u: Unpickler) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return function(u, *args)
    call.__name__ = function.__name__
    return call


# Each handler reads its argument and changes the stack. Names follow pickletools' opcode names.

def _stop(u: Unpickler) -> None:  # the loop returns on it
    raise AssertionError


def _proto(u: Unpickler) -> None:
    version = u._u8()
    if version > 5:
        raise u._error(f"pickle protocol {version} is not supported (0-5)", "pickle.protocol")


def _frame(u: Unpickler) -> None:
    # CPython's rule: a new frame only once the current one is used up.
    if u._frame_end is not None and u._pos != u._frame_end:
        raise u._error(f"its pickle starts a new frame at offset {u._pos - 1}, before the end of the current "
                       f"one (offset {u._frame_end}); the file is corrupt", "pickle.frame_overlap")
    n = u._unpack("<Q", 8)
    if n > u._end - u._pos:
        raise u._error(f"its pickle declares a frame of {n} bytes at offset {u._pos}, but only "
                       f"{u._end - u._pos} bytes are left; the file is corrupt or hostile", "pickle.length")
    u._frame_end = u._pos + n if n else None


def _mark(u: Unpickler) -> None:
    if len(u._metastack) >= u._limits.max_depth:
        raise u._error(f"pickle marks nested deeper than {u._limits.max_depth}", "pickle.depth")
    u._charge(_CONTAINER)
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
    if len(line) > 64:  # float() of long digit strings is not linear either; no float needs more
        raise u._error(f"a text float of {len(line)} characters (at most 64 allowed)", "pickle.float_text")
    try:
        value = float(line)
    except ValueError:
        raise u._error(f"{clip(line.decode('latin1'), 60)} is not a float", "pickle.float_text") from None
    u._charge(_SCALAR)
    u._push(value)


def _binfloat(u: Unpickler) -> None:
    u._charge(_SCALAR)
    u._push(u._unpack(">d", 8))


def _small_int(u: Unpickler, value: int) -> None:
    if not -5 <= value <= 256:  # CPython's cached small ints cost nothing new
        u._charge(_SCALAR)
    u._push(value)


def _unicode_text(u: Unpickler) -> None:
    line = u._line()
    try:
        out = line.decode("raw-unicode-escape")
    except UnicodeDecodeError as err:
        raise u._error(f"its pickle is malformed or truncated (UnicodeDecodeError: {clip(str(err))})",
                       "pickle.utf8") from None
    u._charge(sys.getsizeof(out))
    u._push(out)


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
    if u._callables.get(id(func)) is not func:
        raise u._error(f"the pickle calls {fmt(func)}, which is not allowed", "pickle.call", unsafe=True)
    if type(args) is not tuple:
        raise u._error(f"call arguments are a {type(args).__name__}, not a tuple", "pickle.call")
    u._stack[-1] = func(*args)


def _build(u: Unpickler) -> None:
    u._pop()  # the state: dropped, an OrderedDict's BUILD carries only metadata
    inst = u._top()
    if type(inst) not in (collections.OrderedDict, dict):
        raise u._error(f"refusing to load: its pickle sets the state of a {type(inst).__name__}, which a state "
                       f"dict never does", "pickle.build", unsafe=True)


def _binpersid(u: Unpickler) -> None:
    u._push(u._persistent_load(u._pop()))


def _setitem(u: Unpickler) -> None:
    value = u._pop()
    key = u._pop()
    target = u._target((dict, collections.OrderedDict), "sets items of")
    u._charge(_HASH)
    target[u._key(key)] = value


def _setitems(u: Unpickler) -> None:
    items = u._pop_mark()
    target = u._target((dict, collections.OrderedDict), "sets items of")
    if len(items) % 2:
        raise u._error("SETITEMS with an odd number of items", "pickle.setitems")
    u._charge(_HASH * (len(items) // 2))
    for i in range(0, len(items), 2):
        target[u._key(items[i])] = items[i + 1]


def _dict(u: Unpickler) -> None:
    items = u._pop_mark()
    if len(items) % 2:
        raise u._error("DICT with an odd number of items", "pickle.setitems")
    u._charge(_CONTAINER + _HASH * (len(items) // 2))
    u._push({u._key(items[i]): items[i + 1] for i in range(0, len(items), 2)})


def _empty(kind: type) -> Callable[[Unpickler], None]:
    def run(u: Unpickler) -> None:
        u._charge(_CONTAINER)
        u._push(kind())
    return run


def _empty_tuple(u: Unpickler) -> None:
    u._push(())  # the empty tuple is a singleton


def _list(u: Unpickler) -> None:
    items = u._pop_mark()
    u._charge(_SLOT * len(items))  # the MARK paid for the list itself
    u._push(items)


def _tuple(u: Unpickler) -> None:
    items = u._pop_mark()
    u._charge(_CONTAINER + _SLOT * len(items))
    u._push(tuple(items))


def _append(u: Unpickler) -> None:
    value = u._pop()
    target = u._target((list,), "appends to")
    u._charge(_SLOT)
    target.append(value)


def _appends(u: Unpickler) -> None:
    items = u._pop_mark()
    target = u._target((list,), "appends to")
    u._charge(_SLOT * len(items))
    target.extend(items)


def _tuple_n(n: int) -> Callable[[Unpickler], None]:
    def run(u: Unpickler) -> None:
        if len(u._stack) < n:
            raise u._error(f"its pickle is malformed (the stack is empty at offset {u._pos})", "pickle.stack")
        u._charge(_CONTAINER + _SLOT * n)
        items = tuple(u._stack[len(u._stack) - n:])
        del u._stack[len(u._stack) - n:]
        u._push(items)
    return run


def _put(u: Unpickler, index: int) -> None:
    u._charge(_HASH)
    u._memo[index] = u._top()


def _get(u: Unpickler, index: int) -> None:
    try:
        u._push(u._memo[index])
    except KeyError:
        raise u._error(f"its pickle is malformed (memo entry {index} is not set)", "pickle.memo") from None


def _memo_index(line: bytes, u: Unpickler) -> int:
    if len(line) > 12:
        raise u._error(f"memo index {clip(line.decode('latin1'), 40)} out of range", "pickle.memo")
    try:
        index = int(line)
    except ValueError:
        raise u._error(f"{clip(line.decode('latin1'), 60)} is not a memo index", "pickle.memo") from None
    if not 0 <= index < 1 << 32:
        raise u._error(f"memo index {fmt(index)} out of range", "pickle.memo")
    return index


_DISPATCH: Dict[bytes, Callable[[Unpickler], None]] = {
    b".": _stop,
    b"\x80": _proto,
    b"\x95": _frame,
    b"(": _mark,
    # integers and constants
    b"I": _int,
    b"J": lambda u: _small_int(u, u._unpack("<i", 4)),
    b"K": lambda u: _small_int(u, u._u8()),
    b"M": lambda u: _small_int(u, u._unpack("<H", 2)),
    b"L": _long_text,
    b"\x8a": lambda u: u._long(u._u8()),
    b"\x8b": lambda u: u._long(u._unpack("<i", 4)),
    b"N": lambda u: u._push(None),
    b"\x88": lambda u: u._push(True),
    b"\x89": lambda u: u._push(False),
    b"F": _float_text,
    b"G": _binfloat,
    # strings and bytes
    b"V": _unicode_text,
    b"X": lambda u: u._push(u._text(u._take(u._unpack("<I", 4), "string"))),
    b"\x8c": lambda u: u._push(u._text(u._take(u._u8(), "string"))),
    b"\x8d": lambda u: u._push(u._text(u._take(u._unpack("<Q", 8), "string"))),
    b"B": lambda u: u._push(u._bytes_value(u._take(u._unpack("<I", 4), "bytes object"))),
    b"C": lambda u: u._push(u._bytes_value(u._take(u._u8(), "bytes object"))),
    b"\x8e": lambda u: u._push(u._bytes_value(u._take(u._unpack("<Q", 8), "bytes object"))),
    # containers
    b")": _empty_tuple,
    b"t": _tuple,
    b"\x85": _tuple_n(1),
    b"\x86": _tuple_n(2),
    b"\x87": _tuple_n(3),
    b"]": _empty(list),
    b"l": _list,
    b"a": _append,
    b"e": _appends,
    b"}": _empty(dict),
    b"d": _dict,
    b"s": _setitem,
    b"u": _setitems,
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
