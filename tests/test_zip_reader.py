"""The zip container, validated from its own bytes: every rule of ``_checkpoint.zipfile_reader``
gets a file that breaks it, written byte by byte here, and each bound is tested at the bound and
one past it. No MindSpore or torch needed (the reader package is loaded alone)."""
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from collections import OrderedDict

import numpy as np
import pytest
from reader_pkg import DIRECTORY, LOAD_READER, load_reader

PKG = DIRECTORY
tp = load_reader(PKG, "_zip_reader_pkg")
from _zip_reader_pkg import limits, zipfile_reader  # noqa: E402


# --- a zip writer with every field under the test's control ------------------------------------

class Member:
    def __init__(self, name, data, method=0, flags=0x800, local=None, central=None):
        self.name, self.data, self.method, self.flags = name.encode(), data, method, flags
        self.payload = zlib.compressobj(6, zlib.DEFLATED, -15).compress(data) if method == 8 else data
        if method == 8:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            self.payload = c.compress(data) + c.flush()
        self.local = local or {}       # overrides of local-header fields
        self.central = central or {}   # overrides of central-directory fields


def build(members, eocd=None, cd_extra=b"", zip64=False):
    out = bytearray()
    offsets = []
    for m in members:
        f = dict(flags=m.flags, method=m.method, crc=zlib.crc32(m.data), csize=len(m.payload), usize=len(m.data),
                 name=m.name, extra=b"")
        f.update(m.local)
        offsets.append(len(out))
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, f["flags"], f["method"], 0, 0, f["crc"], f["csize"],
                           f["usize"], len(f["name"]), len(f["extra"])) + f["name"] + f["extra"] + m.payload
    cd_start = len(out)
    for m, off in zip(members, offsets):
        f = dict(flags=m.flags, method=m.method, crc=zlib.crc32(m.data), csize=len(m.payload), usize=len(m.data),
                 name=m.name, extra=b"", offset=off, disk=0)
        f.update(m.central)
        out += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, f["flags"], f["method"], 0, 0, f["crc"],
                           f["csize"], f["usize"], len(f["name"]), len(f["extra"]), 0, f["disk"], 0, 0,
                           f["offset"]) + f["name"] + f["extra"]
    out += cd_extra
    cd_size = len(out) - cd_start
    e = dict(disk=0, cd_disk=0, n_disk=len(members), n_total=len(members), cd_size=cd_size, cd_offset=cd_start)
    e.update(eocd or {})
    if zip64:
        z64 = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, e["n_disk"], e["n_total"], e["cd_size"],
                           e["cd_offset"])
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64, 1)
        e.update(n_disk=0xFFFF, n_total=0xFFFF, cd_size=0xFFFFFFFF, cd_offset=0xFFFFFFFF)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", e["disk"], e["cd_disk"], e["n_disk"], e["n_total"],
                       e["cd_size"], e["cd_offset"], 0)
    return bytes(out)


FLOATS = np.arange(16, dtype=np.float32)


def state_pickle():
    """``{"w": tensor(storage "0", 16 floats, as 4x4)}`` at protocol 2, written by hand (no torch)."""
    p = bytearray(b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02")
    p += b"ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05"
    p += b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x10tQK\x00K\x04K\x04\x86K\x04K\x01\x86\x89ccollections\n"
    p += b"OrderedDict\n)RtRs."
    return bytes(p)


def torch_members(storage=FLOATS.tobytes(), **kw):
    return [Member("archive/data.pkl", state_pickle()), Member("archive/byteorder", b"little"),
            Member("archive/data/0", storage, **kw), Member("archive/version", b"3\n")]


def write(tmp_path, data, name="f.pt"):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def refused(tmp_path, data, match):
    path = write(tmp_path, data)
    with pytest.raises(tp.CheckpointError) as info:
        tp.read_torch_zip(path)
    assert path in str(info.value) and match in str(info.value), str(info.value)
    return str(info.value)


def test_the_handwritten_archive_loads_and_zipfile_agrees(tmp_path):
    data = build(torch_members())
    path = write(tmp_path, data)
    np.testing.assert_array_equal(tp.read_torch_zip(path)["w"], FLOATS.reshape(4, 4))
    assert zipfile.ZipFile(path).testzip() is None
    # ... and in the ZIP64 layout torch.save writes.
    np.testing.assert_array_equal(tp.read_torch_zip(write(tmp_path, build(torch_members(), zip64=True), "z.pt"))["w"],
                                  FLOATS.reshape(4, 4))


def test_overstated_directory_offset_is_refused_not_read_out_of_bounds(tmp_path):
    # The attack: the end record places the directory 2 MB further than it is. zipfile then
    # computes negative member offsets, and a slice from them reads from the end of the file.
    big = np.arange(1 << 18, dtype=np.float32)  # a 1 MB storage
    members = torch_members(big.tobytes())
    members[0] = Member("archive/data.pkl", state_pickle().replace(b"K\x10tQ", b"J\x00\x00\x04\x00tQ"))
    good = build(members)
    cd_offset = struct.unpack_from("<I", good, len(good) - 6)[0]
    bad = good[:-6] + struct.pack("<IH", cd_offset + (2 << 20), 0)
    infos = zipfile.ZipFile(write(tmp_path, bad, "probe.pt")).infolist()
    assert min(i.header_offset for i in infos) < 0  # zipfile is fooled: the file really is the attack
    refused(tmp_path, bad, "central directory")


def test_understated_directory_offset_is_refused(tmp_path):
    good = build(torch_members())
    cd_offset = struct.unpack_from("<I", good, len(good) - 6)[0]
    refused(tmp_path, good[:-6] + struct.pack("<IH", cd_offset - 1, 0), "central directory")


def test_end_record_missing_or_cut(tmp_path):
    good = build(torch_members())
    refused(tmp_path, good[:-1], "end-of-central-directory")
    refused(tmp_path, b"PK" + bytes(10), "too short")
    # A comment length that runs past the file: that record is not the end record.
    refused(tmp_path, good[:-2] + b"\x05\x00", "end-of-central-directory")


def test_multi_disk_archives_are_refused(tmp_path):
    refused(tmp_path, build(torch_members(), eocd={"disk": 1}), "disks")
    refused(tmp_path, build(torch_members(), eocd={"n_disk": 3}), "disks")
    ms = torch_members()
    ms[2].central["disk"] = 2
    refused(tmp_path, build(ms), "another disk")


def _many_entries(n):
    """An archive of n empty stored members (names e0, e1, ...), built fast."""
    local, central = bytearray(), bytearray()
    crc = zlib.crc32(b"")
    for i in range(n):
        name = b"e%d" % i
        off = len(local)
        local += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, 0, 0, len(name), 0) + name
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, 0, 0, len(name), 0, 0,
                               0, 0, 0, off) + name
    return local, central


def _entries_file(n, declared=None):
    local, central = _many_entries(n)
    declared = n if declared is None else declared
    if declared < 0xFFFF:
        tail = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, declared, declared, len(central), len(local), 0)
    else:  # ZIP64 end records carry counts above 65535
        z64 = len(local) + len(central)
        tail = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, declared, declared, len(central), len(local))
        tail += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64, 1)
        tail += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(local + central + tail)


def test_record_count_bound_at_and_past(tmp_path):
    # The documented bound written out (a test reading limits.MAX_ZIP_RECORDS would follow a changed constant).
    assert limits.MAX_ZIP_RECORDS == 131072
    at = tp.guarded(lambda p: zipfile_reader.read_directory(memoryview(_entries_file(131072)), p), "at")
    assert len(at) == 131072
    with pytest.raises(tp.CheckpointError, match="131073 zip records \\(at most 131072"):
        zipfile_reader.read_directory(memoryview(_entries_file(131073)), "past")


_BOUNDED_CHILD = LOAD_READER + textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    tp = load_reader(sys.argv[1])
    start = time.perf_counter()
    try:
        tp.read_torch_zip(sys.argv[2])
        out = {"outcome": "loaded"}
    except tp.CheckpointError as err:
        out = {"outcome": "refused", "message": str(err)}
    except BaseException as err:
        out = {"outcome": "crashed", "type": type(err).__name__, "message": str(err)[:300]}
    out["seconds"] = time.perf_counter() - start
    with open("/proc/self/status") as f:
        out["peak_mb"] = int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    print(json.dumps(out))
""")


def bounded(path):
    done = subprocess.run([sys.executable, "-c", _BOUNDED_CHILD, PKG, path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_million_entries_are_refused_before_the_directory_is_parsed(tmp_path):
    path = write(tmp_path, _entries_file(1_000_000))
    assert os.path.getsize(path) > 40 << 20
    out = bounded(path)
    assert out["outcome"] == "refused" and "1000000 zip records" in out["message"], out
    # zipfile took 7 s and +360 MB on this file; the count is read from the end record alone.
    assert out["seconds"] < 0.5 and out["peak_mb"] < 150, out


def test_record_count_must_fit_the_directory_size(tmp_path):
    data = bytearray(_entries_file(10, declared=100_000))
    refused(tmp_path, bytes(data), "central directory")


def test_lying_compressed_size_is_refused(tmp_path):
    ms = torch_members()
    ms[2].central["csize"] = 0xFFFFFFFE  # about 4 GiB, in a file of a few hundred bytes
    out = bounded(write(tmp_path, build(ms)))
    assert out["outcome"] == "refused" and "more than the file" in out["message"], out
    assert out["peak_mb"] < 150, out
    # A ZIP64 extra field declaring 4 GiB: the same.
    ms = torch_members()
    ms[2].central.update(csize=0xFFFFFFFF, usize=0xFFFFFFFF, extra=struct.pack("<HHQQ", 1, 16, 4 << 30, 4 << 30))
    refused(tmp_path, build(ms), "more than the file")


def test_encrypted_members_are_refused(tmp_path):
    ms = torch_members()
    ms[0].flags |= 1
    msg = refused(tmp_path, build(ms), "encrypted")
    assert "RuntimeError" not in msg
    ms = torch_members()
    ms[2].flags |= 0x40  # strong encryption
    refused(tmp_path, build(ms), "encrypted")


@pytest.mark.parametrize("method", [12, 14, 93, 99])  # bzip2, lzma, zstd, AES
def test_only_stored_and_deflated_members(method, tmp_path):
    ms = torch_members()
    ms[1].method = method
    refused(tmp_path, build(ms), f"compression method {method}")


def test_deflated_pickle_loads_and_its_sizes_are_checked(tmp_path):
    ms = torch_members()
    ms[0] = Member("archive/data.pkl", state_pickle(), method=8)
    np.testing.assert_array_equal(tp.read_torch_zip(write(tmp_path, build(ms)))["w"], FLOATS.reshape(4, 4))
    # Inflating to more or fewer bytes than declared (a deflate bomb's lie) is refused.
    for declared in (len(state_pickle()) - 1, len(state_pickle()) + 1):
        ms[0].local["usize"] = ms[0].central["usize"] = declared
        refused(tmp_path, build(ms), "inflates to a size other than")
    ms[0].local["usize"] = ms[0].central["usize"] = len(state_pickle())
    # Deflated storage records are refused (torch.save never writes them).
    ms = torch_members(method=8)
    refused(tmp_path, build(ms), "compressed")


def test_deflated_record_bound_at_and_past(tmp_path):
    assert limits.MAX_DEFLATED_RECORD == 64 << 20
    ms = torch_members()
    ms[1] = Member("archive/byteorder", b"little", method=8)
    ms[1].central["usize"] = ms[1].local["usize"] = (64 << 20) + 1
    refused(tmp_path, build(ms), "more than the file")
    ms[1].central["usize"] = ms[1].local["usize"] = 64 << 20
    msg = refused(tmp_path, build(ms), "byteorder")  # past the directory; refused for the small-record bound
    assert "holds 67108864 bytes (at most 1024" in msg


@pytest.mark.parametrize("field,value,match", [
    ("name", b"archive/data/X", "local header that does not match"),
    ("method", 8, "local header that does not match"),
    ("csize", 60, "differ from its directory entry"),
    ("usize", 60, "differ from its directory entry"),
    ("crc", 1, "differ from its directory entry"),
])
def test_local_header_must_agree_with_its_directory_entry(field, value, match, tmp_path):
    ms = torch_members()
    ms[2].local[field] = value
    refused(tmp_path, build(ms), match)


def test_data_descriptor_layout_is_accepted_with_zero_local_sizes(tmp_path):
    # torch.save's writer puts CRC and sizes after the data (flag bit 3) and zeros in the local header.
    ms = torch_members()
    for m in ms:
        m.flags |= 0x8
        m.local.update(crc=0, csize=0, usize=0)
    np.testing.assert_array_equal(tp.read_torch_zip(write(tmp_path, build(ms)))["w"], FLOATS.reshape(4, 4))


def test_local_header_offsets_must_lie_inside_the_members(tmp_path):
    good = build(torch_members())
    cd_start = struct.unpack_from("<I", good, len(good) - 6)[0]
    for offset, match in ((cd_start, "outside the file's members"), (0xFFFFFFF0, "outside the file's members"),
                          (5, "local header that does not match")):
        ms = torch_members()
        ms[2].central["offset"] = offset
        refused(tmp_path, build(ms), match)


def test_overlapping_members_are_refused(tmp_path):
    pkl = Member("archive/data.pkl", pickle.dumps(OrderedDict(a=1), protocol=2))
    b = Member("archive/b", b"y" * 8)
    raw = build([pkl, Member("archive/a", b"x" * 64), b])
    a_local = raw.find(b"PK\x03\x04", raw.find(b"archive/data.pkl") + 10)
    b_local = raw.find(b"PK\x03\x04", a_local + 4)
    # a claims data long enough to swallow b's header; both of a's headers agree on the size,
    # so only the overlap rule can catch it.
    grown = 64 + (b_local - a_local)
    a = Member("archive/a", b"x" * 64, local={"csize": grown, "usize": grown}, central={"csize": grown, "usize": grown})
    refused(tmp_path, build([pkl, a, b]), "overlap")


def test_duplicate_names_are_refused(tmp_path):
    refused(tmp_path, build(torch_members() + [Member("archive/version", b"3\n")]), "two records named")


def test_record_name_bound_at_and_past(tmp_path):
    assert limits.MAX_ZIP_NAME == 4096
    base = [Member("archive/data.pkl", pickle.dumps(OrderedDict(a=1), protocol=2))]
    ok = build(base + [Member("archive/" + "n" * (4096 - 8), b"")])
    assert tp.read_torch_zip(write(tmp_path, ok)) == OrderedDict(a=1)
    refused(tmp_path, build(base + [Member("archive/" + "n" * (4097 - 8), b"")]), "4097 bytes (at most 4096")


def test_a_member_running_into_the_directory_is_refused(tmp_path):
    ms = torch_members()
    ms[3].local["csize"] = ms[3].local["usize"] = ms[3].central["csize"] = ms[3].central["usize"] = 40
    refused(tmp_path, build(ms), "runs past the start of the central directory")


def test_zip64_locator_must_point_inside_the_file(tmp_path):
    data = bytearray(build(torch_members(), zip64=True))
    loc = data.rfind(b"PK\x06\x07")
    struct.pack_into("<Q", data, loc + 8, len(data) + 100)
    refused(tmp_path, bytes(data), "ZIP64 locator")
    data = bytearray(build(torch_members(), zip64=True))
    struct.pack_into("<Q", data, loc + 8, 3)  # inside, but no ZIP64 record there
    refused(tmp_path, bytes(data), "no ZIP64 end record")


def test_every_storage_slice_is_checked_against_the_bytes_got(tmp_path):
    # The storage view is checked against the array actually sliced from the map, not the declared count.
    path = write(tmp_path, build(torch_members()))
    lazy = tp.read_torch_zip(path, lazy=True)["w"]
    from _zip_reader_pkg import tensors
    storage = tensors.Storage("0", "<f4", 16, lambda: memoryview(FLOATS.tobytes()[:60]))
    with pytest.raises(tp.CheckpointError, match="gave 60 bytes, expected 64"):
        tensors.strided(storage, "<f4", 0, (4, 4), (4, 1), "src").array()
    assert lazy.array().shape == (4, 4)


def test_zip64_and_plain_end_records_must_agree(tmp_path):
    # torch.save writes both; zipfile believes the ZIP64 one, so a disagreement is refused.
    data = bytearray(build(torch_members()))
    eocd = data.rfind(b"PK\x05\x06")
    n, cd_size, cd_offset = struct.unpack_from("<HII", data, eocd + 10)
    z64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_offset)
    for lie in (0, 2 << 20):
        record = bytearray(z64)
        struct.pack_into("<Q", record, 48, cd_offset + lie)
        tail = bytes(record) + struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd, 1) + bytes(data[eocd:])
        if lie:
            refused(tmp_path, bytes(data[:eocd]) + tail, "describe different directories")
        else:
            np.testing.assert_array_equal(tp.read_torch_zip(write(tmp_path, bytes(data[:eocd]) + tail))["w"],
                                          FLOATS.reshape(4, 4))


# --- record names: one reading for every zip reader ------------------------------------------------

def _with_extra_member(name: bytes, flags: int):
    ms = torch_members()
    extra = Member("x", b"1", flags=flags)
    extra.name = name
    return build(ms + [extra])


@pytest.mark.parametrize("name,flags,rule", [
    (b"archive/ex\x00tra", 0x800, "zip.name_nul"),      # C readers stop at the NUL
    (b"archive/\x00", 0, "zip.name_nul"),
    (b"archive/\xff\xfe", 0x800, "zip.name_utf8"),      # the UTF-8 flag, and no UTF-8
    (b"archive/\xed\xa0\x80", 0x800, "zip.name_utf8"),  # an encoded surrogate is not UTF-8 either
    (b"archive/caf\xc3\xa9", 0, "zip.name_encoding"),   # no flag: cp437 to zipfile, UTF-8 to others
])
def test_names_that_zip_readers_read_differently_are_refused(tmp_path, name, flags, rule):
    path = write(tmp_path, _with_extra_member(name, flags))
    with pytest.raises(tp.CheckpointError) as info:
        tp.read_torch_zip(path)
    assert info.value.rule == rule and info.value.path == path
    assert "\x00" not in str(info.value) and str(info.value).isprintable()


@pytest.mark.parametrize("name,flags", [(b"archive/caf\xc3\xa9", 0x800), (b"archive/plain", 0), (b"archive/x", 0x800)])
def test_names_with_one_reading_are_accepted(tmp_path, name, flags):
    path = write(tmp_path, _with_extra_member(name, flags))
    assert tp.read_torch_zip(path)["w"].shape == (4, 4)


def test_torch_save_sets_the_utf8_flag_on_every_name(tmp_path):
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "ünï.pt")
    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as zf:
        assert all(info.flag_bits & 0x800 for info in zf.infolist())
    assert tp.read_torch_zip(path)["w"].tolist() == [1.0, 1.0]
