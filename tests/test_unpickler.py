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


# What torch.save writes (protocols 2 to 5) for state dicts, optimizer state dicts and nested
# checkpoints, and the plain-value opcodes of protocols 0 and 1. Written out: a test reading the
# reader's table would follow a changed table. set, frozenset and bytearray are not among them.
INTENDED = {
    "STOP", "PROTO", "FRAME", "MARK",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "NONE", "NEWTRUE", "NEWFALSE",
    "FLOAT", "BINFLOAT",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
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
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    used = set()
    for proto in (2, 3, 4, 5):
        buf = io.BytesIO()
        torch.save({"sd": sd, "meta": model.state_dict(), "optim": opt.state_dict(),
                    "rng": torch.get_rng_state(), "epoch": 3}, buf, pickle_protocol=proto)
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


# Containers no torch.save checkpoint holds: refused by name, as not needed (not as unsafe).
REFUSED_NOT_NEEDED = {"EMPTY_SET": b"\x8f", "ADDITEMS": b"(\x90", "FROZENSET": b"(\x91",
                      "BYTEARRAY8": b"\x96" + struct.pack("<Q", 1) + b"a"}


def test_every_other_opcode_is_refused_by_name_before_it_acts():
    names = {op.name for op in pickletools.opcodes}
    # every opcode pickle knows is either accepted or here
    assert set(REFUSED_UNSAFE) | set(REFUSED_NOT_NEEDED) == names - INTENDED
    for name, body in REFUSED_UNSAFE.items():
        with pytest.raises(UnsafeCheckpointError, match=name) as info:
            load(b"\x80\x02" + body + b".")
        assert info.value.path == "src.pt" and info.value.rule == "pickle.opcode"
    for name, body in REFUSED_NOT_NEEDED.items():
        with pytest.raises(CheckpointError, match=f"opcode {name}") as info:
            load(b"\x80\x05" + body + b".")
        assert info.value.rule == "pickle.not_needed" and not isinstance(info.value, UnsafeCheckpointError)


@pytest.mark.parametrize("value", [{1, 2}, frozenset({"a"}), bytearray(b"ab")], ids=["set", "frozenset", "bytearray"])
@pytest.mark.parametrize("proto", [0, 2, 4, 5])
def test_sets_and_bytearrays_are_refused_in_every_protocol(value, proto):
    # Protocols 0-2 build them with REDUCE on builtins.set/frozenset/bytearray, 4-5 with opcodes.
    with pytest.raises(CheckpointError) as info:
        load(pickle.dumps({"k": value}, protocol=proto))
    assert info.value.rule == "pickle.not_needed", info.value


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
    # b"\x80\x05\x96" + 3 GiB + b"." zero-filled 3 GiB in the stdlib-derived reader; here the
    # opcode itself is refused before its length is read.
    with pytest.raises(CheckpointError, match="opcode BYTEARRAY8, offset 2") as info:
        load(b"\x80\x05\x96" + struct.pack("<Q", 3 << 30) + b".")
    assert info.value.rule == "pickle.not_needed"


def test_protocol5_bytes_load():
    value = {"b": b"\x00\x01z", "c": b"q" * 300}
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
    # Text and binary integers are bounded alike: -2**255 takes 32 bytes in two's complement.
    assert load(pickle.dumps(-(1 << 255), protocol=0)) == -(1 << 255)
    assert load(b"I%d\n." % -(1 << 255)) == -(1 << 255)
    with pytest.raises(CheckpointError, match="an integer of 33 bytes") as info:
        load(pickle.dumps(-(1 << 255) - 1, protocol=0))
    assert info.value.rule == "pickle.int_size"
    with pytest.raises(CheckpointError, match="an integer of 33 bytes"):
        load(pickle.dumps(-(1 << 255) - 1, protocol=2))
    # A text integer's length is bounded before it is parsed (parsing is quadratic in it).
    with pytest.raises(CheckpointError, match="a text integer of 4000 characters") as info:
        load(b"I" + b"0" * 4000 + b"\n.")
    assert info.value.rule == "pickle.int_size"
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


# --- the cost model: Limits.pickle_budget ------------------------------------------------------

def test_the_cost_model_defaults():
    # The documented model written out: 64 units per pickle byte plus 16 MiB, at most 2**30.
    lim = limits.Limits()
    assert (lim.pickle_cost_per_byte, lim.pickle_cost_base, lim.max_pickle_cost) == (64, 16 << 20, 1 << 30)
    assert lim.pickle_budget(1000) == 64 * 1000 + (16 << 20)
    assert lim.pickle_budget(1 << 30) == 1 << 30


def _spent(data):
    u = unpickler.Unpickler(data, None, "src.pt")
    u.load()
    return u.spent


@pytest.mark.parametrize("name,data", [
    ("lists", b"\x80\x04(" + b"]" * 1000 + b"l."),
    ("memo", b"\x80\x04(" + b"]\x94" * 1000 + b"l."),
    ("setitem overwrite", b"\x80\x04}" + b"K\x01Ns" * 1000 + b"."),
    ("strings", b"\x80\x04(" + b"\x8c\x04\xf0\x9f\x98\x80" * 100 + b"l."),
    ("build", b"\x80\x02}\x94(}l\x94" + b"h\x00h\x01b" * 300 + b"."),
])
def test_cost_budget_at_and_one_past(name, data):
    cost = _spent(data)
    with limits.limits(pickle_cost_per_byte=0, pickle_cost_base=cost):
        load(data)
    with limits.limits(pickle_cost_per_byte=0, pickle_cost_base=cost - 1):
        with pytest.raises(CheckpointError, match="would cost more than its budget") as info:
            load(data)
    assert info.value.rule == "pickle.cost"
    # The budget grows with the pickle's size: per byte, not per opcode.
    with limits.limits(pickle_cost_per_byte=cost // len(data) + 1, pickle_cost_base=0):
        load(data)


def test_every_opcode_pays_and_what_it_builds_pays_its_size():
    op = unpickler.COSTS["OP"]
    base = _spent(b"\x80\x04N.")
    assert base == 3 * op
    # A list of n slots pays for them; a string its bytes; a memo entry its hash insert.
    assert _spent(b"\x80\x04(NNNl.") - _spent(b"\x80\x04(l.") == 3 * op + 3 * unpickler.COSTS["SLOT"]
    short, long = (_spent(b"\x80\x04\x8c\x01a."), _spent(b"\x80\x04\x8c\xffa" + b"a" * 254 + b"."))
    assert long - short >= 2 * 254
    assert _spent(b"\x80\x04N\x94.") - base == op + unpickler.COSTS["HASH"]


def test_a_memoized_megabyte_copied_again_and_again_is_refused():
    # Issue 25: _codecs.encode of one memoized 1 MiB string 1,500 times asked for 1.5 GiB.
    big = b"a" * (1 << 20)
    data = (b"\x80\x02c_codecs\nencode\n\x94X" + struct.pack("<I", len(big)) + big + b"\x94\x8c\x06latin1\x94("
            + b"h\x00h\x01h\x02\x86R" * 1500 + b"l.")
    with pytest.raises(CheckpointError) as info:
        load(data)
    assert info.value.rule == "pickle.cost"
    # The same for OrderedDict rebuilt from one memoized list of pairs.
    pairs = b"(" + b"".join(b"\x8c\x05k%04dN\x86" % i for i in range(10000)) + b"l\x94"
    data = b"\x80\x02ccollections\nOrderedDict\n\x94" + pairs + b"(" + b"h\x00h\x01\x85R" * 1000 + b"l."
    with pytest.raises(CheckpointError) as info:
        load(data)
    assert info.value.rule == "pickle.cost"


def test_real_torch_save_pickles_use_well_under_the_budget():
    torch = pytest.importorskip("torch")
    import io
    import zipfile
    sd = {f"layer.{i}.weight": torch.zeros(2) for i in range(5000)}
    buf = io.BytesIO()
    torch.save(sd, buf)
    data = zipfile.ZipFile(io.BytesIO(buf.getvalue())).read("archive/data.pkl")
    storage = lambda key, code, numel: tp.tensors.Storage(key, code, numel, lambda: memoryview(b""))  # noqa: E731
    u = unpickler.Unpickler(data, storage, "src.pt")
    u.load()
    # About 40 units per pickle byte: the 64 of the model leave a margin of 1.5x.
    assert u.spent < 48 * len(data), u.spent / len(data)


@pytest.mark.parametrize("key", [(1, 2), 1.5, None, True, b"k", 1 << 61, -(1 << 61)])
def test_dict_keys_are_only_strings_and_ints_of_distinct_hash(key):
    for proto in (0, 2, 4):
        with pytest.raises(CheckpointError) as info:
            load(pickle.dumps({key: 1}, protocol=proto))
        assert info.value.rule == "pickle.dict_key"
    assert load(pickle.dumps({(1 << 61) - 2: 1, -(1 << 61) + 2: 2, "s": 3})) == {(1 << 61) - 2: 1, -(1 << 61) + 2: 2, "s": 3}


def test_colliding_int_tuple_keys_cannot_be_built():
    # Issue 25: 100k int-tuple keys of one hash made insertion quadratic (9 minutes). Tuple keys are refused.
    data = pickle.dumps(OrderedDict(((i, -1 - i), None) for i in range(3)), protocol=2)
    with pytest.raises(CheckpointError) as info:
        load(data)
    assert info.value.rule == "pickle.dict_key"


# --- FRAME: CPython's rules ------------------------------------------------------------------------

def _frame(body):
    return b"\x95" + struct.pack("<Q", len(body)) + body


def test_frames_as_cpython_writes_them_load():
    value = {"a": list(range(100)), "b": "x" * 70000}
    data = pickle.dumps(value, protocol=4)
    assert load(data) == value == pickle.loads(data)


@pytest.mark.parametrize("data,rule", [
    # BININT's argument runs past the end of its frame.
    (b"\x80\x04" + _frame(b"J\x01\x00") + b"\x00\x00.", "pickle.frame_overrun"),
    # A text line runs past the end of its frame.
    (b"\x80\x04" + _frame(b"I12") + b"\n.", "pickle.frame_overrun"),
    # A new frame starts before the current one is used up.
    (b"\x80\x04" + b"\x95" + struct.pack("<Q", 12) + _frame(b"N") + b"..", "pickle.frame_overlap"),
])
def test_frame_boundaries_are_enforced_as_cpython_does(data, rule):
    with pytest.raises(pickle.UnpicklingError):
        pickle._Unpickler(__import__("io").BytesIO(data)).load()  # CPython's pure-Python rule
    with pytest.raises(CheckpointError) as info:
        load(data)
    assert info.value.rule == rule


def test_an_opcode_may_end_exactly_at_its_frame_end():
    data = b"\x80\x04" + _frame(b"J\x01\x00\x00\x00") + _frame(b".")
    assert load(data) == 1 == pickle._Unpickler(__import__("io").BytesIO(data)).load()


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
             "d": {"k": (1, 2, 3), 5: OrderedDict(a=1)}, "b": b"\x00\xff", "none": None, "c": 1 + 2j}
    for proto in range(6):
        assert load(pickle.dumps(value, protocol=proto)) == value, proto


def test_text_opcodes_cost_their_length_not_the_line_bound():
    # 1M protocol-0 integers (3 MB): each line is searched in place, not copied as a 4 KiB window.
    import time
    data = b"(" + b"I1\n" * 1_000_000 + b"l."
    start = time.perf_counter()
    assert len(load(data)) == 1_000_000
    assert time.perf_counter() - start < 5
