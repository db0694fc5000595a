"""Load time and peak memory of the checkpoint reader, against an older version and the references.

    bash run.sh exec python benchmarks/bench_checkpoint_load.py [--rounds 3] [--old-src DIR] [--megabytes 100,1024]

Files: a 100 MB and a 1 GB checkpoint, each of 256 float32 tensors, as ``torch.save`` writes
them (``.pt``) and as ``safetensors`` writes them. Each load runs in a fresh process, after the
imports, with the page cache warm; peak memory is the process's peak RSS above what it held
before the load (the kernel's high-water mark is reset first, so MindSpore's import does not
count). Two ways of using the result:

- ``all``: every page of every tensor is touched (a network loading every weight);
- ``one``: one element of each tensor is read (a tool listing shapes and a few values).

Contenders, interleaved in a shuffled order each round, medians over the rounds:

- ``this``: this tree's ``read_torch_checkpoint`` (``pread`` into private buffers);
- ``old``: the same function from ``--old-src`` (for example a checkout of v0.2.0, which mapped
  the file with ``mmap``), when given;
- ``torch``: ``torch.load(weights_only=True)`` (``.pt``), with ``mmap=True`` as ``torch mmap``;
- ``safetensors``: ``safetensors.numpy.load_file`` (``.safetensors``).
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, os.pardir, "src")

CHILD = r"""
import json, os, sys, time
import numpy as np
kind, path, how, src = sys.argv[1:5]
if src:
    sys.path.insert(0, src)
if kind in ("this", "old"):
    from ms_weightnorm.torch_io import read_torch_checkpoint
    load = read_torch_checkpoint
elif kind.startswith("torch"):
    import torch
    load = lambda p: {k: v.numpy() for k, v in torch.load(p, weights_only=True, mmap=kind == "torch mmap").items()}
else:
    from safetensors.numpy import load_file
    load = load_file

def status(field):
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith(field)).split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak RSS to the current RSS
base = status("VmRSS:")
start = time.perf_counter()
tensors = load(path)
total = 0
for value in tensors.values():
    flat = np.asarray(value).reshape(-1)
    if how == "all":  # one byte of every page
        total += int(flat.view(np.uint8)[::4096].sum())
    else:
        total += int(flat[:1].view(np.uint8).sum())
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak": status("VmHWM:") - base, "tensors": len(tensors)}))
"""


def make_files(directory: str, megabytes) -> dict:
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    files = {}
    for mb in megabytes:
        label, nbytes = (f"{mb // 1024} GB" if mb % 1024 == 0 else f"{mb} MB"), mb << 20
        numel = nbytes // 4 // 256
        rng = np.random.default_rng(0)
        arrays = {f"layer.{i}.weight": rng.standard_normal(numel, dtype=np.float32) for i in range(256)}
        pt = os.path.join(directory, f"{label.replace(' ', '')}.pt")
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, pt)
        st = os.path.join(directory, f"{label.replace(' ', '')}.safetensors")
        save_file(arrays, st)
        files[f"{label} .pt"] = pt
        files[f"{label} .safetensors"] = st
        del arrays
    return files


def run_one(kind: str, path: str, how: str, old_src: str) -> dict:
    src = old_src if kind == "old" else (os.path.abspath(SRC) if kind == "this" else "")
    env = dict(os.environ, GLOG_v="3")
    done = subprocess.run([sys.executable, "-c", CHILD, kind, path, how, src], capture_output=True, text=True,
                          env=env, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{kind} {path} {how}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-src", default="", help="the src directory of an older checkout to compare with")
    parser.add_argument("--megabytes", default="100,1024", help="checkpoint sizes in MiB (default 100,1024)")
    parser.add_argument("--dir", default="", help="where to write the checkpoints (default: a temporary directory)")
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="bench-load-")
    files = make_files(directory, [int(mb) for mb in args.megabytes.split(",")])
    cells = []
    for label, path in files.items():
        kinds = ["this"] + (["old"] if args.old_src else [])
        kinds += ["torch", "torch mmap"] if path.endswith(".pt") else ["safetensors"]
        for how in ("all", "one"):
            for kind in kinds:
                cells.append((label, how, kind, path))
    results = {cell[:3]: [] for cell in cells}
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = cells[:]
        rng.shuffle(order)
        for label, how, kind, path in order:
            results[(label, how, kind)].append(run_one(kind, path, how, os.path.abspath(args.old_src)
                                                        if args.old_src else ""))
    print(f"{'file':<20} {'use':<4} {'reader':<12} {'seconds (median, range)':>28} {'peak MB (median)':>17} "
          f"{'time / this':>12}")
    for label, how, kind, _ in cells:
        runs = results[(label, how, kind)]
        secs = [r["seconds"] for r in runs]
        this = statistics.median(r["seconds"] for r in results[(label, how, "this")])
        print(f"{label:<20} {how:<4} {kind:<12} {statistics.median(secs):>10.3f} ({min(secs):.3f}-{max(secs):.3f})"
              f"{'':>4} {statistics.median(r['peak'] for r in runs) / 1e6:>17.0f} "
              f"{statistics.median(secs) / this:>12.2f}")


if __name__ == "__main__":
    main()
