"""What one kernel costs on MindSpore's backend, by tensor size: the limit of the composed path.

Run from the repository root: ``bash run.sh exec python benchmarks/bench_kernel_launch.py``.

A compiled graph of a chain of ``n`` elementwise ``Mul`` kernels is timed for n = 1 and
n = 101 (medians of 200 calls each, after 30 warm-up calls); the difference over 100 is the
cost of one more kernel in a compiled graph. It is printed for a per-slice tensor (256, 1)
and a weight-sized one (256, 768). On the CPU backend the two are close: the cost is the
launch, not the arithmetic, so the composed weight norm's 19 kernels per weight cost about
19 launches, whatever the weight's size (see the README, "Which path runs where").
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

if __name__ == "__main__":
    # GLOG_v=3 keeps MindSpore to errors, set before the import that reads it and only when
    # unset, so an explicit GLOG_v (e.g. GLOG_v=2) still shows MindSpore's warnings.
    os.environ.setdefault("GLOG_v", "3")

import mindspore as ms
from mindspore import Tensor

CHAINS = (1, 101)


def chain(n: int):
    @ms.jit
    def run(x, y):
        for _ in range(n):
            x = x * y
        return x
    return run


def median_seconds(fn, x, y, calls: int = 200) -> float:
    for _ in range(30):
        fn(x, y).asnumpy()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(x, y).asnumpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Takes about 5 s (measured 4.4 s on 2 cores); prints one markdown table.",
        epilog="The table: '(256, 1)' and '(256, 768)' are the float32 tensors multiplied; the second column is "
               "the time of a compiled graph of one Mul, the third what each further Mul adds.")
    parser.parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE)
    print("| float32 shape | graph of 1 Mul (us) | each further Mul (us) |")
    print("|---|---|---|")
    for shape in ((256, 1), (256, 768)):
        # Values near 1 keep the chain finite; the arithmetic is the same whatever they are.
        x = Tensor(np.full(shape, 1.0, np.float32))
        y = Tensor(np.full(shape, 1.0000001, np.float32))
        t = {n: median_seconds(chain(n), x, y) for n in CHAINS}
        per = (t[CHAINS[1]] - t[CHAINS[0]]) / (CHAINS[1] - CHAINS[0])
        print(f"| {shape} | {t[CHAINS[0]] * 1e6:.1f} | {per * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
