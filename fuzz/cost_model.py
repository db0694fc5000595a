"""Measure the unpickler's cost model: peak memory and time per charged unit, per hostile pattern.

    PYTHONPATH=src python fuzz/cost_model.py [--scale N]

Each pattern is a pickle built to make one kind of object as cheaply (in pickle bytes) as the
format allows. Each runs in a fresh process; the table gives its size, the units charged, the
budget, the peak RSS above the process's baseline, and the ratios bytes/unit and ns/unit that
docs/security.md quotes. ``properties.py`` checks the same ratios on every fuzz input.
"""
import argparse
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def patterns(n: int):
    u32 = lambda v: struct.pack("<I", v)  # noqa: E731
    big = b"a" * (1 << 20)
    yield "empty lists", b"\x80\x04(" + b"]" * n + b"l."
    yield "empty dicts", b"\x80\x04(" + b"}" * n + b"l."
    yield "memoized lists", b"\x80\x04(" + b"]\x94" * n + b"l."
    yield "tuple1 of None", b"\x80\x04(" + b"N\x85" * n + b"l."
    yield "ints", b"\x80\x04(" + b"".join(b"J" + struct.pack("<i", 1000 + i) for i in range(n)) + b"l."
    yield "floats", b"\x80\x04(" + b"G" + struct.pack(">d", 1.5) + b"G" * 0 + b"".join(
        b"G" + struct.pack(">d", i + 0.5) for i in range(n // 2)) + b"l."
    yield "4-byte chars", b"\x80\x04(" + (b"\x8c\x04\xf0\x9f\x98\x80") * (n // 2) + b"l."
    yield "str keys dict", b"\x80\x04}(" + b"".join(b"\x8c\x06" + b"%06d" % (i % 10**6) + b"N" for i in range(n // 4)) + b"u."
    yield "int keys dict", b"\x80\x04}(" + b"".join(b"J" + struct.pack("<i", i) + b"N" for i in range(n // 4)) + b"u."
    yield "setitem overwrite", b"\x80\x04}" + b"K\x01Ns" * (n // 2) + b"."
    yield "encode 1 MiB again", (b"\x80\x02c_codecs\nencode\n\x94X" + u32(len(big)) + big + b"\x94\x8c\x06latin1\x94"
                                 + b"(" + b"h\x00h\x01h\x02\x86R" * 4096 + b"l.")
    pairs = b"(" + b"(\x8c\x01kN\x86" * 1 + b"".join(b"\x8c\x05k%04dN\x86" % i for i in range(10000)) + b"l\x94"
    yield "OrderedDict again", (b"\x80\x02ccollections\nOrderedDict\n\x94" + pairs
                                + b"(" + b"h\x00h\x01\x85R" * 4096 + b"l.")
    try:
        import io
        import zipfile

        import torch
    except ImportError:
        pass
    else:
        buf = io.BytesIO()
        torch.save({f"layer.{i}.weight": torch.zeros(2) for i in range(20000)}, buf)
        yield "torch.save 20k", zipfile.ZipFile(io.BytesIO(buf.getvalue())).read("archive/data.pkl")
    yield "build discards", b"\x80\x02}\x94" + b"(" + b"}" * 100 + b"l\x94" + b"h\x00h\x01b" * (n // 5) + b"."


CHILD = r"""
import json, sys, time, resource
sys.path.insert(0, sys.argv[1])
from reader_pkg import DIRECTORY, load_reader
tp = load_reader(DIRECTORY, "_cost")
from _cost import unpickler, torch_zip
data = open(sys.argv[2], "rb").read()
def hwm():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) * 1024
base = hwm()
storage = lambda key, code, numel: tp.tensors.Storage(key, code, numel, lambda: memoryview(bytes(0)))
u = unpickler.Unpickler(data, storage, "x")
start = time.perf_counter()
try:
    torch_zip.finish_tree(u.load(), lambda x: x, "x")
    outcome = "loaded"
except tp.CheckpointError as err:
    outcome = err.rule
seconds = time.perf_counter() - start
print(json.dumps({"outcome": outcome, "bytes": len(data), "spent": u.spent, "budget": u.budget,
                  "peak": hwm() - base, "seconds": seconds}))
"""


def measure(data: bytes, tests_dir: str) -> dict:
    path = os.path.join("/tmp", f"cost-model-{os.getpid()}.pkl")
    with open(path, "wb") as f:
        f.write(data)
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, tests_dir, path], capture_output=True, text=True,
                              timeout=600)
        if done.returncode:
            return {"outcome": f"crashed: {done.stderr[-300:]}"}
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=1_000_000)
    args = parser.parse_args()
    tests_dir = os.path.join(HERE, os.pardir, "tests")
    print(f"{'pattern':<20} {'bytes':>9} {'units':>11} {'budget':>11} {'outcome':>12} {'peak MB':>8} "
          f"{'B/unit':>7} {'ns/unit':>8}")
    for name, data in patterns(args.scale):
        r = measure(data, tests_dir)
        if "spent" not in r:
            print(name, r)
            continue
        print(f"{name:<20} {r['bytes']:>9} {r['spent']:>11} {r['budget']:>11} {r['outcome']:>12} "
              f"{r['peak'] / 1e6:>8.1f} {r['peak'] / max(r['spent'], 1):>7.2f} {r['seconds'] * 1e9 / max(r['spent'], 1):>8.1f}")


if __name__ == "__main__":
    main()
