"""The zip container of a ``torch.save`` file, validated from its own bytes before any member is read.

Written here rather than with :mod:`zipfile` because zipfile trusts the end record: it
builds every directory entry before a caller can bound their number (a 46 MB file with 1M
entries costs seconds and hundreds of MB), and an end record that overstates the
directory's offset makes it report negative member offsets, which then slice from the end of
the file. Measured on a 100 MB ``torch.save`` file, this parser costs about the same as
zipfile; on a file of 1M entries it refuses after reading 22 bytes.

The rules, each checked before any member's data is read:

- the end record (and the ZIP64 end record and locator, which ``torch.save`` always writes)
  lie inside the file, with no other disk, agree with each other, and the central directory
  ends exactly where the end record starts (no prepended data: torch never writes any);
- the record count is bounded (:data:`limits.MAX_ZIP_RECORDS`) and fits the directory's size
  before a single entry is parsed;
- every entry: stored or deflated, not encrypted, a name of bounded length, sizes bounded by
  the file; its local header at a non-negative offset inside the file agrees with it (name,
  method, and sizes and CRC unless a data descriptor follows);
- members lie before the directory and do not overlap; names are unique, hold no NUL, and are
  UTF-8 under the UTF-8 flag (ASCII without it): one reading for every zip reader.

The file is read with ``pread`` (:mod:`.files`): the tail, the directory in one read, and each
local header.
"""
from __future__ import annotations

import struct
import zlib
from typing import Dict, List, NamedTuple

from . import limits
from .errors import CheckpointError, clip, error
from .files import Bytes, as_bytes

_EOCD = struct.Struct("<4sHHHHIIH")            # end of central directory, 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sIQI")       # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")    # 56 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_LOCAL = struct.Struct("<4sHHHHHIIIHH")        # 30 bytes
STORED, DEFLATED = 0, 8


class Member(NamedTuple):
    """One record of the archive, checked: where its data lies and what it declares."""

    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    data_start: int     # first byte of its (possibly compressed) data

    @property
    def data_end(self) -> int:
        return self.data_start + self.compressed_size


def _bad(source: str, what: str, rule: str) -> CheckpointError:
    return error(source, f"not a valid torch.save archive: {what}", rule)


def _zip64_extra(extra: bytes, fields: List[int], source: str, name: str) -> List[int]:
    """Replace the 0xFFFFFFFF fields of ``fields`` (size, compressed size, offset) from the ZIP64 extra."""
    want = [i for i, v in enumerate(fields) if v == 0xFFFFFFFF]
    if not want:
        return fields
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if len(body) != length:
            break
        if tag == 1:
            if length < 8 * len(want):
                break
            values = struct.unpack_from(f"<{len(want)}Q", body)
            out = list(fields)
            for i, v in zip(want, values):
                out[i] = v
            return out
        pos += 4 + length
    raise _bad(source, f"record '{clip(name)}' declares ZIP64 sizes without a valid ZIP64 extra field", "zip.zip64_extra")


def member_name(raw: bytes, flags: int, source: str) -> str:
    """A record's name, read one way only: UTF-8 under the UTF-8 flag (which torch.save sets), else ASCII.

    A NUL ends the name for C readers, and bytes that are not valid UTF-8, or not ASCII without
    the flag (cp437 to :mod:`zipfile`, UTF-8 to others), are read differently by other zip
    readers: such a name is refused rather than guessed.
    """
    if b"\x00" in raw:
        raise _bad(source, f"a record name holds a NUL byte ({clip(raw.decode('ascii', 'backslashreplace'), 80)})", "zip.name_nul")
    if flags & 0x800:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(source, f"a record name is not valid UTF-8 although its UTF-8 flag is set "
                               f"({clip(raw.decode('ascii', 'backslashreplace'), 80)})", "zip.name_utf8") from None
    if not raw.isascii():
        raise _bad(source, f"a record name holds non-ASCII bytes without the UTF-8 flag, which zip readers "
                           f"decode differently ({clip(raw.decode('ascii', 'backslashreplace'), 80)})", "zip.name_encoding")
    return raw.decode("ascii")


def read_directory(data: Bytes, source: str) -> Dict[str, Member]:
    """The archive's members by name, every rule of this module checked; ``data`` reads the whole file."""
    lim = limits.current()
    data = as_bytes(data, source)
    size = len(data)
    if size < _EOCD.size:
        raise _bad(source, f"{size} bytes is too short for a zip archive (truncated?)", "zip.too_short")
    # The end record is the last 22 bytes plus a comment of at most 65535 bytes: search that tail only.
    tail_start = max(0, size - _EOCD.size - 0xFFFF)
    tail = bytes(data.read(tail_start, size - tail_start))
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0:
        if at + _EOCD.size <= len(tail) and \
                at + _EOCD.size + struct.unpack_from("<H", tail, at + 20)[0] == len(tail):
            break
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise _bad(source, "no end-of-central-directory record (truncated, or not a zip)", "zip.eocd")
    eocd = tail_start + at
    _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
    directory_end = eocd

    def at_(offset: int, n: int) -> bytes:
        return bytes(data.read(offset, n))

    if 0xFFFF in (n_disk, n_total) or 0xFFFFFFFF in (cd_size, cd_offset):
        locator = eocd - _ZIP64_LOCATOR.size
        if locator < 0 or at_(locator, 4) != b"PK\x06\x07":
            raise _bad(source, "the end record declares ZIP64 but has no ZIP64 locator", "zip.zip64_locator")
        _, z_disk, z_offset, n_disks = _ZIP64_LOCATOR.unpack(at_(locator, _ZIP64_LOCATOR.size))
        if z_disk != 0 or n_disks != 1 or z_offset + _ZIP64_EOCD.size > locator:
            raise _bad(source, f"the ZIP64 locator points at offset {z_offset}, outside the file or to another disk",
                       "zip.zip64_locator")
        (sig, _, _, _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset) = _ZIP64_EOCD.unpack(
            at_(z_offset, _ZIP64_EOCD.size))
        if sig != b"PK\x06\x06":
            raise _bad(source, f"no ZIP64 end record at offset {z_offset}", "zip.zip64_eocd")
        directory_end = z_offset
    elif eocd >= _ZIP64_LOCATOR.size and at_(eocd - 20, 4) == b"PK\x06\x07":
        # torch.save writes the ZIP64 records even for small files: the directory ends before them.
        _, z_disk, z_offset, n_disks = _ZIP64_LOCATOR.unpack(at_(eocd - 20, _ZIP64_LOCATOR.size))
        if z_disk == 0 and n_disks == 1 and z_offset + _ZIP64_EOCD.size <= eocd - 20 \
                and at_(z_offset, 4) == b"PK\x06\x06":
            directory_end = z_offset
            # Readers that prefer the ZIP64 record (zipfile does) must see the same directory.
            if _ZIP64_EOCD.unpack(at_(z_offset, _ZIP64_EOCD.size))[4:] != \
                    (disk, cd_disk, n_disk, n_total, cd_size, cd_offset):
                raise _bad(source, "the ZIP64 end record and the end record describe different directories",
                           "zip.zip64_mismatch")
    if disk or cd_disk or n_disk != n_total:
        raise _bad(source, "the archive spans several disks", "zip.multi_disk")
    if n_total > lim.max_zip_records:
        raise _bad(source, f"{n_total} zip records (at most {lim.max_zip_records} allowed)", "zip.records")
    if cd_offset + cd_size != directory_end or n_total * _CENTRAL.size > cd_size:
        raise _bad(source, f"the central directory (offset {cd_offset}, {cd_size} bytes, {n_total} records) does "
                           f"not end where the end record starts ({directory_end}); the file is corrupt or truncated",
                   "zip.directory_offset")
    if cd_size > n_total * (_CENTRAL.size + lim.max_zip_name + 2 * 0xFFFF):
        raise _bad(source, f"the central directory's {cd_size} bytes are more than its {n_total} records can "
                           f"hold", "zip.directory_size")
    directory = bytes(data.read(cd_offset, cd_size))  # one read; every entry is parsed from it
    members: Dict[str, Member] = {}
    pos = 0
    for _ in range(n_total):
        if pos + _CENTRAL.size > cd_size:
            raise _bad(source, "the central directory is shorter than its record count", "zip.directory_count")
        (sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len, disk_start, _, _,
         offset) = _CENTRAL.unpack_from(directory, pos)
        end = pos + _CENTRAL.size + name_len + extra_len + comment_len
        if sig != b"PK\x01\x02" or end > cd_size:
            raise _bad(source, f"a bad central directory entry at offset {cd_offset + pos}", "zip.directory_entry")
        if name_len > lim.max_zip_name:
            raise _bad(source, f"a record name of {name_len} bytes (at most {lim.max_zip_name} allowed)",
                       "zip.name_length")
        raw_name = directory[pos + _CENTRAL.size:pos + _CENTRAL.size + name_len]
        name = member_name(raw_name, flags, source)
        extra = directory[pos + _CENTRAL.size + name_len:pos + _CENTRAL.size + name_len + extra_len]
        usize, csize, offset = _zip64_extra(extra, [usize, csize, offset], source, name)
        pos = end
        if flags & 0x41:  # bit 0: encrypted; bit 6: strong encryption
            raise _bad(source, f"record '{clip(name)}' is encrypted; torch.save never encrypts", "zip.encrypted")
        if method not in (STORED, DEFLATED):
            raise _bad(source, f"record '{clip(name)}' uses compression method {method}; only stored and "
                               f"deflated records are read", "zip.method")
        if disk_start != 0xFFFF and disk_start:
            raise _bad(source, f"record '{clip(name)}' starts on another disk", "zip.multi_disk")
        if csize > size or (method == STORED and usize != csize) or \
                (method == DEFLATED and usize > lim.max_deflated_record):
            raise _bad(source, f"record '{clip(name)}' declares {csize} bytes stored and {usize} bytes of data, "
                               f"more than the file ({size} bytes) or the limits allow", "zip.record_size")
        if name in members:
            raise error(source, f"the zip holds two records named '{clip(name)}'", "zip.duplicate_name")
        members[name] = Member(name, method, crc, csize, usize, offset,
                               _local_data_start(data, offset, raw_name, method, flags, crc, csize, usize,
                                                 cd_offset, source, name))
    # No two members share bytes, and all lie before the directory (checked per member above).
    spans = sorted((m.header_offset, m.data_end, m.name) for m in members.values())
    for (_, end, name), (start, _, other) in zip(spans, spans[1:]):
        if start < end:
            raise _bad(source, f"records '{clip(name)}' and '{clip(other)}' overlap; the file is corrupt or hostile",
                       "zip.overlap")
    return members


def _local_data_start(data: Bytes, offset: int, raw_name: bytes, method: int, flags: int, crc: int,
                      csize: int, usize: int, cd_offset: int, source: str, name: str) -> int:
    if not 0 <= offset <= cd_offset - _LOCAL.size:
        raise _bad(source, f"record '{clip(name)}' has its local header at offset {offset}, outside the file's "
                           f"members (0-{cd_offset})", "zip.local_offset")
    (sig, _, l_flags, l_method, _, _, l_crc, l_csize, l_usize, name_len, extra_len) = _LOCAL.unpack(
        bytes(data.read(offset, _LOCAL.size)))
    start = offset + _LOCAL.size + name_len + extra_len
    mismatch = _bad(source, f"record '{clip(name)}' has a local header that does not match its directory entry",
                    "zip.local_header")
    if sig != b"PK\x03\x04" or name_len != len(raw_name) or l_method != method or \
            (l_flags & 0x41) != (flags & 0x41):
        raise mismatch
    if start > cd_offset:
        raise _bad(source, f"record '{clip(name)}' runs past the start of the central directory; the file is "
                           f"corrupt or truncated", "zip.local_overrun")
    tail = bytes(data.read(offset + _LOCAL.size, name_len + extra_len))
    if tail[:name_len] != raw_name:
        raise mismatch
    if (l_csize, l_usize) == (0xFFFFFFFF, 0xFFFFFFFF):
        l_usize, l_csize = _zip64_extra(tail[name_len:], [l_usize, l_csize], source, name)
    described_later = l_flags & 0x8 and (l_crc, l_csize, l_usize) == (0, 0, 0)  # a data descriptor follows
    if not described_later and (l_crc, l_csize, l_usize) != (crc, csize, usize):
        raise _bad(source, f"record '{clip(name)}' has sizes or CRC in its local header that differ from its "
                           f"directory entry", "zip.local_sizes")
    if start + csize > cd_offset:
        raise _bad(source, f"record '{clip(name)}' runs past the start of the central directory; the file is "
                           f"corrupt or truncated", "zip.local_overrun")
    return start


def read_member(data: Bytes, member: Member, source: str, limit: int) -> bytes:
    """A whole (small) member's bytes, decompressed and CRC-checked; at most ``limit`` bytes."""
    data = as_bytes(data, source)
    if member.size > limit:
        raise error(source, f"record '{clip(member.name)}' holds {member.size} bytes (at most {limit} allowed)",
                    "zip.member_size")
    raw = data.read(member.data_start, member.compressed_size)
    if member.method == STORED:
        out = bytes(raw)
    else:
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(raw, member.size + 1)  # never more than declared (plus one to notice)
        except zlib.error as err:
            raise error(source, f"record '{clip(member.name)}' does not inflate ({clip(str(err))}); "
                                f"the file is corrupt", "zip.inflate") from None
        if len(out) != member.size or not inflater.eof:
            raise error(source, f"record '{clip(member.name)}' inflates to a size other than the "
                                f"{member.size} bytes declared; the file is corrupt", "zip.inflate_size")
    if zlib.crc32(out) != member.crc:
        raise error(source, f"record '{clip(member.name)}' fails its CRC check; the file is corrupt", "zip.crc")
    return out
