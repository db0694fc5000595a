"""Read PyTorch checkpoints with numpy only, and write safetensors: one small module per format.

- :mod:`.errors`: the two exceptions, and bounded formatting of anything a file controls;
- :mod:`.limits`: every bound, in one frozen :class:`Limits` passed per call (``limits=`` or ``with limits(...)``);
- :mod:`.zipfile_reader`: the zip container, validated from its own bytes;
- :mod:`.unpickler`: the opcode and global allowlists;
- :mod:`.tensors`: dtypes, storages and strided views, bounds-checked before any read;
- :mod:`.torch_zip`: the layout of a ``torch.save`` archive;
- :mod:`.safetensors_io`: safetensors read and write;
- :mod:`.torch_writer`: ``torch.save``'s zip format, written (read back before it replaces a file);
- :mod:`.atomic`: atomic writes; :mod:`.bf16`: bfloat16 bits; :mod:`.files`: opening files.

Nothing here imports MindSpore, so the package can be loaded (and fuzzed) on its own. Every
entry point lets out only :class:`CheckpointError` (or :class:`UnsafeCheckpointError`) naming
the file, or an ``OSError`` with the path: see :func:`read_checkpoint_file`.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Callable, Optional

from .atomic import atomic_write
from .bf16 import bfloat16_bits_to_float32, float32_to_bfloat16_bits
from .errors import CheckpointError, UnsafeCheckpointError, clip, clip_message, error, fmt, fmt_path, short, with_path
from .files import open_regular
from . import limits
from .limits import Limits
from .safetensors_io import read_safetensors as _read_safetensors, write_safetensors
from .tensors import LazyTensor
from .torch_zip import read_torch_zip as _read_torch_zip
from .unpickler import accepted_opcodes, allowed_globals

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "Limits",
    "LazyTensor",
    "read_torch_zip",
    "read_safetensors",
    "write_safetensors",
    "atomic_write",
    "bfloat16_bits_to_float32",
    "float32_to_bfloat16_bits",
    "allowed_globals",
    "accepted_opcodes",
]


_limits_context = limits.limits


def guarded(read: Callable[..., Any], path: str, *args: Any, limits: Optional[Limits] = None, **kwargs: Any) -> Any:
    """``read(path, ...)`` behind the reader's one exception boundary, with ``limits`` if given.

    Lets out only :class:`CheckpointError` (naming ``path``, its message bounded and escaped)
    and ``OSError`` (with the path, bounded). Anything else raised while reading a hostile file
    (numpy, zlib, struct, a MemoryError under a memory limit) becomes a
    :class:`CheckpointError` that quotes only the exception's type: such messages can carry
    file-controlled objects.
    """
    if limits is not None:
        with _limits_context(limits):
            return guarded(read, path, *args, **kwargs)
    try:
        return read(path, *args, **kwargs)
    except CheckpointError as err:
        raise with_path(err, path) from None
    except OSError as err:
        raise bounded_os_error(err, path) from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error, zlib.error,
            UnicodeError, MemoryError, RecursionError, NotImplementedError, AttributeError) as err:
        raise error(path, f"could not be read as a checkpoint ({type(err).__name__}); the file is corrupt or "
                          f"exceeds what this reader supports", "reader.internal") from None


def bounded_os_error(err: OSError, path: Any) -> OSError:
    """``err`` (same type and errno) whose message quotes ``path`` bounded and escaped, not whole."""
    out = type(err)(err.errno, err.strerror or str(err)) if err.errno is not None else type(err)(str(err)[:200])
    out.filename = fmt_path(path)
    return out


def read_torch_zip(path: str, lazy: bool = False, limits: Optional[Limits] = None) -> Any:
    """The object ``torch.save`` wrote to ``path`` (see :func:`.torch_zip.read_torch_zip`), guarded.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "not.pt")
    >>> _ = open(path, "wb").write(b"PK" + bytes(30))
    >>> try:
    ...     read_torch_zip(path)
    ... except CheckpointError as err:
    ...     print("refused:", err.rule)
    refused: zip.eocd
    """
    return guarded(_read_torch_zip, os.fspath(path), lazy=lazy, limits=limits)


def read_safetensors(path: str, lazy: bool = False, limits: Optional[Limits] = None) -> Any:
    """A ``.safetensors`` file's tensors (see :func:`.safetensors_io.read_safetensors`), guarded.

    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> write_safetensors(path, {"w": np.arange(2, dtype=np.float32)})
    >>> read_safetensors(path)["w"].tolist()
    [0.0, 1.0]
    """
    return guarded(_read_safetensors, os.fspath(path), lazy=lazy, limits=limits)


read_checkpoint_file = guarded
