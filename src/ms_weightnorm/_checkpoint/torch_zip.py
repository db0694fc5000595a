"""A ``torch.save`` file: the archive's layout (``<archive>/data.pkl``, ``byteorder``, ``data/<key>``)."""
from __future__ import annotations

import collections
import os
import zlib
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from . import limits
from .errors import CheckpointError, clip, short
from .files import map_file, open_regular
from .tensors import LazyTensor, Storage, element_dtype, strided
from .unpickler import Unpickler
from .zipfile_reader import STORED, read_directory, read_member

_PICKLE_MAGIC = 0x1950A86A20F9469CFC6C
_CONVERT = ("Convert it once with PyTorch: torch.save(torch.load(path), 'converted.pt') writes the "
            "zip format, or safetensors.torch.save_file(torch.load(path), 'model.safetensors')")


def is_legacy_torch_file(head: bytes) -> bool:
    # The pre-1.6 format starts with a protocol-2 pickle of a magic number: PROTO 2, LONG1 10.
    return head[:3] == b"\x80\x02\x8a" and int.from_bytes(head[4:14], "little") == _PICKLE_MAGIC


def read_torch_zip(path: str, lazy: bool = False) -> Any:
    """Load the object ``torch.save`` wrote to ``path`` (zip format) with numpy.

    Tensors become read-only numpy arrays (views of the memory-mapped file where possible),
    or :class:`LazyTensor` descriptions when ``lazy``. Raises :class:`UnsafeCheckpointError`
    (and runs nothing) if the pickle references anything but what a state dict needs, and
    :class:`CheckpointError` (a ``ValueError``) for a malformed, truncated or oversized file,
    the legacy non-zip format or a TorchScript archive.
    """
    fd, size = open_regular(path)
    try:
        head = os.pread(fd, 16, 0)
        data = map_file(fd, size)
    finally:
        os.close(fd)
    if head[:2] != b"PK":
        if is_legacy_torch_file(head):
            raise CheckpointError(
                f"{path} is in PyTorch's legacy (pre-1.6, non-zip) format, which is not supported "
                f"without torch. {_CONVERT}")
        if head[:1] == b"\x80":
            raise CheckpointError(
                f"{path} is a bare pickle, not PyTorch's zip format; it is not unpickled here (a "
                f"pickle can run code). {_CONVERT}")
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a legacy torch file)")
    return read_archive(data, path, lazy)


def read_archive(data: memoryview, path: str, lazy: bool) -> Any:
    """The object in the torch archive whose bytes are ``data`` (``path`` names it in messages)."""
    members = read_directory(data, path)
    pickles = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if any(n.endswith("/constants.pkl") for n in members):
        raise CheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save), not a state dict; in PyTorch run "
            f"torch.save(torch.jit.load(path).state_dict(), 'state.pt') and load that")
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: expected one '<archive>/data.pkl' record in the zip, found {short(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]

    order = "little"
    if prefix + "byteorder" in members:
        raw = read_member(data, members[prefix + "byteorder"], path, limits.MAX_SMALL_RECORD)
        order = raw.decode("ascii", "replace").strip()
    if order != "little":
        raise CheckpointError(
            f"{path}: byte order {short(order)} is not supported (only little-endian checkpoints); "
            f"re-save it with PyTorch on a little-endian machine")

    storages: Dict[str, Storage] = {}

    def storage(key: str, code: str, numel: int) -> Storage:
        found = storages.get(key)
        if found is not None:
            if found.code != code or found.numel != numel:
                raise CheckpointError(
                    f"{path}: storage '{clip(key)}' is referenced as {found.numel} x {found.code} and as "
                    f"{numel} x {code}; the file is corrupt")
            return found
        name = f"{prefix}data/{key}"
        member = members.get(name)
        if member is None:
            raise CheckpointError(f"{path}: storage record '{clip(name)}' is missing; the file is corrupt")
        nbytes = numel * element_dtype(code).itemsize
        if member.size != nbytes:
            raise CheckpointError(
                f"{path}: storage record '{clip(name)}' holds {member.size} bytes, expected {nbytes}")
        if member.method != STORED:
            raise CheckpointError(
                f"{path}: storage record '{clip(name)}' is compressed; torch.save never writes "
                f"such records (the file was repacked). Re-save it with torch.save")

        def read() -> memoryview:
            got = data[member.data_start:member.data_start + nbytes]
            if len(got) != nbytes:  # the directory was checked; this checks the slice itself
                raise CheckpointError(f"{path}: storage record '{clip(name)}' is cut short; the file is truncated")
            if zlib.crc32(got) != member.crc:
                raise CheckpointError(f"{path}: storage record '{clip(name)}' fails its CRC check; the file is corrupt")
            return got

        found = storages[key] = Storage(key, code, numel, read)
        return found

    pickle_bytes = read_member(data, members[pickles[0]], path, limits.MAX_PICKLE_BYTES)
    obj = Unpickler(pickle_bytes, storage, path).load()
    return finish_tree(obj, _as_lazy if lazy else _materialize, path)


_CONTAINERS = (list, tuple, dict, collections.OrderedDict, set, frozenset)


def finish_tree(root: Any, leaf: Callable[[Any], Any], source: str) -> Any:
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
        if depth > limits.MAX_DEPTH:
            raise CheckpointError(f"{source}: containers nested deeper than {limits.MAX_DEPTH}; a state dict needs a few")

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
    if isinstance(x, Storage):
        return x.flat(x.code)
    return x


def _as_lazy(x: Any) -> Any:
    if isinstance(x, Storage):  # a bare storage: its elements as a 1-D tensor
        return strided(x, x.code, 0, (x.numel,), (1,), "")
    return x
