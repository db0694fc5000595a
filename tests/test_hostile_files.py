"""Hostile checkpoint files: crafted opcode by opcode and record by record, no torch needed.

Every file is read in a fresh subprocess under a memory limit (``RLIMIT_AS``) and a
timeout, by the reader package alone (``_checkpoint`` imports no MindSpore), and
the outcome, time and peak memory are checked. The same files go through
``torch.load(weights_only=True)`` and the ``safetensors`` package: wherever they refuse
a file, so do we; where they are weaker (a bad CRC, a FIFO) we still refuse.
"""
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from reader_pkg import DIRECTORY, LOAD_READER, load_reader

READER = DIRECTORY
MiB = 1 << 20
READER_LIMIT = 1 << 30        # address space for the numpy-only reader (numpy alone needs ~120 MB)
HEAVY_LIMIT = 3 << 30         # MindSpore or torch imported (~850 MB / 1.3 GB of address space)


# The reader package under a name of its own, without importing ms_weightnorm (MindSpore).
tp = load_reader(READER, "_hostile_reader")
from _hostile_reader import limits as tp_limits, unpickler as tp_unpickler  # noqa: E402


# --- crafting pickles ---------------------------------------------------------------------

class P:
    """A pickle written opcode by opcode."""

    def __init__(self, proto=2):
        self.b = bytearray(b"\x80" + bytes([proto]))

    def raw(self, data):
        self.b += data
        return self

    def int(self, n):
        if 0 <= n < 2 ** 31:
            return self.raw(b"J" + struct.pack("<i", n))
        data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        return self.raw(b"\x8a" + bytes([len(data)]) + data if len(data) < 256
                        else b"\x8b" + struct.pack("<i", len(data)) + data)

    def str(self, s, encoded=None):
        data = s.encode() if encoded is None else encoded
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def glob(self, module, name):                     # GLOBAL, as protocols 0-2 write it
        return self.raw(f"c{module}\n{name}\n".encode())

    def stack_glob(self, module, name):               # STACK_GLOBAL, as protocol 4 writes it
        for part in (module, name):
            data = part.encode()
            self.raw(b"\x8c" + bytes([len(data)]) + data)
        return self.raw(b"\x93")

    def put(self, i):
        return self.raw(b"r" + struct.pack("<I", i))

    def get(self, i):
        return self.raw(b"j" + struct.pack("<I", i))

    def ints(self, values):
        self.raw(b"(")
        for v in values:
            self.int(v)
        return self.raw(b"t")

    def done(self):
        return bytes(self.b + b".")


def tensor(key, numel, offset, size, stride, storage="FloatStorage", size_writer=None, pid_writer=None):
    """Writes ``torch._utils._rebuild_tensor_v2(<storage key>, offset, size, stride, False, OrderedDict())``."""
    def write(p):
        p.glob("torch._utils", "_rebuild_tensor_v2").raw(b"(")
        if pid_writer is not None:
            pid_writer(p)
        else:
            p.raw(b"(").str("storage").glob("torch", storage).str(key).str("cpu").int(numel).raw(b"t")
        p.raw(b"Q").int(offset)
        size_writer(p) if size_writer is not None else p.ints(size)
        p.ints(stride).raw(b"\x89").glob("collections", "OrderedDict").raw(b")RtR")
    return write


def state(entries, proto=2):
    """A pickled ``OrderedDict`` of ``entries``: (key, writer) pairs."""
    p = P(proto).glob("collections", "OrderedDict").raw(b")R(")
    for key, write in entries:
        p.str(key)
        write(p)
    return p.raw(b"u").done()


def torch_zip(path, pkl, records, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for key, data in records.items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")
    return path


def shared_tuple(p, levels, index0=0):
    """t0 = (); t_i = (t_{i-1}, t_{i-1}): 2**levels leaves once expanded; leaves t_levels on the stack."""
    # Without POP, which torch's unpickler does not implement: the top of the stack is t_{i-1}.
    p.raw(b")").put(index0)
    for i in range(1, levels + 1):
        p.get(index0 + i - 1).raw(b"\x86").put(index0 + i)
    return p


FLOATS = np.arange(16, dtype=np.float32)


# --- the files ----------------------------------------------------------------------------

def make_files(d):
    """Every hostile category: name -> (path, kind, expected outcome, message pattern)."""
    files = {}

    def add(name, path, expect, match="", kind="pt"):
        files[name] = (path, kind, expect, match)

    j = lambda name: os.path.join(d, name)  # noqa: E731

    add("baseline", torch_zip(j("baseline.pt"), state([
        ("w", tensor("0", 16, 0, (4, 4), (4, 1))),
        ("t", tensor("0", 16, 1, (2, 3), (1, 4))),       # a strided view of the same storage
        ("n", lambda p: p.int(7)),
    ]), {"0": FLOATS.tobytes()}), "loaded")

    # Shared memo: a tuple holding itself 60 levels deep (2**60 leaves if expanded).
    bomb_data = P().glob("collections", "OrderedDict").raw(b")R(").str("bomb")
    shared_tuple(bomb_data, 60, index0=10)
    bomb_data.str("w")
    tensor("0", 16, 0, (16,), (1,))(bomb_data)
    add("memo_bomb_as_data", torch_zip(j("bomb_data.pt"), bomb_data.raw(b"u").done(),
                                       {"0": FLOATS.tobytes()}), "loaded")
    add("memo_bomb_as_persistent_id", torch_zip(j("bomb_pid.pt"), state([
        ("w", tensor("0", 16, 0, (16,), (1,), pid_writer=lambda p: shared_tuple(p, 60, 100)))]),
        {"0": FLOATS.tobytes()}), "refused", "unexpected persistent id")
    add("memo_bomb_as_tensor_size", torch_zip(j("bomb_size.pt"), state([
        ("w", tensor("0", 16, 0, None, (1,), size_writer=lambda p: shared_tuple(p, 60, 100)))]),
        {"0": FLOATS.tobytes()}), "refused", "tensor size must be")
    key_bomb = P().glob("collections", "OrderedDict").raw(b")R")
    shared_tuple(key_bomb, 60, 10).int(1).raw(b"s")
    add("memo_bomb_as_dict_key", torch_zip(j("bomb_key.pt"), key_bomb.done(), {}), "refused", "dict key")

    huge = (1 << (8 * 50_000)) - 1  # a 50 KB LONG4 integer, in each of 3 dimensions
    add("long4_huge_sizes", torch_zip(j("long4.pt"), state([
        ("w", tensor("0", 16, 0, (huge, huge, huge), (1, 1, 1)))]), {"0": FLOATS.tobytes()}),
        "refused", "integer of 50001 bytes")
    add("long_huge_storage_size", torch_zip(j("long_numel.pt"), state([
        ("w", tensor("0", 1 << 70, 0, (4,), (1,)))]), {"0": FLOATS.tobytes()}),
        "refused", "storage size must be")

    # 4096 stride-0 views of 2**20 elements over one 16-byte storage: 16 GiB if copied.
    add("stride0_views", torch_zip(j("stride0.pt"), state([
        (f"v{i}", tensor("0", 4, 0, (1 << 20,), (0,))) for i in range(4096)]),
        {"0": FLOATS[:4].tobytes()}), "loaded")
    # One 4 MiB storage under 2048 tensors: 8 GiB if copied.
    add("one_storage_2048_tensors", torch_zip(j("shared.pt"), state([
        (f"v{i}", tensor("0", MiB, 0, (MiB,), (1,))) for i in range(2048)]),
        {"0": np.ones(MiB, np.float32).tobytes()}), "loaded")

    add("view_ends_at_storage_end", torch_zip(j("end_ok.pt"), state([
        ("w", tensor("0", 16, 4, (3, 4), (4, 1)))]), {"0": FLOATS.tobytes()}), "loaded")
    add("view_one_element_past_end", torch_zip(j("end_bad.pt"), state([
        ("w", tensor("0", 16, 5, (3, 4), (4, 1)))]), {"0": FLOATS.tobytes()}),
        "refused", "reaches element 16 of storage '0', which has 16")
    add("storage_record_too_short", torch_zip(j("short_record.pt"), state([
        ("w", tensor("0", 16, 0, (16,), (1,)))]), {"0": FLOATS[:15].tobytes()}),
        "refused", "holds 60 bytes, expected 64")

    deep_lists = P()
    deep_lists.raw(b"]").put(0)
    for i in range(1, 100_000):  # L_i = [L_{i-1}]
        deep_lists.raw(b"]").get(i - 1).raw(b"a").put(i)
    add("deep_nesting_lists", torch_zip(j("deep_lists.pt"), deep_lists.done(), {}), "refused", "nested deeper")
    add("deep_nesting_marks", torch_zip(j("deep_marks.pt"), P().raw(b"(" * 100_000).done(), {}),
        "refused", "nested deeper")
    add("deep_nesting_tuples", torch_zip(j("deep_tuples.pt"), P().raw(b")" + b"\x85" * 100_000).done(), {}),
        "refused", "nested deeper")

    add("bad_utf8", torch_zip(j("utf8.pt"), P().str("", encoded=b"\xff\xfe\xc3").done(), {}),
        "refused", "UnicodeDecodeError")
    add("unknown_opcode", torch_zip(j("opcode.pt"), P().raw(b"\xff").done(), {}), "refused", "malformed")
    add("truncated_pickle", torch_zip(j("trunc_pkl.pt"), state([("w", tensor("0", 16, 0, (16,), (1,)))])[:-2],
                                      {"0": FLOATS.tobytes()}), "refused", "malformed or truncated")
    # Cheap opcodes that allocate: refused by the opcode budget before memory runs out.
    add("set_spam", torch_zip(j("sets.pt"), P(4).raw(b"\x8f" * (3 << 19)).done(), {}), "refused", "no torch.save checkpoint holds")
    add("memo_spam", torch_zip(j("memo.pt"), P(4).raw(b"N" + b"\x94" * (5 << 20)).done(), {}), "refused",
        "would cost more than its budget")
    add("list_spam", torch_zip(j("lists.pt"), P(4).raw(b"]" * (5 << 19)).done(), {}), "refused",
        "would cost more than its budget")

    good = open(files["baseline"][0], "rb").read()
    with zipfile.ZipFile(files["baseline"][0]) as zf:
        info = zf.getinfo("archive/data/0")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        pkl = zf.getinfo("archive/data.pkl")
        pkl_start = pkl.header_offset + 30 + len(pkl.filename) + len(pkl.extra)
    flipped = bytearray(good)
    flipped[start + 5] ^= 0x40
    add("bad_crc_storage", _write(j("crc_storage.pt"), flipped), "refused", "fails its CRC check")
    flipped = bytearray(good)
    flipped[pkl_start + pkl.file_size - 3] ^= 0x01  # inside the last few opcodes: still parses
    add("bad_crc_pickle", _write(j("crc_pickle.pt"), flipped), "refused", "CRC")
    for tag, cut in (("a", len(good) // 3), ("b", len(good) - 30)):
        add(f"truncated_file_{tag}", _write(j(f"trunc{tag}.pt"), good[:cut]), "refused", "not a valid")
    add("zip_garbage", _write(j("garbage.pt"), b"PK\x03\x04" + os.urandom(200)), "refused", "not a valid")
    add("compressed_storage", torch_zip(j("deflate.pt"), state([("w", tensor("0", 16, 0, (16,), (1,)))]),
                                        {"0": FLOATS.tobytes()}, compress=zipfile.ZIP_DEFLATED),
        "refused", "compressed")
    os.mkfifo(j("fifo.pt"))
    add("fifo", j("fifo.pt"), "refused", "not a regular file")

    # safetensors
    def st(name, header, data):
        text = json.dumps(header).encode()
        return _write(j(name), struct.pack("<Q", len(text)) + text + data)

    f4 = {"dtype": "F32", "shape": [2]}
    add("st_baseline", st("ok.safetensors", {"a": {**f4, "data_offsets": [0, 8]},
                                             "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]}},
                          np.float32([1, 2]).tobytes() + b"\xc0\x3f\x00\xc0"), "loaded", kind="st")
    add("st_overlap", st("overlap.safetensors", {"a": {**f4, "data_offsets": [0, 8]},
                                                 "b": {**f4, "data_offsets": [4, 12]}}, bytes(12)),
        "refused", "valid safetensors", kind="st")
    add("st_gap", st("gap.safetensors", {"a": {**f4, "data_offsets": [0, 8]},
                                         "b": {**f4, "data_offsets": [12, 20]}}, bytes(20)),
        "refused", "valid safetensors", kind="st")
    dup = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}'
    add("st_duplicate_key", _write(j("dup.safetensors"), struct.pack("<Q", len(dup)) + dup + bytes(16)),
        "refused", "valid safetensors", kind="st")
    for bad in (2.0, "2", True):
        add(f"st_shape_{type(bad).__name__}", st(f"shape_{type(bad).__name__}.safetensors",
                                                 {"a": {"dtype": "F32", "shape": [bad], "data_offsets": [0, 8]}},
                                                 bytes(8)), "refused", "valid safetensors", kind="st")
    big = json.dumps({"__metadata__": {"x": "y" * 100_000_001}}).encode()
    add("st_huge_header", _write(j("huge.safetensors"), struct.pack("<Q", len(big)) + big),
        "refused", "100000000-byte limit", kind="st")
    add("st_header_longer_than_file", _write(j("long_header.safetensors"), struct.pack("<Q", 1 << 40) + b"{}"),
        "refused", "exceeds the file", kind="st")
    add("st_truncated", _write(j("st_trunc.safetensors"), open(files["st_baseline"][0], "rb").read()[:-3]),
        "refused", "valid safetensors", kind="st")
    return files


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


# --- running a file in a bounded subprocess -----------------------------------------------

_CHILD = LOAD_READER + textwrap.dedent("""
    import importlib.util, json, resource, sys, time
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    def peak_mb():
        # VmHWM: this process's peak RSS (ru_maxrss would carry the forking parent's across exec).
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    tp = load_reader(sys.argv[2])
    import numpy as np
    path, kind = sys.argv[3], sys.argv[4]
    start = time.perf_counter()
    try:
        obj = (tp.read_torch_zip if kind == "pt" else tp.read_safetensors)(path)
        arrays = [v for v in obj.values() if isinstance(v, np.ndarray)]
        # Touch every array: views must read correctly, not just exist.
        out = {"outcome": "loaded", "keys": len(obj), "first": [float(a.flat[0]) for a in arrays[:3]],
               "sum_of_first": float(sum(a.flat[0] for a in arrays)),
               "last": [float(a.flat[-1]) for a in arrays[:3]]}
    except tp.CheckpointError as err:
        out = {"outcome": "refused", "type": type(err).__name__, "message": str(err)[:3000]}
    except BaseException as err:
        out = {"outcome": "crashed", "type": type(err).__name__, "message": str(err)[:500]}
    out["seconds"] = time.perf_counter() - start
    out["maxrss_mb"] = peak_mb()
    print(json.dumps(out))
""")


def run_reader(path, kind, limit=READER_LIMIT, timeout=60):
    done = subprocess.run([sys.executable, "-c", _CHILD, str(limit), READER, path, kind],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("hostile"))
    return make_files(d)


@pytest.fixture(scope="module")
def outcomes(hostile):
    return {name: run_reader(path, kind) for name, (path, kind, _, _) in hostile.items()}


NAMES = [
    "baseline", "memo_bomb_as_data", "memo_bomb_as_persistent_id", "memo_bomb_as_tensor_size",
    "memo_bomb_as_dict_key", "long4_huge_sizes", "long_huge_storage_size", "stride0_views",
    "one_storage_2048_tensors", "view_ends_at_storage_end", "view_one_element_past_end",
    "storage_record_too_short", "deep_nesting_lists", "deep_nesting_marks", "deep_nesting_tuples", "bad_utf8",
    "unknown_opcode", "truncated_pickle", "set_spam", "memo_spam", "list_spam", "bad_crc_storage",
    "bad_crc_pickle", "truncated_file_a", "truncated_file_b", "zip_garbage", "compressed_storage", "fifo",
    "st_baseline", "st_overlap", "st_gap", "st_duplicate_key", "st_shape_float", "st_shape_str",
    "st_shape_bool", "st_huge_header", "st_header_longer_than_file", "st_truncated",
]


def test_the_categories_are_all_there(hostile):
    assert sorted(hostile) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_hostile_file_gets_the_expected_outcome_bounded(name, hostile, outcomes):
    path, kind, expect, match = hostile[name]
    out = outcomes[name]
    assert out["outcome"] == expect, out
    if expect == "refused":
        assert out["type"] in ("CheckpointError", "UnsafeCheckpointError"), out
        assert path in out["message"], out          # the error names the file
        assert match in out["message"], out
    # Bounded by the cost model (docs/security.md): at most ~1.1 bytes per unit of the pickle's
    # budget (64 units per byte + 16 MiB), plus the file's own bytes, plus numpy itself (~40 MB).
    size = os.path.getsize(path)
    model_mb = 1.2 * tp_limits.Limits().pickle_budget(size) / 2 ** 20 + 2 * size / 2 ** 20 + 60
    assert out["seconds"] < 20, out
    assert out["maxrss_mb"] < min(model_mb, 500), (out, model_mb)


def test_loaded_hostile_files_have_the_right_values(outcomes):
    # Views read the storage correctly: values against the bytes written.
    assert outcomes["baseline"]["first"] == [0.0, 1.0] and outcomes["baseline"]["last"] == [15.0, 10.0]
    assert outcomes["stride0_views"]["keys"] == 4096
    assert outcomes["stride0_views"]["first"] == [0.0] * 3 and outcomes["stride0_views"]["last"] == [0.0] * 3
    assert outcomes["one_storage_2048_tensors"]["sum_of_first"] == 2048.0
    assert outcomes["view_ends_at_storage_end"]["first"] == [4.0]
    assert outcomes["view_ends_at_storage_end"]["last"] == [15.0]   # the storage's last element
    assert outcomes["st_baseline"]["first"] == [1.0, 1.5] and outcomes["st_baseline"]["last"] == [2.0, -2.0]


def test_stride0_and_shared_views_share_memory(hostile):
    # In-process: the arrays are views of one storage, not copies.
    got = tp.read_torch_zip(hostile["one_storage_2048_tensors"][0])
    arrays = list(got.values())
    assert all(np.shares_memory(arrays[0], a) for a in arrays[:50])
    assert not arrays[0].flags.writeable
    zero = tp.read_torch_zip(hostile["stride0_views"][0])["v7"]
    assert zero.strides == (0,) and zero.shape == (1 << 20,) and zero.base is not None


def test_exact_bounds_in_process(tmp_path):
    # Two views ending at the last element, with and without strides, are accepted; one element more is not.
    ok = torch_zip(str(tmp_path / "ok.pt"), state([
        ("a", tensor("0", 16, 15, (1,), (1,))), ("b", tensor("0", 16, 0, (2, 2), (15, 0))),
        ("c", tensor("0", 16, 16, (0,), (1,)))]), {"0": FLOATS.tobytes()})
    got = tp.read_torch_zip(ok)
    assert got["a"].tolist() == [15.0] and got["b"].tolist() == [[0.0, 0.0], [15.0, 15.0]] and got["c"].size == 0
    for size, stride, offset in [((1,), (1,), 16), ((2, 2), (16, 0), 0), ((0,), (1,), 17), ((17,), (1,), 0)]:
        bad = torch_zip(str(tmp_path / "bad.pt"), state([("a", tensor("0", 16, offset, size, stride))]),
                        {"0": FLOATS.tobytes()})
        with pytest.raises(tp.CheckpointError, match="storage|past its storage"):
            tp.read_torch_zip(bad)


# --- the comparison: torch.load(weights_only=True) and safetensors --------------------------

_TORCH_CHILD = textwrap.dedent("""
    import json, resource, signal, sys, time
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    def peak_mb():
        # VmHWM: this process's peak RSS (ru_maxrss would carry the forking parent's across exec).
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    import torch, safetensors
    class Timeout(Exception):
        pass
    def alarm(*_):
        raise Timeout()
    signal.signal(signal.SIGALRM, alarm)
    results = {}
    for name, path, kind in json.loads(sys.argv[2]):
        start = time.perf_counter()
        signal.alarm(20)
        try:
            if kind == "pt":
                torch.load(path, weights_only=True)
            else:
                with safetensors.safe_open(path, framework="pt") as f:
                    [f.get_tensor(k) for k in f.keys()]
            outcome = "loaded"
        except Timeout:
            outcome = "timeout"
        except BaseException as err:
            outcome = "refused: " + type(err).__name__
        finally:
            signal.alarm(0)
        results[name] = {"outcome": outcome, "seconds": time.perf_counter() - start,
                         "maxrss_mb": peak_mb()}
    print(json.dumps(results))
""")


def test_we_refuse_whatever_torch_and_safetensors_refuse(hostile, outcomes):
    # Not given to torch: the FIFO (torch.load blocks on it forever) and the shared tuple used
    # as a dict key (torch hashes it: 2**60 steps in C, which no alarm interrupts). We refuse both.
    todo = [(name, path, kind) for name, (path, kind, _, _) in hostile.items()
            if name not in ("fifo", "memo_bomb_as_dict_key")]
    done = subprocess.run([sys.executable, "-c", _TORCH_CHILD, str(HEAVY_LIMIT), json.dumps(todo)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    for name, result in theirs.items():
        if result["outcome"] != "loaded":
            assert outcomes[name]["outcome"] == "refused", (name, result, outcomes[name])
    # Where the reference is weaker, we are not: it loads a storage with a bad CRC.
    assert theirs["bad_crc_storage"]["outcome"] == "loaded"
    assert outcomes["bad_crc_storage"]["outcome"] == "refused"
    # And it agrees with us on the files both accept.
    for name in ("baseline", "memo_bomb_as_data", "stride0_views", "one_storage_2048_tensors", "st_baseline"):
        assert theirs[name]["outcome"] == "loaded", (name, theirs[name])
    # safetensors refuses every malformed safetensors file we refuse.
    for name, (_, kind, expect, _) in hostile.items():
        if kind == "st" and expect == "refused":
            assert theirs[name]["outcome"].startswith("refused"), (name, theirs[name])


def test_fifo_is_refused_without_blocking(hostile):
    # torch.load blocks forever opening a FIFO with no writer; we check before reading.
    path = hostile["fifo"][0]
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=run_reader(path, "pt")), daemon=True)
    worker.start()
    worker.join(30)
    assert result["out"]["outcome"] == "refused" and "not a regular file" in result["out"]["message"]


# --- code execution: the allowlist, through protocols 2 and 4 --------------------------------

_INTENDED = {("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"), ("_codecs", "encode"),
             ("builtins", "complex"),
             *(("torch._utils", n) for n in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                                             "_rebuild_parameter", "_rebuild_parameter_with_state")),
             *(("torch", n) for n in (
                 "float64", "double", "float32", "float", "float16", "half", "bfloat16", "int64", "long",
                 "int32", "int", "int16", "short", "int8", "uint8", "uint16", "uint32", "uint64", "bool",
                 "complex64", "cfloat", "complex128", "cdouble")),
             *((m, n) for m in ("torch", "torch.cuda") for n in (
                 "DoubleStorage", "FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
                 "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage",
                 "ComplexDoubleStorage")),
             ("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")}


def test_allowlist_is_exactly_the_intended_set():
    assert tp.allowed_globals() == frozenset(_INTENDED)
    # Nothing callable in it is a builtin that could run code or reach attributes.
    for key in _INTENDED:
        value = tp_unpickler.ALLOWED[key]
        assert value not in (eval, exec, getattr, __import__, open, compile, setattr, type), key


DANGEROUS = [("os", "system"), ("posix", "system"), ("nt", "system"), ("builtins", "eval"),
             ("builtins", "exec"), ("builtins", "getattr"), ("builtins", "__import__"), ("builtins", "open"),
             ("__builtin__", "eval"), ("__builtin__", "getattr"), ("subprocess", "Popen"),
             ("subprocess", "check_output"), ("runpy", "run_path"), ("pickle", "loads"), ("numpy", "load"),
             ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"), ("torch", "load"),
             ("torch._utils", "_rebuild_from_type_v2"), ("collections", "Counter.__init__")]


@pytest.mark.parametrize("proto", [2, 4])
@pytest.mark.parametrize("module,name", DANGEROUS)
def test_dangerous_globals_are_refused_before_anything_runs(module, name, proto, tmp_path):
    marker = tmp_path / "ran"
    p = P(proto)
    (p.glob if proto == 2 else p.stack_glob)(module, name)
    p.raw(b"(").str(f"touch {marker}").raw(b"tR")  # func("touch ...") as REDUCE
    path = torch_zip(str(tmp_path / "evil.pt"), p.done(), {})
    with pytest.raises(tp.UnsafeCheckpointError, match=r"Nothing from the file was run"):
        tp.read_torch_zip(path)
    assert not marker.exists()


def test_the_crafted_payload_really_runs_code_without_the_allowlist(tmp_path):
    # The test above would be empty if the payload could not run: with pickle it does.
    marker = tmp_path / "ran"
    p = P(4).stack_glob("os", "system").raw(b"(").str(f"touch {marker}").raw(b"tR")
    pickle.loads(p.done())
    assert marker.exists()


OBJECT_BUILDERS = {
    "NEWOBJ": P(4).glob("collections", "OrderedDict").raw(b")\x81"),
    "NEWOBJ_EX": P(4).glob("collections", "OrderedDict").raw(b")}\x92"),
    "OBJ": P(2).raw(b"(").glob("collections", "OrderedDict").raw(b"o"),
    "INST": P(2).raw(b"(icollections\nOrderedDict\n"),
    "EXT1": P(2).raw(b"\x82\x01"),
}


@pytest.mark.parametrize("opcode", sorted(OBJECT_BUILDERS))
def test_object_building_opcodes_are_refused(opcode, tmp_path):
    # Even on an allowed class: a state dict never instantiates classes this way.
    with pytest.raises(tp.UnsafeCheckpointError, match="instantiating a class|extension registry"):
        tp.read_torch_zip(torch_zip(str(tmp_path / "obj.pt"), OBJECT_BUILDERS[opcode].done(), {}))


def test_protocol2_builtin_names_load(tmp_path):
    # torch.save writes protocol 2, where builtins are named __builtin__ (complex here).
    value = OrderedDict(c=1.5 - 2j, y=b"\x00\xfe", nested={"k": [1, (2, "three")], 3: None})
    for proto in (2, 4):
        pkl = pickle.dumps(value, protocol=proto)
        assert (b"__builtin__" in pkl) == (proto == 2)
        got = tp.read_torch_zip(torch_zip(str(tmp_path / f"p{proto}.pt"), pkl, {}))
        assert got == value and type(got["y"]) is bytes
    # __builtin__.set, frozenset and bytearray are named, and refused, as not needed.
    for extra in ({1, 2}, frozenset({"a"}), bytearray(b"\x00")):
        pkl = pickle.dumps({"x": extra}, protocol=2)
        with pytest.raises(tp.CheckpointError, match=f"builds a {type(extra).__name__}, which no torch.save") as info:
            tp.read_torch_zip(torch_zip(str(tmp_path / "refused.pt"), pkl, {}))
        assert info.value.rule == "pickle.not_needed"


def test_torch_saved_bytes_complex_and_optimizer_state_load_like_torch(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    obj = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "raw": b"\x01\x02", "ratio": 2 + 1j,
           "ordered": OrderedDict(z=1), "generator": model.state_dict(), "optim": opt.state_dict()}
    path = str(tmp_path / "full.pt")
    torch.save(obj, path)
    got = tp.read_torch_zip(path)
    ref = torch.load(path, weights_only=True)
    assert got["raw"] == ref["raw"] and got["ratio"] == ref["ratio"] and got["ordered"] == ref["ordered"]
    np.testing.assert_array_equal(got["w"], ref["w"].numpy())
    assert got["optim"]["param_groups"] == ref["optim"]["param_groups"]  # int keys, (beta1, beta2) tuples
    for i, state in ref["optim"]["state"].items():
        for k, v in state.items():
            np.testing.assert_array_equal(got["optim"]["state"][i][k], v.numpy())


def test_a_set_saved_by_torch_is_refused_naming_it(tmp_path):
    # torch.load(weights_only=True) reads a set a user saved; no state dict, optimizer state or
    # nested checkpoint holds one, so this reader refuses it rather than widen what it hashes.
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "sets.pt")
    torch.save({"w": torch.ones(2), "names": {"a", "b"}}, path)
    with pytest.raises(tp.CheckpointError, match="builds a set, which no torch.save checkpoint holds") as info:
        tp.read_torch_zip(path)
    assert info.value.rule == "pickle.not_needed" and info.value.path == path


# --- the loader on hostile files: bounded by the network ------------------------------------

_LOADER_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    def peak_mb():
        # VmHWM: this process's peak RSS (ru_maxrss would carry the forking parent's across exec).
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    import numpy as np
    from mindspore import nn
    from ms_weightnorm.torch_io import load_torch_state_dict, CheckpointError
    results = {}
    for name, path in json.loads(sys.argv[2]):
        net = nn.SequentialCell([nn.Dense(4, 4)])
        before = net[0].weight.asnumpy().copy()
        start = time.perf_counter()
        try:
            missing, unexpected = load_torch_state_dict(net, path, strict=False)
            outcome = {"outcome": "loaded", "missing": missing, "unexpected": len(unexpected),
                       "weight": net[0].weight.asnumpy().tolist()}
        except (CheckpointError, ValueError, TypeError) as err:
            outcome = {"outcome": "refused", "type": type(err).__name__, "message": str(err)[:2000],
                       "unchanged": bool(np.array_equal(before, net[0].weight.asnumpy()))}
        outcome["seconds"] = time.perf_counter() - start
        outcome["maxrss_mb"] = peak_mb()
        results[name] = outcome
    print(json.dumps(results))
""")


def test_loader_on_amplifying_files_costs_what_the_network_needs(tmp_path):
    d = str(tmp_path)
    stride0 = torch_zip(os.path.join(d, "s0.pt"), state(
        [("0.weight", tensor("0", 4, 0, (4, 4), (0, 1))), ("0.bias", tensor("0", 4, 0, (4,), (1,)))]
        + [(f"x{i}", tensor("0", 4, 0, (1 << 20,), (0,))) for i in range(4096)]), {"0": FLOATS[:4].tobytes()})
    # The network's own keys as huge stride-0 views: never read, reported as shape mismatches.
    huge_keys = torch_zip(os.path.join(d, "huge.pt"), state(
        [("0.weight", tensor("0", 4, 0, (1 << 30, 1 << 10), (0, 0))), ("0.bias", tensor("0", 4, 0, (4,), (1,)))]),
        {"0": FLOATS[:4].tobytes()})
    shared = torch_zip(os.path.join(d, "shared.pt"), state(
        [("0.weight", tensor("0", MiB, 8, (4, 4), (4, 1))), ("0.bias", tensor("0", MiB, 0, (4,), (1,)))]
        + [(f"x{i}", tensor("0", MiB, 0, (MiB,), (1,))) for i in range(2048)]),
        {"0": np.arange(MiB, dtype=np.float32).tobytes()})
    bad_crc = bytearray(open(shared, "rb").read())
    with zipfile.ZipFile(shared) as zf:
        info = zf.getinfo("archive/data/0")
    bad_crc[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 1
    crc = _write(os.path.join(d, "crc.pt"), bad_crc)
    todo = [("stride0", stride0), ("huge_keys", huge_keys), ("shared", shared), ("bad_crc", crc)]
    done = subprocess.run([sys.executable, "-c", _LOADER_CHILD, str(HEAVY_LIMIT), json.dumps(todo)],
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["stride0"]["outcome"] == "loaded" and out["stride0"]["unexpected"] == 4096
    assert out["stride0"]["weight"] == [[0.0, 1.0, 2.0, 3.0]] * 4
    assert out["huge_keys"]["outcome"] == "loaded" and out["huge_keys"]["missing"] == ["0.weight"]
    assert out["shared"]["weight"] == np.arange(8, 24, dtype=np.float32).reshape(4, 4).tolist()
    assert out["bad_crc"]["outcome"] == "refused" and out["bad_crc"]["unchanged"]
    assert "CRC" in out["bad_crc"]["message"] and crc in out["bad_crc"]["message"]
    for name, result in out.items():
        # MindSpore alone takes ~480 MB; copies of the 2048 views would be 8 GiB, of the
        # stride-0 views 16 GiB, and the huge key 4 TiB.
        assert result["seconds"] < 30 and result["maxrss_mb"] < 900, (name, result)


# --- exact bounds of the values the unpickler builds --------------------------------------

def _load(tmp_path, value, proto):
    return tp.read_torch_zip(torch_zip(str(tmp_path / f"v{proto}.pt"), pickle.dumps(value, protocol=proto), {}))


@pytest.mark.parametrize("proto", [0, 1, 2, 4])
def test_small_ints_bools_and_longs_load_with_their_types(proto, tmp_path):
    # Protocol 0 writes True/False as the INT lines "01"/"00" and big ints as "L...L" lines.
    value = {"t": True, "f": False, "i": -7, "z": 0, "one": 1, "big": 2 ** 70 + 3, "neg": -(2 ** 65)}
    got = _load(tmp_path, value, proto)
    assert got == value
    assert got["t"] is True and got["f"] is False
    assert type(got["one"]) is int and type(got["z"]) is int


# ints of distinct hashes: hash(n) == n below 2**61 - 1 (the hash modulus), whose hash is hash(0).
@pytest.mark.parametrize("key", [2 ** 61 - 2, -(2 ** 61) + 2, 0, "s", "é\x00"])
def test_dict_keys_at_the_bounds_are_accepted(key, tmp_path):
    for proto in (0, 2, 4):
        assert _load(tmp_path, {key: 1}, proto) == {key: 1}
        assert _load(tmp_path, OrderedDict([(key, 1)]), proto) == {key: 1}


@pytest.mark.parametrize("key", [2 ** 61 - 1, -(2 ** 61) + 1, (1,), (), b"b", None, True, 1.0])
def test_dict_keys_past_the_bounds_are_refused(key, tmp_path):
    for proto in (0, 2, 4):
        for value in ({key: 1}, OrderedDict([(key, 1)])):
            with pytest.raises(tp.CheckpointError, match="a dict key is .* checkpoints only use strings and ints") as info:
                _load(tmp_path, value, proto)
            assert info.value.rule == "pickle.dict_key"


@pytest.mark.parametrize("key,ok", [("a" * 1000, True), ("a" * tp_limits.MAX_KEY_LENGTH, None),
                                    ("a" * (tp_limits.MAX_KEY_LENGTH + 1), False),
                                    ("", False), ("x/../y", False), ("é", False), ("data_0-1.5", True)])
def test_storage_keys_are_bounded_and_plain(key, ok, tmp_path):
    records = {key: FLOATS.tobytes()} if ok else {"0": FLOATS.tobytes()}
    path = torch_zip(str(tmp_path / "k.pt"), state([("a", tensor(key, 16, 0, (16,), (1,)))]), records)
    if ok is None:
        # The longest key passes the key check; no zip record can have so long a name (65535
        # bytes at most, with "archive/data/"), so the load fails on the missing record.
        with pytest.raises(tp.CheckpointError) as info:
            tp.read_torch_zip(path)
        assert "bad storage key" not in str(info.value)
    elif ok:
        assert tp.read_torch_zip(path)["a"].tolist() == FLOATS.tolist()
    else:
        with pytest.raises(tp.CheckpointError, match="bad storage key"):
            tp.read_torch_zip(path)


def test_storage_types_give_their_element_types(tmp_path):
    # Each legacy storage class names its element type; the bytes are read as that type.
    raw = np.arange(8, dtype=np.uint8).tobytes()
    for storage, dtype in [("ByteStorage", np.uint8), ("CharStorage", np.int8), ("BoolStorage", np.bool_),
                           ("ShortStorage", np.int16), ("HalfStorage", np.float16)]:
        n = 8 // np.dtype(dtype).itemsize
        path = torch_zip(str(tmp_path / f"{storage}.pt"),
                         state([("a", tensor("0", n, 0, (n,), (1,), storage=storage))]), {"0": raw})
        got = np.asarray(tp.read_torch_zip(path)["a"])
        assert got.dtype == np.dtype(dtype), storage
        np.testing.assert_array_equal(got, np.frombuffer(raw, dtype), err_msg=storage)


@pytest.mark.parametrize("padding,refused_for_size", [(1024 - len("little"), False), (1025 - len("little"), True)])
def test_byteorder_record_is_bounded(padding, refused_for_size, tmp_path):
    # The documented bound, 1 KiB, written out: a test reading tp_limits.MAX_SMALL_RECORD would follow a
    # changed constant.
    path = str(tmp_path / "order.pt")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(OrderedDict(a=1), protocol=2))
        zf.writestr("archive/byteorder", "little" + " " * padding)  # whitespace is stripped
        zf.writestr("archive/version", "3\n")
    if refused_for_size:
        with pytest.raises(tp.CheckpointError, match="record 'archive/byteorder' holds 1025 bytes \\(at most 1024"):
            tp.read_torch_zip(path)
    else:
        assert tp.read_torch_zip(path) == OrderedDict(a=1)


def test_codecs_encode_rebuilds_only_latin1_bytes(tmp_path):
    # Protocol 2 stores bytes as _codecs.encode(str, "latin1"); nothing else is accepted.
    assert _load(tmp_path, {"b": b"\x00\xe9"}, 2) == {"b": b"\x00\xe9"}
    for args in (b"(X\x01\x00\x00\x00aX\x05\x00\x00\x00utf-8t", b"(K\x05X\x06\x00\x00\x00latin1t"):
        pkl = b"\x80\x02c_codecs\nencode\n" + args + b"R."
        with pytest.raises(tp.UnsafeCheckpointError, match="only allowed to rebuild bytes") as info:
            tp.read_torch_zip(torch_zip(str(tmp_path / "enc.pt"), pkl, {}))
        assert info.value.rule == "pickle.codecs"


def test_torch_device_arguments():
    u = tp_unpickler.Unpickler(b".", None, "d.pt")
    device = lambda *args: tp_unpickler._torch_device(u, *args)  # noqa: E731
    assert device("cpu") == "cpu" and device("cuda", 1) == "cuda:1"
    for kind, index in [("cuda", "1"), ("cuda", 1.0), ("x" * 65, None), (3, None)]:
        with pytest.raises(tp.CheckpointError, match="is not a device") as info:
            device(kind, index)
        assert info.value.rule == "pickle.device"
    assert device("x" * 64) == "x" * 64


def _v3_tensor(key, storage, numel, size, dtype):
    """``_rebuild_tensor_v3(<storage>, 0, size, (1,), False, OrderedDict(), torch.<dtype>)``: a
    tensor whose dtype is given apart from its storage's element type."""
    def write(p):
        p.glob("torch._utils", "_rebuild_tensor_v3").raw(b"(")
        p.raw(b"(").str("storage").glob("torch", storage).str(key).str("cpu").int(numel).raw(b"t")
        p.raw(b"Q").int(0).ints(size).ints((1,)).raw(b"\x89").glob("collections", "OrderedDict").raw(b")R")
        p.glob("torch", dtype).raw(b"tR")
    return write


@pytest.mark.parametrize("halves,ok", [(4, True), (6, True), (3, False), (5, False)])
def test_a_retyped_storage_must_hold_whole_elements(halves, ok, tmp_path):
    # A HalfStorage of `halves` elements read as float32: 2 bytes each, so an even count is a
    # whole number of float32 elements and an odd one is not, whatever the view's size.
    raw = np.arange(halves, dtype=np.float16).tobytes()
    path = torch_zip(str(tmp_path / "v3.pt"), state([("a", _v3_tensor("0", "HalfStorage", halves, (1,), "float32"))]),
                     {"0": raw})
    if ok:
        got = np.asarray(tp.read_torch_zip(path)["a"])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, np.frombuffer(raw[:4], np.float32))
    else:
        with pytest.raises(tp.CheckpointError, match=r"storage '0' is not a whole number of <f4 elements"):
            tp.read_torch_zip(path)


# --- bounds pinned at the bound and one past it --------------------------------------------------

def test_index_bound_at_and_past(tmp_path):
    # The documented bound written out: sizes, strides, offsets and storage sizes are at most 2**62.
    assert tp_limits.MAX_INDEX == 1 << 62
    for value, ok in ((1 << 62, True), ((1 << 62) + 1, False)):
        # An empty tensor at offset `value` of a huge (declared) storage: only the numbers are checked.
        path = torch_zip(str(tmp_path / "idx.pt"), state([("w", tensor("0", 16, 0, (0,), (value,)))]),
                         {"0": FLOATS.tobytes()})
        if ok:
            assert tp.read_torch_zip(path)["w"].shape == (0,)
        else:
            with pytest.raises(tp.CheckpointError, match=r"tensor stride must be an int in \[0, 2\*\*62\]"):
                tp.read_torch_zip(path)


def test_message_bound_at_and_past():
    from _hostile_reader import errors
    assert tp_limits.MAX_MESSAGE == 4000
    assert errors.clip_message("m" * 4000) == "m" * 4000
    clipped = errors.clip_message("m" * 4001)
    assert len(clipped) == 4000 and clipped == "m" * 3976 + "... [25 more characters]"
    # Through the boundary: a CheckpointError with a huge message comes out clipped, naming the file.
    def raise_long(path):
        raise tp.CheckpointError("x" * 10_000)
    with pytest.raises(tp.CheckpointError) as info:
        tp.guarded(raise_long, "/some/file.pt")
    assert len(str(info.value)) == 4000 and str(info.value).startswith("/some/file.pt: xxx")


def test_safetensors_header_bound_at_and_past(tmp_path):
    assert tp_limits.SAFETENSORS_MAX_HEADER == 100_000_000
    for size, ok in ((100_000_000, True), (100_000_001, False)):
        prefix = b'{"__metadata__":{"x":"'
        header = prefix + b"y" * (size - len(prefix) - 3) + b'"}}'
        assert len(header) == size
        path = _write(str(tmp_path / "h.safetensors"), struct.pack("<Q", size) + header)
        if ok:
            assert tp.read_safetensors(path) == {}
        else:
            with pytest.raises(tp.CheckpointError, match="100000000-byte limit") as info:
                tp.read_safetensors(path)
            assert info.value.rule == "safetensors.header_length"
        os.unlink(path)


def test_key_lists_and_key_lengths_in_messages_at_and_past():
    from _hostile_reader import errors
    assert tp_limits.MAX_KEY_LENGTH == 65536
    twenty = [f"k{i}" for i in range(20)]
    assert errors.names(twenty) == ", ".join(twenty)
    assert errors.names(twenty + ["k20"]) == ", ".join(twenty) + ", ... and 1 more"
    assert errors.names(["a" * 120]) == "a" * 120
    assert errors.names(["a" * 121]) == "a" * 117 + "..."
