"""The zip reader's directory rules, each pinned by the values it checks (issue 28).

Each test breaks one rule of ``_checkpoint.zipfile_reader`` in a file that is otherwise
valid and loadable, and asserts that the rule itself refused it: the error states the
values that rule compares (the directory's declared offset and size against where the end
record starts; the record's method number; the record that carries the bad local header).
Matching a word would not do: "central directory" is also in the later messages about a
directory entry that does not parse, which the mutated readers of issue 28 reached instead.
No MindSpore or torch needed; the archives are built byte by byte by test_zip_reader's writer.
"""
import struct

import numpy as np
import pytest
from test_zip_reader import FLOATS, Member, build, torch_members, tp, write


def _eocd_fields(data):
    """(cd_size, cd_offset, eocd_start) of a ZIP32 archive built by ``build``."""
    cd_size, cd_offset = struct.unpack_from("<II", data, len(data) - 10)
    return cd_size, cd_offset, len(data) - 22


def _refusal(tmp_path, data):
    path = write(tmp_path, data)
    with pytest.raises(tp.CheckpointError) as info:
        tp.read_torch_zip(path)
    return str(info.value)


def _loads(tmp_path, data):
    np.testing.assert_array_equal(tp.read_torch_zip(write(tmp_path, data, "ok.pt"))["w"], FLOATS.reshape(4, 4))


def _directory_rule(message, cd_offset, cd_size, directory_end):
    # The rule: declared offset + size must end exactly where the end record starts. Its
    # refusal states all three values; the parse errors that follow a skipped check do not.
    for value in (f"offset {cd_offset}", f"{cd_size} bytes", f"({directory_end})"):
        assert value in message, (value, message)


def test_directory_ending_before_the_end_record_is_refused(tmp_path):
    # 8 bytes sit between the directory and the end record, outside the declared size: the
    # entries themselves parse, so only the offset/size rule can refuse this file.
    data = build(torch_members(), cd_extra=bytes(8))
    cd_size, cd_offset, eocd = _eocd_fields(data)
    data = data[:-10] + struct.pack("<II", cd_size - 8, cd_offset) + data[-2:]
    message = _refusal(tmp_path, data)
    _directory_rule(message, cd_offset, cd_size - 8, eocd)


def test_understated_offset_names_the_declared_values(tmp_path):
    good = build(torch_members())
    cd_size, cd_offset, eocd = _eocd_fields(good)
    message = _refusal(tmp_path, good[:-6] + struct.pack("<IH", cd_offset - 1, 0))
    _directory_rule(message, cd_offset - 1, cd_size, eocd)


@pytest.mark.parametrize("field", ["offset", "size"])
def test_overstated_directory_is_refused_by_the_end_record_rule(tmp_path, field):
    good = build(torch_members())
    cd_size, cd_offset, eocd = _eocd_fields(good)
    if field == "offset":
        cd_offset += 1 << 20
    else:
        cd_size += 46  # room for one more entry than there is: every real entry still parses
    bad = good[:-10] + struct.pack("<II", cd_size, cd_offset) + good[-2:]
    _directory_rule(_refusal(tmp_path, bad), cd_offset, cd_size, eocd)


def test_data_descriptor_flag_still_checks_a_nonzero_local_crc_and_sizes(tmp_path):
    # Bit 3 lets the local header leave CRC and sizes at 0 (a data descriptor follows); it does
    # not make nonzero values that contradict the directory acceptable.
    described = torch_members()
    described[2].local.update(flags=0x808, crc=0, csize=0, usize=0)
    described[2].central.update(flags=0x808)
    _loads(tmp_path, build(described))
    for field, value in (("crc", 0x1234567), ("csize", 4), ("usize", 4)):
        lying = torch_members()
        lying[2].local.update(flags=0x808, crc=0, csize=0, usize=0)
        lying[2].local[field] = value
        lying[2].central.update(flags=0x808)
        message = _refusal(tmp_path, build(lying))
        # The record that carries it, and the clause of the local-header rule (sizes or CRC).
        assert "'archive/data/0'" in message and "local header" in message and "CRC" in message, message


OTHER_METHODS = [1, 2, 3, 4, 5, 6, 7, 9, 10, 12, 14, 18, 19, 93, 94, 95, 96, 97, 98, 99, 0xFFFF]


@pytest.mark.parametrize("method", OTHER_METHODS)
def test_every_method_but_stored_and_deflated_is_refused(tmp_path, method):
    # On a record the loader never reads: the method rule is the only one that sees it, so a
    # reader that let this method through would load the file.
    members = torch_members() + [Member("archive/extra", b"payload", method=method)]
    message = _refusal(tmp_path, build(members))
    assert f"method {method}" in message and "'archive/extra'" in message, message


def test_the_extra_record_alone_does_not_refuse(tmp_path):
    # The control of the test above: the same file with the extra record stored loads.
    _loads(tmp_path, build(torch_members() + [Member("archive/extra", b"payload")]))
