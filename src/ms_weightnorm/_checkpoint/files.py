"""Opening a checkpoint: regular files only, never blocking, memory-mapped read-only."""
from __future__ import annotations

import mmap
import os
import stat
from typing import Optional, Tuple

from .errors import CheckpointError


def open_regular(path: str) -> Tuple[int, int]:
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


def map_file(fd: int, size: int) -> memoryview:
    """The file's bytes, read-only: a view of a memory map (an empty view for an empty file)."""
    if not size:
        return memoryview(b"")
    return memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_READ))
