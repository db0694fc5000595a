"""The safetensors writer's layout (issue 28): the JSON header is padded with spaces to a multiple
of 8 bytes, so the data section starts 8-aligned, as the reference writer (the ``safetensors``
package) lays it out; the package reads every file back to the same values.
No MindSpore needed: the reader package is loaded alone.
"""
import json
import struct

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from reader_pkg import DIRECTORY, load_reader

_pkg = load_reader(DIRECTORY, "_st_writer_pkg")
write_safetensors = _pkg.write_safetensors


def _layout(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack_from("<Q", blob)
    return n, blob[8:8 + n], blob


# Key lengths 1-8 move the unpadded header through every residue mod 8.
@pytest.mark.parametrize("key_len", range(1, 9))
def test_header_is_padded_so_the_data_starts_8_aligned(tmp_path, key_len):
    arrays = {"k" * key_len: np.arange(3, dtype=np.float64), "b": np.arange(5, dtype=np.int8)}
    path = str(tmp_path / "w.safetensors")
    write_safetensors(path, arrays)
    n, header, blob = _layout(path)
    assert n % 8 == 0 and (8 + n) % 8 == 0, n
    text = header.decode("utf-8")
    assert text == text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" ")))  # padding is spaces only
    assert len(text) - len(text.rstrip(" ")) < 8
    parsed = json.loads(text)
    # Offsets count from the end of the padded header: each tensor's bytes are where it says.
    for key, array in arrays.items():
        start, end = parsed[key]["data_offsets"]
        assert blob[8 + n + start:8 + n + end] == array.tobytes()
    # The reference implementation reads the file back to the same values.
    loaded = safetensors.numpy.load_file(path)
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)
        assert loaded[key].dtype == array.dtype


def test_the_reference_writer_pads_the_same_way(tmp_path):
    # What the rule mirrors: the safetensors package's own files have an 8-aligned data section.
    for key_len in range(1, 9):
        ref = tmp_path / f"ref{key_len}.safetensors"
        safetensors.numpy.save_file({"k" * key_len: np.arange(3, dtype=np.float64)}, str(ref))
        n, header, _ = _layout(ref)
        assert n % 8 == 0 and header.endswith(b" ") == (len(header.rstrip(b" ")) % 8 != 0), (key_len, n)
