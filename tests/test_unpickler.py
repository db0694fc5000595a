"""The unpickler's opcode allowlist, the lengths its opcodes declare, and its bounds (each at the
bound and one past it). The reader package is loaded alone: no MindSpore; torch only as a reference."""
import json
import pickle
import pickletools
import struct
import subprocess
import sys
import textwrap
from collections import OrderedDict

import pytest
from reader_pkg import DIRECTORY, LOAD_READER, load_reader

PKG = DIRECTORY
tp = load_reader(PKG, "_unpickler_pkg")
from _unpickler_pkg import limits, unpickler  # noqa: E402

CheckpointError, UnsafeCheckpointError = tp.CheckpointError, tp.UnsafeCheckpointError


def load(data):
    return unpickler.Unpickler(data, None, "src.pt").load()


# What torch.save writes (protocols 2 and 4; 5 adds BYTEARRAY8 for a bytearray value), and the
# plain-value opcodes of protocols 0 and 1. Written out: a test reading the reader's table
# would follow a changed table.
INTENDED = {
    "STOP", "PROTO", "FRAME", "MARK",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "NONE", "NEWTRUE", "NEWFALSE",
    "FLOAT", "BINFLOAT",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "BYTEARRAY8",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "BINPERSID",
}
CODES = {op.name: op.code.encode("latin1") for op in pickletools.opcodes}


def test_the_opcode_allowlist_is_exactly_the_intended_set():
    assert unpickler.accepted_opcodes() == frozenset(CODES[n] for n in INTENDED)


def test_torch_save_uses_only_allowed_opcodes(tmp_path):
    torch = pytest.importorskip("torch")
    import io
    import zipfile
    sd = OrderedDict(w=torch.randn(3, 4), b=torch.zeros(2, dtype=torch.bfloat16), h=torch.ones(2, dtype=torch.float16),
                     p=torch.nn.Parameter(torch.ones(2)), u=torch.ones(2, dtype=torch.uint16))
    sd["v"] = sd["w"][1:, ::2]
    used = set()
    for proto in (2, 3, 4, 5):
        buf = io.BytesIO()
        torch.save({"sd": sd, "meta": torch.nn.Linear(2, 2).state_dict()}, buf, pickle_protocol=proto)
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
            pkl = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
        used |= {op.name for op, _, _ in pickletools.genops(pkl)}
    assert used <= INTENDED, used - INTENDED


REFUSED_UNSAFE = {"INST": b"(icollections\nOrderedDict\n", "OBJ": b"(ccollections\nOrderedDict\no",
                  "NEWOBJ": b"ccollections\nOrderedDict\n)\x81", "NEWOBJ_EX": b"ccollections\nOrderedDict\n)}\x92",
                  "EXT1": b"\x82\x01", "EXT2": b"\x83\x01\x00", "EXT4": b"\x84\x01\x00\x00\x00",
                  "POP": b"N0", "POP_MARK": b"(1", "DUP": b"N2", "PERSID": b"P0\n",
                  "STRING": b"S'a'\n", "BINSTRING": b"T\x01\x00\x00\x00a", "SHORT_BINSTRING": b"U\x01a",
                  "NEXT_BUFFER": b"\x97", "READONLY_BUFFER": b"N\x98"}


def test_every_other_opcode_is_refused_by_name_before_it_acts():
    names = {op.name for op in pickletools.opcodes}
    assert set(REFUSED_UNSAFE) == names - INTENDED  # every opcode pickle knows is either accepted or here
    for name, body in REFUSED_UNSAFE.items():
        with pytest.raises(UnsafeCheckpointError, match=name) as info:
            load(b"\x80\x02" + body + b".")
        assert "src.pt" in str(info.value)


@pytest.mark.parametrize("byte", [b"\xff", b"\x99", b"\x00", b"z"])
def test_bytes_that_are_no_opcode_are_refused(byte):
    with pytest.raises(CheckpointError, match=f"byte 0x{byte.hex()} at offset 2 is not an opcode"):
        load(b"\x80\x02" + byte + b".")


_BOUNDED = LOAD_READER + textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    tp = load_reader(sys.argv[1], "_unpickler_pkg")
    from _unpickler_pkg import unpickler
    data = bytes.fromhex(sys.argv[2])
    start = time.perf_counter()
    try:
        unpickler.Unpickler(data, None, "src.pt").load()
        out = {"outcome": "loaded"}
    except tp.CheckpointError as err:
        out = {"outcome": "refused", "message": str(err)}
    except BaseException as err:
        out = {"outcome": "crashed", "type": type(err).__name__}
    out["seconds"] = time.perf_counter() - start
    with open("/proc/self/status") as f:
        out["peak_mb"] = int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    print(json.dumps(out))
""")


# Every opcode that declares a length, declaring 3 GiB with nothing behind it.
DECLARING = {
    "BYTEARRAY8": b"\x96" + struct.pack("<Q", 3 << 30),
    "BINBYTES8": b"\x8e" + struct.pack("<Q", 3 << 30),
    "BINUNICODE8": b"\x8d" + struct.pack("<Q", 3 << 30),
    "BINBYTES": b"B" + struct.pack("<I", 3 << 30),
    "BINUNICODE": b"X" + struct.pack("<I", 3 << 30),
    "SHORT_BINBYTES": b"C\xff",
    "SHORT_BINUNICODE": b"\x8c\xff",
    "FRAME": b"\x95" + struct.pack("<Q", 3 << 30),
    "LONG4": b"\x8b" + struct.pack("<i", 3 << 29),
    "LONG1": b"\x8a\xff",
}


@pytest.mark.parametrize("name", sorted(DECLARING))
def test_declared_lengths_are_checked_before_anything_is_allocated(name):
    data = b"\x80\x05" + DECLARING[name] + b"."
    done = subprocess.run([sys.executable, "-c", _BOUNDED, PKG, data.hex()], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "refused", out
    assert "src.pt" in out["message"] and ("bytes are left" in out["message"] or "integer of" in out["message"]), out
    assert out["seconds"] < 1 and out["peak_mb"] < 100, out


def test_the_20_byte_bytearray8_bomb_of_the_report():
    # b"\x80\x05\x96" + 3 GiB + b"." zero-filled 3 GiB in the stdlib-derived reader.
    with pytest.raises(CheckpointError, match="declares a bytearray of 3221225472 bytes at offset 11, but only 1 "):
        load(b"\x80\x05\x96" + struct.pack("<Q", 3 << 30) + b".")


def test_protocol5_bytearray_loads():
    value = {"ba": bytearray(b"\x00\x01z"), "b": b"q"}
    assert load(pickle.dumps(value, protocol=5)) == value


def test_lengths_exactly_at_the_end_load_and_one_past_is_truncation():
    for body in (b"C\x02ab", b"\x8c\x02ab", b"B\x02\x00\x00\x00ab"):
        assert load(b"\x80\x04" + body + b".") in (b"ab", "ab")
        cut = body[:1] + bytes([body[1] + 1]) + body[2:]
        with pytest.raises(CheckpointError, match="truncated"):
            load(b"\x80\x04" + cut + b".")


# --- integers: MAX_INT_BYTES ------------------------------------------------------------------

def _long1(n_bytes, value_byte=0x7F):
    data = bytes([0xFF] * (n_bytes - 1) + [value_byte])
    return b"\x80\x02\x8a" + bytes([n_bytes]) + data + b"."


def _long4(n_bytes):
    return b"\x80\x02\x8b" + struct.pack("<i", n_bytes) + bytes([0xFF] * (n_bytes - 1) + [0x7F]) + b"."


def test_integer_bound_is_32_bytes_at_and_past():
    # The documented bound written out: 32 bytes (256-bit integers).
    assert limits.MAX_INT_BYTES == 32
    assert load(_long1(32)) == (1 << 255) - 1
    assert load(_long4(32)) == (1 << 255) - 1
    assert load(pickle.dumps(-(1 << 255), protocol=2)) == -(1 << 255)
    for data in (_long1(33), _long4(33)):
        with pytest.raises(CheckpointError, match="an integer of 33 bytes \\(at most 32 allowed\\)"):
            load(data)
    # The same bound for protocol 0's text integers (I and L lines).
    assert load(pickle.dumps((1 << 255) - 1, protocol=0)) == (1 << 255) - 1
    for text in (b"I%d\n" % (1 << 255), b"L%dL\n" % (1 << 255), b"I-%d\n" % ((1 << 255) + 1)):
        with pytest.raises(CheckpointError, match="an integer of 33 bytes"):
            load(text + b".")


def test_text_lines_are_bounded():
    assert limits.MAX_LINE == 4096
    assert load(b"V" + b"a" * 4096 + b"\n.") == "a" * 4096
    with pytest.raises(CheckpointError, match="longer than 4096 bytes"):
        load(b"V" + b"a" * 4097 + b"\n.")


# --- nesting: MAX_DEPTH -----------------------------------------------------------------------

def test_mark_nesting_bound_at_and_past():
    assert limits.MAX_DEPTH == 100
    assert load(b"\x80\x02" + b"(" * 100 + b"t" * 100 + b".") is not None
    with pytest.raises(CheckpointError, match="nested deeper than 100"):
        load(b"\x80\x02" + b"(" * 101 + b"t" * 101 + b".")


def test_container_nesting_bound_at_and_past(tmp_path):
    from _unpickler_pkg import torch_zip
    deep = lambda n: b"\x80\x02]" + b"\x85" * (n - 1) + b"."  # noqa: E731  [] in n-1 tuples
    assert torch_zip.finish_tree(load(deep(100)), lambda x: x, "src") is not None
    with pytest.raises(CheckpointError, match="nested deeper than 100"):
        torch_zip.finish_tree(load(deep(101)), lambda x: x, "src")


# --- the opcode budget: MAX_PICKLE_OPS ------------------------------------------------------------

def test_opcode_budget_at_and_past():
    assert limits.MAX_PICKLE_OPS == 2 << 20
    # PROTO, N, then (budget - 3) cheap NONE-with-drop pairs can't be written without POP, so:
    # a list grown by APPEND: ']' then ('N' 'a') pairs, each opcode 1 unit, '.' 1 unit.
    budget = 2 << 20
    pairs = (budget - 3) // 2
    body = b"\x80\x04]" + b"Na" * pairs + (b"N" if (budget - 3) % 2 else b"")
    # PROTO + ] + 2*pairs (+ N) + STOP == budget units exactly
    data = body + b"."
    assert 2 + 2 * pairs + (1 if (budget - 3) % 2 else 0) + 1 == budget
    load(data)
    with pytest.raises(CheckpointError, match="more opcodes than MAX_PICKLE_OPS"):
        load(body + b"N.")


def test_pickle_size_bound_at_and_past(tmp_path):
    assert limits.MAX_PICKLE_BYTES == 64 << 20
    import zipfile
    for size, ok in ((64 << 20, True), ((64 << 20) + 1, False)):
        payload = b"\x80\x04\x8e" + struct.pack("<Q", size - 12) + b"\x00" * (size - 12) + b"."
        assert len(payload) == size
        path = str(tmp_path / "big.pt")
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
        if ok:
            assert len(tp.read_torch_zip(path)) == size - 12
        else:
            with pytest.raises(CheckpointError, match="holds 67108865 bytes \\(at most 67108864"):
                tp.read_torch_zip(path)


# --- a malformed stack never escapes raw --------------------------------------------------------

@pytest.mark.parametrize("data", [b"\x80\x02.", b"\x80\x02a.", b"\x80\x02t.", b"\x80\x02h\x05.", b"\x80\x02Ns.",
                                  b"\x80\x02\x93.", b"\x80\x02NR.", b"\x80\x02}N\x86b.", b"\x80\x02u.",
                                  b"\x80\x06N.", b"\x80\x02I1x\n.", b"\x80\x02F1.2.3\n.", b"\x80\x02Q."])
def test_malformed_pickles_raise_checkpoint_error_only(data):
    with pytest.raises(CheckpointError) as info:
        load(data)
    assert "src.pt" in str(info.value) and len(str(info.value)) <= limits.MAX_MESSAGE


def test_plain_values_of_every_protocol_load_like_pickle():
    value = {"t": True, "f": False, "i": -7, "big": 2 ** 70, "x": 1.5, "s": "é\n", "l": [1, [2]],
             "d": {"k": (1, 2, 3)}, "set": {1, 2}, "fs": frozenset({"a"}), "b": b"\x00\xff", "none": None}
    for proto in range(6):
        assert load(pickle.dumps(value, protocol=proto)) == value, proto


def test_text_opcodes_cost_their_length_not_the_line_bound():
    # 1M protocol-0 integers (3 MB): each line is searched in place, not copied as a 4 KiB window.
    import time
    data = b"(" + b"I1\n" * 1_000_000 + b"l."
    start = time.perf_counter()
    assert len(load(data)) == 1_000_000
    assert time.perf_counter() - start < 5
