"""Each charge of the unpickler's cost model, one kind at a time.

Three rules, so that a charge that is wrong, gone or off by one fails here:

1. docs/security.md's table of charges is the code's ``COSTS`` (the table is the model users read).
2. Every opcode and every allowlisted call is charged exactly what that table says. The expected
   charges are computed here from the *document's* numbers, with formulas written out per
   opcode, never from ``COSTS``: a test that derived them from ``COSTS`` would follow a change.
3. Every charge is at least what CPython allocates for what it pays for (from below): the bytes
   an object of that kind keeps, measured with ``tracemalloc`` against a pickle that differs
   only in that object, and the time of a dispatch against the documented time per unit.

The reader package is loaded alone (no MindSpore), as in test_unpickler.
"""
import gc
import os
import re
import struct
import sys
import time
import tracemalloc

import pytest
from reader_pkg import DIRECTORY, load_reader

load_reader(DIRECTORY, "_cost_kinds_pkg")
from _cost_kinds_pkg import limits, tensors, unpickler  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _documented_costs():
    with open(os.path.join(ROOT, "docs", "security.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## The cost model"):text.index("## The bounds")]
    return {name: int(units) for name, units in re.findall(r"^\| `([A-Z_]+)` \| [^\n]*\| (\d+) \|$", section,
                                                           re.MULTILINE)}


DOC = _documented_costs()
NS_PER_UNIT = 70  # docs/security.md: the time per unit, at most, over the hostile patterns


def test_the_documented_table_is_the_codes_costs():
    assert len(DOC) >= 10, DOC  # the table was found and read
    assert DOC == unpickler.COSTS


# --- running a pickle: what it was charged, and what it kept -----------------------------------

def _storage(key, code, numel):
    size = numel * tensors.element_dtype(code).itemsize
    return tensors.Storage(key, code, numel, lambda: memoryview(bytes(size)))


def _load(data, measure=False):
    """``(spent, bytes kept)``: the units charged and what ``tracemalloc`` saw left after the load."""
    with limits.limits(pickle_cost_base=1 << 40, max_pickle_cost=1 << 62):
        u = unpickler.Unpickler(data, _storage, "kinds.pt")
        if not measure:
            u.load()
            return u.spent, 0
        gc.collect()
        tracemalloc.start()
        try:
            out = u.load()
            kept = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del out
        return u.spent, kept


def charged(body, memo=b""):
    """Units spent by a protocol-4 pickle that puts ``body``'s values in a list (after ``memo``)."""
    return _load(b"\x80\x04" + memo + b"(" + body + b"l.")[0]


def delta(body, base, memo=b""):
    return charged(body, memo) - charged(base, memo)


# --- rule 2: each opcode's charge, from the document's numbers ---------------------------------

def f64(x):
    return b"G" + struct.pack(">d", x)


_PID = b"(\x8c\x07storagectorch\nFloatStorage\n\x8c\x010\x8c\x03cpuK\x10t"  # a persistent id, 16 floats


def _global(module, name):
    """What a GLOBAL's two names cost: each line is read (its length), then decoded to a str."""
    return sum(2 * len(s) + sys.getsizeof(s) for s in (module, name))


def _call(module, name, args):
    """``(with the call, without it, memo)``: the callable and its arguments memoized (0 and 1)."""
    memo = b"c%s\n%s\n\x94%s\x94" % (module.encode(), name.encode(), args)
    return b"h\x00h\x01R", b"h\x00h\x01", memo


# (id, body, base, memo, the expected difference in units from the document's table D).
# Where body and base push a different number of values, the list's slots make up the difference.
CASES = [
    ("NONE", b"N", b"", b"", lambda D: D["OP"] + D["SLOT"]),
    ("NEWTRUE", b"\x88", b"N", b"", lambda D: 0),
    ("PROTO", b"\x80\x04", b"", b"", lambda D: D["OP"]),
    ("FRAME", b"\x95" + struct.pack("<Q", 0), b"", b"", lambda D: D["OP"]),
    ("BINFLOAT", f64(1.5), b"N", b"", lambda D: D["SCALAR"]),
    ("BININT1 cached", b"K\xff", b"N", b"", lambda D: 0),
    ("BININT2 256 cached", b"M\x00\x01", b"N", b"", lambda D: 0),
    ("BININT2 257", b"M\x01\x01", b"N", b"", lambda D: D["SCALAR"]),
    ("BININT -5 cached", b"J" + struct.pack("<i", -5), b"N", b"", lambda D: 0),
    ("BININT -6", b"J" + struct.pack("<i", -6), b"N", b"", lambda D: D["SCALAR"]),
    ("LONG1", b"\x8a\x03abc", b"N", b"", lambda D: D["SCALAR"] + 3),
    ("LONG4", b"\x8b\x05\x00\x00\x00abcde", b"N", b"", lambda D: D["SCALAR"] + 5),
    ("INT text", b"I123456\n", b"N", b"", lambda D: 6 + D["SCALAR"]),
    ("INT text True", b"I01\n", b"N", b"", lambda D: 2),
    ("LONG text", b"L123L\n", b"N", b"", lambda D: 4 + D["SCALAR"]),
    ("FLOAT text", b"F1.5\n", b"N", b"", lambda D: 3 + D["SCALAR"]),
    ("SHORT_BINUNICODE", b"\x8c\x03abc", b"N", b"", lambda D: 3 + sys.getsizeof("abc")),
    ("BINUNICODE 4-byte", b"X\x04\x00\x00\x00\xf0\x9f\x98\x80", b"N", b"",
     lambda D: 4 + sys.getsizeof("\U0001F600")),
    ("BINUNICODE8", b"\x8d" + struct.pack("<Q", 5) + b"hello", b"N", b"", lambda D: 5 + sys.getsizeof("hello")),
    ("UNICODE text", b"Vabc\n", b"N", b"", lambda D: 3 + sys.getsizeof("abc")),
    ("SHORT_BINBYTES", b"C\x03abc", b"N", b"", lambda D: D["STRING"] + 6),
    ("BINBYTES", b"B\x04\x00\x00\x00abcd", b"N", b"", lambda D: D["STRING"] + 8),
    ("BINBYTES8", b"\x8e" + struct.pack("<Q", 2) + b"ab", b"N", b"", lambda D: D["STRING"] + 4),
    ("EMPTY_TUPLE", b")", b"N", b"", lambda D: 0),
    ("EMPTY_LIST", b"]", b"N", b"", lambda D: D["CONTAINER"]),
    ("EMPTY_DICT", b"}", b"N", b"", lambda D: D["CONTAINER"]),
    ("MARK LIST", b"(NNl", b"N", b"", lambda D: 3 * D["OP"] + D["CONTAINER"] + 2 * D["SLOT"]),
    ("MARK TUPLE", b"(NNt", b"N", b"", lambda D: 3 * D["OP"] + 2 * D["CONTAINER"] + 2 * D["SLOT"]),
    ("TUPLE1", b"N\x85", b"N", b"", lambda D: D["OP"] + D["CONTAINER"] + D["SLOT"]),
    ("TUPLE2", b"NN\x86", b"N", b"", lambda D: 2 * D["OP"] + D["CONTAINER"] + 2 * D["SLOT"]),
    ("TUPLE3", b"NNN\x87", b"N", b"", lambda D: 3 * D["OP"] + D["CONTAINER"] + 3 * D["SLOT"]),
    ("APPEND", b"]Na", b"]", b"", lambda D: 2 * D["OP"] + D["SLOT"]),
    ("APPENDS", b"](NNe", b"]", b"", lambda D: 4 * D["OP"] + D["CONTAINER"] + 2 * D["SLOT"]),
    ("DICT", b"(K\x01NK\x02Nd", b"N", b"", lambda D: 5 * D["OP"] + 2 * D["CONTAINER"] + 2 * D["HASH"]),
    ("SETITEM", b"}K\x01Ns", b"}", b"", lambda D: 3 * D["OP"] + D["HASH"]),
    ("SETITEM overwrite", b"}K\x01NsK\x01Ns", b"}K\x01Ns", b"", lambda D: 3 * D["OP"] + D["HASH"]),
    ("SETITEMS", b"}(K\x01NK\x02Nu", b"}", b"", lambda D: 6 * D["OP"] + D["CONTAINER"] + 2 * D["HASH"]),
    ("MEMOIZE", b"N\x94", b"N", b"", lambda D: D["OP"] + D["HASH"]),
    ("BINPUT", b"Nq\x00", b"N", b"", lambda D: D["OP"] + D["HASH"]),
    ("LONG_BINPUT", b"Nr\x00\x00\x00\x00", b"N", b"", lambda D: D["OP"] + D["HASH"]),
    ("PUT text", b"Np12\n", b"N", b"", lambda D: D["OP"] + 2 + D["HASH"]),
    ("BINGET", b"h\x00", b"", b"N\x94", lambda D: D["OP"] + D["SLOT"]),
    ("LONG_BINGET", b"j\x00\x00\x00\x00", b"", b"N\x94", lambda D: D["OP"] + D["SLOT"]),
    ("GET text", b"g0\n", b"", b"N\x94", lambda D: D["OP"] + 1 + D["SLOT"]),
    ("GLOBAL", b"ccollections\nOrderedDict\n", b"N", b"", lambda D: _global("collections", "OrderedDict")),
    ("STACK_GLOBAL", b"h\x00h\x01\x93", b"h\x00h\x01", b"\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94",
     lambda D: D["OP"] - D["SLOT"]),
    ("BUILD", b"h\x00h\x01b", b"h\x00h\x01", b"}\x94}\x94", lambda D: D["OP"] - D["SLOT"]),
    ("BINPERSID", b"h\x00Q", b"h\x00", _PID + b"\x94", lambda D: D["OP"] + D["STORAGE"]),
    ("OrderedDict()", *_call("collections", "OrderedDict", b")"), lambda D: D["OP"] + D["ORDERED_DICT"] - D["SLOT"]),
    ("OrderedDict 3 items", *_call("collections", "OrderedDict", b"(K\x01N\x86K\x02N\x86K\x03N\x86l\x85"),
     lambda D: D["OP"] + D["ORDERED_DICT"] + 3 * D["ORDERED_HASH"] - D["SLOT"]),
    ("complex", *_call("builtins", "complex", f64(1.0) + f64(2.0) + b"\x86"),
     lambda D: D["OP"] + D["SCALAR"] - D["SLOT"]),
    ("_codecs.encode", *_call("_codecs", "encode", b"\x8c\x05abcde\x8c\x06latin1\x86"),
     lambda D: D["OP"] + D["STRING"] + 2 * 5 - D["SLOT"]),
    ("torch.Size", *_call("torch", "Size", b"K\x02K\x03K\x04\x87\x85"),
     lambda D: D["OP"] + D["CONTAINER"] + 3 * D["SLOT"] - D["SLOT"]),
    ("torch.device", *_call("torch", "device", b"\x8c\x04cudaK\x00\x86"),
     lambda D: D["OP"] + D["STRING"] + 80 - D["SLOT"]),
    ("_rebuild_tensor 1d", *_call("torch._utils", "_rebuild_tensor", b"(" + _PID + b"QK\x00K\x10\x85K\x01\x85t"),
     lambda D: D["OP"] + D["TENSOR"] + D["TENSOR_DIM"] - D["SLOT"]),
    ("_rebuild_tensor_v2 2d", *_call("torch._utils", "_rebuild_tensor_v2",
                                     b"(" + _PID + b"QK\x00K\x04K\x04\x86K\x04K\x01\x86\x89Nt"),
     lambda D: D["OP"] + D["TENSOR"] + 2 * D["TENSOR_DIM"] - D["SLOT"]),
    ("_rebuild_tensor_v3 0d", *_call("torch._utils", "_rebuild_tensor_v3",
                                     b"(" + _PID + b"QK\x00))\x89Nctorch\nfloat32\nt"),
     lambda D: D["OP"] + D["TENSOR"] - D["SLOT"]),
]


@pytest.mark.parametrize("name,body,base,memo,expected", CASES, ids=[c[0] for c in CASES])
def test_each_opcode_is_charged_what_the_document_says(name, body, base, memo, expected):
    assert delta(body, base, memo) == expected(DOC)


def test_every_charge_in_the_budget_is_the_sum_of_its_opcodes():
    # A whole torch-like state dict: the charges of its parts add up, nothing is charged twice or skipped.
    pairs = b"".join(b"\x8c\x01%c" % k + f64(i) + b"\x86" for i, k in enumerate(b"abc"))
    data = b"\x80\x02ccollections\nOrderedDict\n(" + pairs + b"l\x85R."
    D = DOC
    expected = (
        2 * D["OP"]  # PROTO, STOP
        + D["OP"] + _global("collections", "OrderedDict")
        + D["OP"] + D["CONTAINER"]  # MARK
        + 3 * (D["OP"] + 1 + sys.getsizeof("a") + D["OP"] + D["SCALAR"] + D["OP"] + D["CONTAINER"] + 2 * D["SLOT"])
        + D["OP"] + 3 * D["SLOT"]  # LIST
        + D["OP"] + D["CONTAINER"] + D["SLOT"]  # TUPLE1
        + D["OP"] + D["ORDERED_DICT"] + 3 * D["ORDERED_HASH"]  # REDUCE
    )
    assert _load(data)[0] == expected


# --- rule 3: each charge covers what it allocates ----------------------------------------------

N = 4000


def _kept_per_item(body, base, memo):
    """Units charged and bytes kept per item, between ``n`` items of ``body`` and ``n`` of ``base``.

    ``n`` is ``N``, fewer for big items (about 300 KB of pickle in all): tracemalloc slows
    allocation-heavy loops several times over.
    """
    n = max(50, min(N, 300_000 // len(body)))
    spent_a, kept_a = _load(b"\x80\x04" + memo + b"(" + body * n + b"l.", measure=True)
    spent_b, kept_b = _load(b"\x80\x04" + memo + b"(" + base * n + b"l.", measure=True)
    return (spent_a - spent_b) / n, (kept_a - kept_b) / n


def _od_args(k):
    return b"(" + b"".join(b"M" + struct.pack("<H", 300 + i) + b"N\x86" for i in range(k)) + b"l\x85"


def _tensor_args(dims):
    size = b"(" + b"K\x02" * min(dims, 4) + b"K\x01" * max(dims - 4, 0) + b"t"  # 16 elements at most
    stride = b"(" + b"K\x01" * dims + b"t"
    return b"(" + _PID + b"QK\x00" + size + stride + b"\x89Nt"


# (what, body, base, memo): body and base differ only in the object whose charge is measured.
# Arguments and callables come from the memo, so only what the opcode itself builds is kept.
FROM_BELOW = [
    ("SCALAR float", f64(1.5), b"N", b""),
    ("SCALAR int", b"M\x00\x10", b"N", b""),
    ("SCALAR int of 32 bytes", b"\x8a\x20" + b"\xff" * 31 + b"\x3f", b"N", b""),
    ("SCALAR complex", *_call("builtins", "complex", f64(1.0) + f64(2.0) + b"\x86")),
    ("STRING bytes of 1", b"C\x01a", b"N", b""),
    ("STRING bytes of 300", b"B" + struct.pack("<I", 300) + b"a" * 300, b"N", b""),
    ("STRING device", *_call("torch", "device", b"\x8c\x04cudaK\x07\x86")),
    ("str of 4-byte characters", b"\x8c\x08" + "\U0001F600\U0001F601".encode(), b"N", b""),
    ("CONTAINER list", b"]", b"N", b""),
    ("CONTAINER dict", b"}", b"N", b""),
    ("CONTAINER tuple of 1", b"h\x00\x85", b"h\x00", b"N\x94"),
    ("SLOT of a list", b"(" + b"h\x00" * 64 + b"l", b"(l", b"N\x94"),
    ("SLOT of a tuple", b"(" + b"h\x00" * 64 + b"t", b"(t", b"N\x94"),
    ("HASH memo", b"N\x94", b"N", b""),
    # A dict's first item allocates its table: the dict's CONTAINER and the item's HASH pay together.
    ("CONTAINER and HASH, a dict of 1", b"}h\x00h\x01s", b"N", b"K\x01\x94N\x94"),
    ("HASH dict of 300", b"}(" + b"".join(b"M" + struct.pack("<H", 300 + i) + b"N" for i in range(300)) + b"u",
     b"}(" + b"".join(b"M" + struct.pack("<H", 300 + i) + b"N" for i in range(300)) + b"l", b""),
    ("ORDERED_DICT empty", *_call("collections", "OrderedDict", b")")),
    ("ORDERED_HASH 1 item", *_call("collections", "OrderedDict", _od_args(1))),
    ("ORDERED_HASH 300 items", *_call("collections", "OrderedDict", _od_args(300))),
    ("STORAGE", b"h\x00Q", b"h\x00", _PID + b"\x94"),
    ("TENSOR 0d", *_call("torch._utils", "_rebuild_tensor_v2", _tensor_args(0))),
    ("TENSOR 4d", *_call("torch._utils", "_rebuild_tensor_v2", _tensor_args(4))),
    ("TENSOR 32d", *_call("torch._utils", "_rebuild_tensor_v2", _tensor_args(32))),
    ("OP stack slot", b"h\x00", b"", b"N\x94"),
]


@pytest.mark.parametrize("what,body,base,memo", FROM_BELOW, ids=[c[0] for c in FROM_BELOW])
def test_each_charge_covers_what_its_object_keeps(what, body, base, memo):
    per_item_units, per_item_bytes = _kept_per_item(body, base, memo)
    assert per_item_bytes > 0  # the measurement saw the objects
    assert per_item_units >= per_item_bytes, (
        f"{what}: {per_item_units:.1f} units charged per object, but each keeps {per_item_bytes:.1f} bytes")


def test_a_dispatch_costs_less_time_than_its_charge_buys():
    # An opcode that builds nothing (PROTO) pays only OP: OP units must buy its dispatch at the
    # documented time per unit. Process time, best of five, so other jobs on the machine matter less.
    n = 200_000
    data = b"\x80\x04" * n + b"N."
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        spent = _load(data)[0]
        best = min(best, time.process_time() - start)
    assert spent >= n * DOC["OP"]
    assert best * 1e9 / n <= DOC["OP"] * NS_PER_UNIT, f"{best * 1e9 / n:.0f} ns per dispatch"
