"""Read PyTorch checkpoints with numpy only, and write safetensors: one small module per format.

- :mod:`.errors`: the two exceptions, and bounded formatting of anything a file controls;
- :mod:`.limits`: every bound, in one place;
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
from typing import Any, Callable

from .atomic import atomic_write
from .bf16 import bfloat16_bits_to_float32, float32_to_bfloat16_bits
from .errors import CheckpointError, UnsafeCheckpointError, clip, clip_message, short
from .files import open_regular
from .safetensors_io import read_safetensors as _read_safetensors, write_safetensors
from .tensors import LazyTensor
from .torch_zip import read_torch_zip as _read_torch_zip
from .unpickler import accepted_opcodes, allowed_globals

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
    "allowed_globals",
    "accepted_opcodes",
]


def guarded(read: Callable[..., Any], path: str, *args: Any, **kwargs: Any) -> Any:
    """``read(path, ...)`` behind the reader's one exception boundary.

    Lets out only :class:`CheckpointError` (message naming ``path``, clipped to
    ``limits.MAX_MESSAGE``) and ``OSError`` (with the path). Anything else raised while
    reading a hostile file (numpy, zlib, struct, a MemoryError under a memory limit) becomes a
    :class:`CheckpointError` that quotes only the exception's type: such messages can carry
    file-controlled objects.
    """
    try:
        return read(path, *args, **kwargs)
    except CheckpointError as err:
        text = str(err)
        if path not in text:
            text = f"{path}: {text}"
        raise type(err)(clip_message(text)) from None
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), path) from None
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error, zlib.error,
            UnicodeError, MemoryError, RecursionError, NotImplementedError, AttributeError) as err:
        raise CheckpointError(clip_message(
            f"{path} could not be read as a checkpoint ({type(err).__name__}); the file is corrupt or "
            f"exceeds what this reader supports")) from None


def read_torch_zip(path: str, lazy: bool = False) -> Any:
    """The object ``torch.save`` wrote to ``path`` (see :func:`.torch_zip.read_torch_zip`), guarded.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "not.pt")
    >>> _ = open(path, "wb").write(b"PK" + bytes(30))
    >>> try:
    ...     read_torch_zip(path)
    ... except CheckpointError as err:
    ...     print("refused:", "end-of-central-directory" in str(err))
    refused: True
    """
    return guarded(_read_torch_zip, os.fspath(path), lazy=lazy)


def read_safetensors(path: str, lazy: bool = False) -> Any:
    """A ``.safetensors`` file's tensors (see :func:`.safetensors_io.read_safetensors`), guarded.

    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> write_safetensors(path, {"w": np.arange(2, dtype=np.float32)})
    >>> read_safetensors(path)["w"].tolist()
    [0.0, 1.0]
    """
    return guarded(_read_safetensors, os.fspath(path), lazy=lazy)


read_checkpoint_file = guarded
