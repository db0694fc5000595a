"""Atomic file writes: the target is always either its old file or the whole new one.

On Linux the data goes to an anonymous ``O_TMPFILE`` file in the target's directory, which has
no name until it is complete: a save killed at any point leaves nothing behind. It is then
linked under a temporary name and renamed over the target (``linkat`` cannot replace an
existing file), so only a kill between those two calls, microseconds apart, can leave a
temporary file. Where ``O_TMPFILE`` is not available (other systems, some file systems), the
data goes to a named temporary file from the start, and a killed save can leave it behind.
Either way the temporary name is ``.<target>.<16 hex digits>.tmp`` (the target's name cut so
that the whole fits NAME_MAX), in the target's directory, and is safe to delete.
"""
from __future__ import annotations

import errno
import os
import secrets
from typing import Callable, Iterable, Optional

from .errors import fmt_path

_SUFFIX_LEN = len(".") + 16 + len(".tmp")


def temporary_name(directory: str, base: str) -> str:
    """A fresh temporary path for ``base`` in ``directory``, at most NAME_MAX bytes long.

    >>> len(os.path.basename(temporary_name("/tmp", "x" * 255)).encode())
    255
    """
    try:
        name_max = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    room = name_max - 1 - _SUFFIX_LEN  # the leading dot
    stem = base
    while len(os.fsencode(stem)) > room:  # whole characters only (a name is at most 255 bytes)
        stem = stem[:-1]
    return os.path.join(directory, f".{stem}.{secrets.token_hex(8)}.tmp")


def _with_path(err: OSError, path: str) -> OSError:
    """``err`` naming ``path``: EFBIG and ENOSPC from write() name no file, and an error on the
    temporary file names a path the caller never gave."""
    shown = fmt_path(path)  # a path may be long or hold control characters: bounded, escaped
    if err.filename == shown:
        return err
    out = type(err)(err.errno, err.strerror or os.strerror(err.errno or 0), shown)
    out.__cause__ = err.__cause__
    return out


def atomic_write(path: str, chunks: Iterable[bytes], verify: Optional[Callable[[str], None]] = None) -> None:
    """Write ``chunks`` to ``path`` so that ``path`` is always either its old file or the whole new one.

    The file gets the permissions any new file gets (the kernel applies the umask). It is
    fsynced, moved over ``path`` (atomic; a symlink at ``path`` itself is replaced, not
    followed), and the directory is fsynced. A temporary name is created exclusively and
    without following symlinks, so a link planted there cannot redirect the write.
    Concurrent writers each complete: the last rename wins, with one writer's whole file. On
    any error nothing is left behind, ``path`` is untouched, and the ``OSError`` names the path.

    ``verify(readable_path)``, if given, is called once the data is complete and synced, before
    anything replaces ``path``, with a path that opens the temporary file; whatever it raises
    aborts the write (the old file is kept, the temporary one removed).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "f.bin")
    >>> atomic_write(path, [b"ab", b"c"])
    >>> open(path, "rb").read()
    b'abc'
    """
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    try:
        _write(path, directory, base, chunks, verify)
    except OSError as err:
        raise _with_path(err, path) from err.__cause__
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


def _open_anonymous(directory: str) -> int:
    """An unnamed file in ``directory`` (O_TMPFILE), or -1 where the platform or file system has none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return -1
    try:
        return os.open(directory, flag | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return -1  # the file system has no O_TMPFILE: fall back to a named file
        raise


def _link_fd(fd: int, path: str) -> None:
    """linkat(fd's /proc entry, path, AT_SYMLINK_FOLLOW): names an O_TMPFILE file.

    ``os.link`` calls plain link() (which does not follow /proc's fd links) unless a dir fd
    is given, so /proc/self/fd is passed as one.
    """
    proc = os.open("/proc/self/fd", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        os.link(str(fd), path, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


def _open_named(directory: str, base: str):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = temporary_name(directory, base)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _write(path: str, directory: str, base: str, chunks: Iterable[bytes],
           verify: Optional[Callable[[str], None]] = None) -> None:
    fd = _open_anonymous(directory)
    tmp = None
    if fd < 0:
        fd, tmp = _open_named(directory, base)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(fd)
        if verify is not None:
            # An O_TMPFILE file has no name yet; its /proc entry opens it for reading.
            verify(tmp if tmp is not None else f"/proc/self/fd/{fd}")
        if tmp is None:
            # Give the complete file a name, then move it over the target.
            while True:
                candidate = temporary_name(directory, base)
                try:
                    _link_fd(fd, candidate)
                    tmp = candidate
                    break
                except FileExistsError:
                    continue
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
