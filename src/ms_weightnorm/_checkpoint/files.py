"""Opening a checkpoint: regular files only, never blocking, read with ``pread`` into private buffers.

Why not ``mmap``: the file belongs to someone else. A trainer that re-saves a checkpoint in
place (``torch.save`` truncates, then writes) while an evaluator reads it shrinks the file
under the map, and touching a mapped page past the new end kills the process with SIGBUS,
which Python cannot catch. ``pread`` of a shrunk file just returns fewer bytes, which
:meth:`FileBytes.read` turns into a :class:`CheckpointError` naming the file. The cost is one
copy of what is read (the kernel's page cache into the array), measured in docs/security.md.
"""
from __future__ import annotations

import os
import stat
import weakref
from typing import Any, Tuple

from .errors import CheckpointError, error


def open_regular(path: str) -> Tuple[int, int]:
    """An fd of ``path`` and its size; refuses FIFOs, devices and directories without blocking."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(path, "not a regular file (a FIFO, device or directory); refusing to read it",
                        "file.not_regular")
        return fd, info.st_size
    except BaseException:
        os.close(fd)
        raise


class Bytes:
    """Bytes of a checkpoint read on demand: ``len()`` and ``read(offset, n)``; in memory (fuzzing)."""

    def __init__(self, data: bytes, source: str = "<memory>"):
        self._data = memoryview(bytes(data))
        self.source = source

    def __len__(self) -> int:
        return len(self._data)

    def read(self, offset: int, n: int) -> memoryview:
        """Exactly ``n`` bytes at ``offset``, or a :class:`CheckpointError` (the data ends sooner)."""
        got = self._data[offset:offset + n] if 0 <= offset else self._data[:0]
        if len(got) != n:
            raise error(self.source, f"{n} bytes at offset {offset} lie past the end of the data ({len(self)} "
                                     f"bytes); the file is truncated", "file.short_read")
        return got

    def check_unchanged(self) -> None:
        pass

    def close(self) -> None:
        pass


def as_bytes(data: Any, source: str) -> Bytes:
    """``data`` as a :class:`Bytes` (bytes and memoryviews, as the fuzzers and tests pass them, wrapped)."""
    return data if isinstance(data, Bytes) else Bytes(data, source)


class FileBytes(Bytes):
    """An open regular file read with ``pread``: each read is a private copy, checked for length.

    The file stays open (not its path: a file renamed or replaced meanwhile is still the one
    read) until :meth:`close` or until the last tensor description that reads from it is gone.
    """

    def __init__(self, path: str):
        self.source = path
        fd, size = open_regular(path)
        self._fd = fd
        self._size = size
        info = os.fstat(fd)
        self._identity = (info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev)
        self._closer = weakref.finalize(self, os.close, fd)

    def __len__(self) -> int:
        return self._size

    def read(self, offset: int, n: int) -> memoryview:
        if n < 0 or offset < 0 or offset + n > self._size:
            raise error(self.source, f"{n} bytes at offset {offset} lie past the end of the file ({self._size} "
                                     f"bytes); the file is corrupt or truncated", "file.short_read")
        if not self._closer.alive:
            raise error(self.source, "the file was closed before this tensor was read", "file.closed")
        # One pread into a fresh bytes object (no zero-fill first); a short read means the file
        # shrank: the rest is asked for again, and an empty answer is the file's new end.
        parts = [os.pread(self._fd, n, offset)]
        got = len(parts[0])
        while got < n:
            more = os.pread(self._fd, n - got, offset + got)
            if not more:
                raise self._changed(f"it ended at byte {offset + got}, expected {self._size}")
            parts.append(more)
            got += len(more)
        return memoryview(parts[0] if len(parts) == 1 else b"".join(parts))

    def check_unchanged(self) -> None:
        """A :class:`CheckpointError` if the file's size or modification time changed since it was opened."""
        info = os.fstat(self._fd)
        if (info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev) != self._identity:
            raise self._changed(f"its size went from {self._identity[0]} to {info.st_size} bytes"
                                if info.st_size != self._identity[0] else "it was modified")

    def _changed(self, what: str) -> CheckpointError:
        return error(self.source, f"the file changed while it was being read ({what}); another process is "
                                  f"probably writing it: load it again once that is done", "file.changed")

    def close(self) -> None:
        self._closer()
