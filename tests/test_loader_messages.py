"""Issue 25, class 7, at the loader: every message of ``read_torch_checkpoint`` and
``load_torch_state_dict`` (TypeError, ValueError, OSError quoting a path) is at most 4000
characters and escapes what a file or a caller's keys control; limits go per call."""
import os
import pickle
import zipfile

import numpy as np
import pytest
from mindspore import nn

import ms_weightnorm
from ms_weightnorm import torch_io
from ms_weightnorm.torch_io import load_torch_state_dict, read_torch_checkpoint

MAX_MESSAGE = 4000


def _net():
    return nn.SequentialCell([nn.Dense(2, 1)])


def test_a_nested_value_under_a_huge_key_gives_a_bounded_type_error():
    # Issue 25: a TypeError of 2,097,338 characters (a nested dict under a 1 MiB key).
    with pytest.raises(TypeError) as info:
        load_torch_state_dict(_net(), {"k" * (1 << 20): {"a": 1}})
    assert len(str(info.value)) <= MAX_MESSAGE and "nests its state dict" in str(info.value)
    with pytest.raises(TypeError) as info:
        load_torch_state_dict(_net(), {"k" * (1 << 20): object()})
    assert len(str(info.value)) <= MAX_MESSAGE


@pytest.mark.parametrize("length", [300, 4000, 10000])
def test_a_missing_file_gives_a_bounded_os_error(tmp_path, length):
    # Issue 25: a FileNotFoundError of 4,084 characters.
    path = str(tmp_path / ("a" * 200)) + "/" + "b" * length + "\x1b.pt"
    with pytest.raises(OSError) as info:
        read_torch_checkpoint(path)
    assert len(str(info.value)) <= MAX_MESSAGE and "\x1b" not in str(info.value)
    with pytest.raises(OSError) as info:
        load_torch_state_dict(_net(), path)
    assert len(str(info.value)) <= MAX_MESSAGE


def test_a_wrong_save_name_gives_a_bounded_value_error(tmp_path):
    with pytest.raises(ValueError) as info:
        torch_io.save_torch_state_dict(_net(), str(tmp_path / ("x" * 5000)) + "\x07.ckpt")
    assert len(str(info.value)) <= MAX_MESSAGE and "\x07" not in str(info.value)


def test_an_os_error_on_a_save_quotes_a_bounded_escaped_path(tmp_path):
    name = str(tmp_path / ("x" * 5000)) + "\x07.pt"
    with pytest.raises(OSError) as info:  # ENAMETOOLONG from the file system
        torch_io.save_torch_state_dict(_net(), name)
    assert len(str(info.value)) <= MAX_MESSAGE and "\x07" not in str(info.value)
    assert info.value.filename.endswith("\\x07.pt")


def test_keys_with_terminal_escapes_are_escaped_in_the_loader_message(tmp_path):
    hostile = "\x1b[2J\x07\r\x00\ud800" + "k" * 100
    path = str(tmp_path / "keys.pt")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({hostile: 1.0}, protocol=2))
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(_net(), path)  # an unexpected key, listed
    message = str(info.value)
    assert "unexpected" in message and "\\x1b[2J" in message
    assert "\x1b" not in message and "\ud800" not in message and "\r" not in message
    message.encode("utf-8")  # printable as it is
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(_net(), {hostile: np.zeros(1, np.float32)})
    assert "\x1b" not in str(info.value) and "\\x1b" in str(info.value) and len(str(info.value)) <= MAX_MESSAGE


def test_checkpoint_error_is_public_under_the_package_name(tmp_path):
    assert ms_weightnorm.CheckpointError is torch_io.CheckpointError
    assert repr(ms_weightnorm.CheckpointError).startswith("<class 'ms_weightnorm.CheckpointError'")
    path = str(tmp_path / "bad.pt")
    with open(path, "wb") as f:
        f.write(b"PK" + bytes(40))
    with pytest.raises(ms_weightnorm.CheckpointError) as info:
        read_torch_checkpoint(path)
    assert info.value.path == path and info.value.rule == "zip.eocd"
    # Shown, and pickled, under its public name.
    again = pickle.loads(pickle.dumps(info.value))
    assert (type(again), again.path, again.rule, str(again)) == (type(info.value), path, "zip.eocd",
                                                                 str(info.value))


def test_limits_per_call_and_per_block_at_the_loader(tmp_path):
    path = str(tmp_path / "deep.pt")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"0.weight": [[[[1.0]]]]}, protocol=2))
    assert read_torch_checkpoint(path) == {"0.weight": [[[[1.0]]]]}
    with pytest.raises(ms_weightnorm.CheckpointError) as info:
        read_torch_checkpoint(path, limits=torch_io.Limits(max_depth=3))
    assert info.value.rule == "pickle.depth"
    with torch_io.limits(max_depth=3):
        with pytest.raises(ms_weightnorm.CheckpointError):
            load_torch_state_dict(_net(), path)
