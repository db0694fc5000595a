"""A ``torch.save`` file: the archive's layout (``<archive>/data.pkl``, ``byteorder``, ``data/<key>``)."""
from __future__ import annotations

import collections
import zlib
from typing import Any, Callable, Dict, List, Tuple

from . import limits
from .errors import clip, error, fmt
from .files import Bytes, FileBytes, as_bytes
from .tensors import LazyTensor, Storage, element_dtype, strided
from .unpickler import Unpickler
from .zipfile_reader import STORED, read_directory, read_member

_PICKLE_MAGIC = 0x1950A86A20F9469CFC6C
_CONVERT = ("Convert it once with PyTorch: torch.save(torch.load(path), 'converted.pt') writes the "
            "zip format, or safetensors.torch.save_file(torch.load(path), 'model.safetensors')")
_CRC_CHUNK = 1 << 22  # a storage checked without being kept is read in pieces of this size


def is_legacy_torch_file(head: bytes) -> bool:
    # The pre-1.6 format starts with a protocol-2 pickle of a magic number: PROTO 2, LONG1 10.
    return head[:3] == b"\x80\x02\x8a" and int.from_bytes(head[4:14], "little") == _PICKLE_MAGIC


def read_torch_zip(path: str, lazy: bool = False) -> Any:
    """Load the object ``torch.save`` wrote to ``path`` (zip format) with numpy.

    Tensors become read-only numpy arrays in private memory (read with ``pread``: a file that
    shrinks or changes meanwhile gives a :class:`CheckpointError`, never a crash), or
    :class:`LazyTensor` descriptions when ``lazy`` (the file stays open until they are gone).
    Raises :class:`UnsafeCheckpointError` (and runs nothing) if the pickle references anything
    but what a state dict needs, and :class:`CheckpointError` (a ``ValueError``) for a
    malformed, truncated or oversized file, the legacy non-zip format or a TorchScript archive.
    """
    data = FileBytes(path)
    try:
        head = bytes(data.read(0, min(16, len(data))))
        if head[:2] != b"PK":
            if is_legacy_torch_file(head):
                raise error(path, f"in PyTorch's legacy (pre-1.6, non-zip) format, which is not supported "
                                  f"without torch. {_CONVERT}", "torch.legacy_format")
            if head[:1] == b"\x80":
                raise error(path, f"a bare pickle, not PyTorch's zip format; it is not unpickled here (a pickle "
                                  f"can run code). {_CONVERT}", "torch.bare_pickle")
            raise error(path, "not a PyTorch checkpoint (neither a zip archive nor a legacy torch file)",
                        "torch.not_zip")
        out = read_archive(data, path, lazy)
        data.check_unchanged()
        return out
    finally:
        if not lazy:
            data.close()


def read_archive(data: Bytes, path: str, lazy: bool) -> Any:
    """The object in the torch archive whose bytes ``data`` reads (``path`` names it in messages)."""
    lim = limits.current()
    data = as_bytes(data, path)
    members = read_directory(data, path)
    pickles = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if any(n.endswith("/constants.pkl") for n in members):
        raise error(path, "a TorchScript archive (torch.jit.save), not a state dict; in PyTorch run "
                          "torch.save(torch.jit.load(path).state_dict(), 'state.pt') and load that",
                    "torch.torchscript")
    if len(pickles) != 1:
        raise error(path, f"expected one '<archive>/data.pkl' record in the zip, found {fmt(pickles)}",
                    "torch.data_pkl")
    prefix = pickles[0][: -len("data.pkl")]

    order = "little"
    if prefix + "byteorder" in members:
        raw = read_member(data, members[prefix + "byteorder"], path, lim.max_small_record)
        order = raw.decode("ascii", "replace").strip()
    if order != "little":
        raise error(path, f"byte order {fmt(order)} is not supported (only little-endian checkpoints); re-save "
                          f"it with PyTorch on a little-endian machine", "torch.byteorder")

    storages: Dict[str, Storage] = {}

    def storage(key: str, code: str, numel: int) -> Storage:
        found = storages.get(key)
        if found is not None:
            if found.code != code or found.numel != numel:
                raise error(path, f"storage '{clip(key)}' is referenced as {found.numel} x {found.code} and as "
                                  f"{numel} x {code}; the file is corrupt", "torch.storage_mismatch")
            return found
        name = f"{prefix}data/{key}"
        member = members.get(name)
        if member is None:
            raise error(path, f"storage record '{clip(name)}' is missing; the file is corrupt", "torch.storage_missing")
        nbytes = numel * element_dtype(code).itemsize
        if member.size != nbytes:
            raise error(path, f"storage record '{clip(name)}' holds {member.size} bytes, expected {nbytes}",
                        "torch.storage_size")
        if member.method != STORED:
            raise error(path, f"storage record '{clip(name)}' is compressed; torch.save never writes such records "
                              f"(the file was repacked). Re-save it with torch.save", "torch.storage_compressed")
        checked = []

        def crc_failed() -> Exception:
            return error(path, f"storage record '{clip(name)}' fails its CRC check; the file is corrupt or changed",
                         "zip.crc")

        def read() -> memoryview:
            got = data.read(member.data_start, nbytes)
            if zlib.crc32(got) != member.crc:
                raise crc_failed()
            data.check_unchanged()
            return got

        def read_span(start: int, stop: int) -> memoryview:
            if not checked:  # the whole record is checked once, in pieces, without keeping it
                crc = 0
                for at in range(0, nbytes, _CRC_CHUNK):
                    crc = zlib.crc32(data.read(member.data_start + at, min(_CRC_CHUNK, nbytes - at)), crc)
                if crc != member.crc:
                    raise crc_failed()
                checked.append(True)
            got = data.read(member.data_start + start, stop - start)
            data.check_unchanged()  # nothing was rewritten between the check and this read
            return got

        found = storages[key] = Storage(key, code, numel, read, read_span)
        return found

    pickle_bytes = read_member(data, members[pickles[0]], path, lim.max_pickle_bytes)
    obj = Unpickler(pickle_bytes, storage, path).load()
    return finish_tree(obj, _as_lazy if lazy else _materialize, path)


_CONTAINERS = (list, tuple, dict, collections.OrderedDict)


def finish_tree(root: Any, leaf: Callable[[Any], Any], source: str) -> Any:
    """``root`` with every leaf replaced by ``leaf(x)``; refuses nesting deeper than MAX_DEPTH and cycles.

    Iterative and visiting each container once, so shared sub-structures (a tuple that
    contains itself through the memo, 2**60 times once expanded) cost their size, not their
    expansion. A state dict never refers to itself, so a cycle is refused rather than kept.
    """
    max_depth = limits.current().max_depth
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
                raise error(source, "the pickle's objects contain themselves; a state dict never does", "pickle.cycle")
            open_.add(id(obj))
            stack.append((obj, True))
            stack.extend((c, False) for c in children if type(c) in _CONTAINERS and id(c) not in done)
            continue
        open_.discard(id(obj))
        depth = 1 + max((done[id(c)][1] for c in children if type(c) in _CONTAINERS), default=0)
        if depth > max_depth:
            raise error(source, f"containers nested deeper than {max_depth}; a state dict needs a few", "pickle.depth")

        def new(c: Any) -> Any:
            return done[id(c)][0] if type(c) in _CONTAINERS else leaf(c)

        if type(obj) is list:
            obj[:] = [new(c) for c in obj]
            result = obj
        elif isinstance(obj, dict):
            for k in obj:
                obj[k] = new(obj[k])
            result = obj
        else:
            result = tuple(new(c) for c in obj)
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
