"""atomic_write's promises on both of its paths (issue 28): the anonymous O_TMPFILE file and the
named fallback, forced here by taking ``os.O_TMPFILE`` away rather than left to the machine.

- the fallback's temporary file is created exclusively and without following links
  (O_CREAT | O_EXCL | O_NOFOLLOW, never O_TRUNC), so a link planted at its name is left alone;
- a symlink at the target is replaced by the new file, never followed;
- the directory is fsynced after the rename (``os.fsync`` records its calls).
No MindSpore needed: the reader package is loaded alone.
"""
import errno
import os
import stat

import pytest
from reader_pkg import DIRECTORY, load_reader

load_reader(DIRECTORY, "_atomic_pkg")
from _atomic_pkg import atomic  # noqa: E402

PATHS = ["anonymous", "named"]


@pytest.fixture(params=PATHS)
def path_kind(request, monkeypatch, tmp_path):
    if request.param == "named":
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    elif atomic._open_anonymous(str(tmp_path)) < 0:
        pytest.fail("O_TMPFILE is not available here; the anonymous path cannot be tested on this machine")
    else:
        os.close(atomic._open_anonymous(str(tmp_path)))
    return request.param


def _opens(monkeypatch):
    """Record every os.open: (path, flags)."""
    calls = []
    real = os.open

    def recording(path, flags, *args, **kwargs):
        calls.append((str(path), flags))
        return real(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", recording)
    return calls


def test_fallback_is_really_taken_when_o_tmpfile_is_gone(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    calls = _opens(monkeypatch)
    target = tmp_path / "t.bin"
    atomic.atomic_write(str(target), [b"new"])
    temps = [(p, f) for p, f in calls if os.path.basename(p).startswith(".t.bin.") and p.endswith(".tmp")]
    assert len(temps) == 1, calls
    flags = temps[0][1]
    # Exclusive creation that does not follow a link at the name; no truncation of what is there.
    assert flags & os.O_CREAT and flags & os.O_EXCL and flags & os.O_NOFOLLOW, oct(flags)
    assert not flags & os.O_TRUNC, oct(flags)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bin"]


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    planted = tmp_path / ".t.bin.0000000000000000.tmp"
    planted.symlink_to(victim)
    names = iter([str(planted)])
    real = atomic.temporary_name
    # The first temporary name is the planted one (an attacker who guessed it); then fresh ones.
    monkeypatch.setattr(atomic, "temporary_name", lambda d, b: next(names, None) or real(d, b))
    target = tmp_path / "t.bin"
    atomic.atomic_write(str(target), [b"new ", b"data"])
    assert victim.read_bytes() == b"precious"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert not target.is_symlink() and target.read_bytes() == b"new data"


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path, path_kind):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "t.bin"
    target.symlink_to(victim)
    atomic.atomic_write(str(target), [b"new"])
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bin", "victim"]


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch, path_kind):
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    directory = os.stat(tmp_path)
    seen = []  # (is a directory, is our directory, the target's content at that moment)
    real = os.fsync

    def recording(fd):
        st = os.fstat(fd)
        seen.append((stat.S_ISDIR(st.st_mode), (st.st_dev, st.st_ino) == (directory.st_dev, directory.st_ino),
                     target.read_bytes()))
        return real(fd)
    monkeypatch.setattr(os, "fsync", recording)
    atomic.atomic_write(str(target), [b"new"])
    # The file's data first (while the target is still old), then the directory once the target is new.
    assert seen[0] == (False, False, b"old"), seen
    assert (True, True, b"new") in seen[1:], seen


def test_a_write_error_names_the_target_keeps_the_errno_text_and_leaves_nothing(tmp_path, monkeypatch, path_kind):
    # ENOSPC from the data's fsync names no file: the error is re-raised naming the target, with
    # the OS's text for the errno, and the directory holds what it held before.
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        atomic.atomic_write(str(target), [b"new"])
    err = info.value
    assert (err.errno, err.strerror, err.filename) == (errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.bin"]
