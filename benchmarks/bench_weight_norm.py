"""Benchmark of ms_weightnorm's weight norm against PyTorch's fused kernel and the plain layer.

Run from the repository root:

    python benchmarks/bench_weight_norm.py            # full run (2 min 8 s on an idle 2-core machine)
    python benchmarks/bench_weight_norm.py --quick    # fewer repetitions (230-251 s on a busy 2-core machine)

It prints markdown tables of medians over repeated runs. The contenders of each table are
measured interleaved in one process (in a shuffled order each round), so machine noise hits
them alike and the ratios are side by side. PyTorch columns appear when torch is installed.
The training table also times a second, identical plain network: its ratio to the first
is the noise level of the run.

1. What weight norm adds to a network's weights: one compiled step (GRAPH_MODE) takes the
   value and the gradients of ``sum_i sum(w_i * gw_i)`` over many weights ``w_i``, once with
   plain Parameters and once with ``w_i = weight_norm(v_i, g_i)``; the difference is weight
   norm's cost, for the fused kernels, the composed MindSpore ops, and PyTorch
   (``torch._weight_norm``, eager autograd, same loss) side by side.
2. Kernels per weight-normed weight on each path, counted in the compiled graph (the kernel
   actors of MindSpore's final actor set, weight-normed minus plain), forward and backward.
3. The reparameterization, forward + backward: the gradients with respect to ``v`` and ``g``
   of ``w = weight_norm(v, g, dim)`` for an incoming gradient ``gw`` (the same numbers as the
   gradient of ``sum(gw * w)``, without timing MindSpore's slow CPU full-tensor sum, which
   alone costs several times the weight norm on the conv shapes). GRAPH_MODE, one ``ms.jit``
   function per contender: the fused kernels, the composed ops, ``torch._weight_norm``
   (eager autograd; the faster of 1 thread and the default count), and one plain copy of
   ``v`` (``numpy.copyto`` into a preallocated array) as the memory-traffic floor.
   MindSpore's CPU graphs run synchronously: the timings include launching the graph, whose
   cost alone is the "MS graph launch" column (a graph computing ``2 * g``); it is paid once
   per graph, not per layer, in a training step.
4. Training steps (``nn.TrainOneStepCell`` + Adam, GRAPH_MODE) with weight norm on every layer
   against the same network without it, and PyTorch's ``torch.nn.utils.weight_norm`` overhead
   on the same network (eager) in the same run.
5. Inference after ``remove_all_weight_norm`` against the plain network, and graph compile
   time (first training step) with and without weight norm.
6. Chained Cell parametrizations (``ms_weightnorm.parametrize``) on every layer of the MLP:
   what each of three parametrizations adds to a training step alone, and what their chains
   add, against the sum of the parts; and the compile time of the three-parametrization chain.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import glob
import os
import re
import tempfile
import platform
import random
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

if __name__ == "__main__":
    # MindSpore logs warnings at its default level that a reader of the tables cannot act on:
    # "has been compiled again" each time the interleaved contenders switch graphs, and the
    # deprecation of the save_graphs option the kernel count reads compiled graphs with.
    # GLOG_v=3 keeps errors only; MindSpore reads it at import, so it is set before the
    # import, and only when unset: an explicit GLOG_v (e.g. GLOG_v=2) wins.
    os.environ.setdefault("GLOG_v", "3")

import numpy as np

import mindspore as ms
from mindspore import nn, Parameter, ParameterTuple

import ms_weightnorm as wn
from ms_weightnorm import functional as F

try:  # PyTorch is only a reference here; the benchmark runs without it.
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

SHAPES = [
    ((4096, 4096), "Dense 4096x4096"),
    ((512, 512, 1, 7), "HiFi-GAN Conv1d 512x512 k7"),
    ((256, 256, 1, 3), "Conv1d 256x256 k3"),
    ((64, 64, 3, 3), "Conv2d 64x64 3x3"),
]


# MindSpore's CPU runtime runs the first steps of a newly compiled graph of many kernels in a
# slow phase: measured on 2026-12-04 (MindSpore 2.10, 2 cores, idle machine), a step of 4
# weight-normed (256, 256, 1, 3) weights took 4-5 ms on calls 1-4 and 15 on, but 130-136 ms on
# calls 5-14; MindSpore's autodiff of the plain composition shows the same stretch (21-72 ms
# against 7-8 ms later), graphs of a few kernels do not. The stretch is MindSpore's, not
# weight norm's, and is paid once per graph, so every contender is warmed past it.
WARMUP_CALLS = 20


def interleaved(fns: Dict[str, Callable[[], None]], rounds: int, calls: int,
                prepare: Dict[str, Callable[[], None]] = None) -> Dict[str, float]:
    """Median seconds per call of each function, timed round-robin.

    Each sample is ``calls`` back-to-back calls (each function synchronizes at its end). The
    order is shuffled every round and samples are separated by a short pause: on a 2-core
    machine, the worker threads that one framework leaves spinning after its call would
    otherwise slow whichever contender always comes next. ``prepare[name]()`` runs untimed
    before each sample of ``name``.
    """
    prepare = prepare or {}
    for name, fn in fns.items():  # warm-up: compile, allocate, fill caches
        prepare.get(name, lambda: None)()
        for _ in range(WARMUP_CALLS):
            fn()
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    order = list(fns)
    shuffler = random.Random(0)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            prepare.get(name, lambda: None)()
            time.sleep(0.003)
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(ts) for name, ts in samples.items()}


def ms_reparam_fn(kind: str, v: ms.Tensor, g: ms.Tensor, gw: ms.Tensor, dim: int) -> Callable[[], None]:
    def weight(v, g):
        return F.weight_norm(v, g, dim)

    @ms.jit
    def grad(v, g, gw):
        _, vjp = ms.vjp(weight, v, g)
        return vjp(gw)

    def run():
        dv, dg = grad(v, g, gw)
        dv.asnumpy()  # cheap: CPU graphs have finished when the call returns

    # Compile now, under this backend; drop_compiled=False keeps each graph on the backend it
    # was traced with, so both run side by side in one process.
    F.set_backend(kind, drop_compiled=False)
    run()
    F.set_backend("auto", drop_compiled=False)
    return run


def torch_reparam_fn(v: np.ndarray, g: np.ndarray, gw: np.ndarray, dim: int) -> Callable[[], None]:
    vt = torch.tensor(v, requires_grad=True)
    gt = torch.tensor(g, requires_grad=True)
    gwt = torch.tensor(gw)

    def run():
        w = torch._weight_norm(vt, gt, dim)
        torch.autograd.grad(w, (vt, gt), gwt)

    return run


# PyTorch is timed with one thread and with its default count; the faster of the two is
# the reference (on a loaded 2-core machine one thread is often faster: no waiting on a
# descheduled worker).
TORCH_THREADS = torch.get_num_threads() if torch is not None else 1


def copy_fn(v: np.ndarray) -> Callable[[], None]:
    out = np.empty_like(v)

    def run():
        np.copyto(out, v)

    return run


def ms_launch_fn(g: ms.Tensor) -> Callable[[], None]:
    """MindSpore's cost of calling a compiled graph at all: one op on the small tensor g."""
    @ms.jit
    def tiny(g):
        return g * 2.0

    def run():
        tiny(g).asnumpy()

    return run


def reparam_table(args) -> List[str]:
    rng = np.random.default_rng(0)
    rows = ["| weight shape | dim | fused (ms) | composed (ms) | torch fused (ms) | copy of v (ms) "
            "| MS graph launch (ms) | fused / torch | composed / torch | fused / copy |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    _show(*rows)
    for shape, label in SHAPES:
        if args.quick and shape == (4096, 4096):
            rounds, calls = max(3, args.rounds // 3), 1
        else:
            rounds, calls = args.rounds, args.calls if np.prod(shape) < 10**6 else 1
        for dim in (0, len(shape) - 1):
            v = rng.standard_normal(shape).astype(np.float32)
            g = (rng.random(F.g_shape(shape, dim)) + 0.5).astype(np.float32)
            gw = rng.standard_normal(shape).astype(np.float32)
            vm, gm, gwm = ms.Tensor(v), ms.Tensor(g), ms.Tensor(gw)
            fns = {
                "fused": ms_reparam_fn("fused", vm, gm, gwm, dim),
                "composed": ms_reparam_fn("composed", vm, gm, gwm, dim),
                "copy": copy_fn(v),
                "launch": ms_launch_fn(gm),
            }
            prepare = {}
            if torch is not None:
                for threads in sorted({1, TORCH_THREADS}):
                    fns[f"torch{threads}"] = torch_reparam_fn(v, g, gw, dim)
                    prepare[f"torch{threads}"] = lambda threads=threads: torch.set_num_threads(threads)
            t = interleaved(fns, rounds, calls, prepare)
            if torch is not None:
                torch.set_num_threads(TORCH_THREADS)
            ms_ = {k: x * 1e3 for k, x in t.items()}
            tt = min((x for k, x in ms_.items() if k.startswith("torch")), default=None)
            rows.append(
                f"| {shape} {label} | {dim} | {ms_['fused']:.3f} | {ms_['composed']:.3f} | "
                f"{_fmt(tt)} | {ms_['copy']:.3f} | {ms_['launch']:.3f} | {_ratio(ms_['fused'], tt)} | "
                f"{_ratio(ms_['composed'], tt)} | {ms_['fused'] / ms_['copy']:.1f} |")
            _show(rows[-1])
    return rows


def _show(*rows: str) -> None:
    """Print table rows as they are measured: each table is printed once, row by row."""
    for row in rows:
        print(row, flush=True)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ratio(a, b) -> str:
    return "n/a" if b is None else f"{a / b:.2f}"


# ---------------------------------------------------------------------------------------
# What weight norm adds over a network's weights
# ---------------------------------------------------------------------------------------

WEIGHT_SETS = [
    (24, (256, 256, 1, 3), 0),
    (8, (512, 512, 1, 7), 0),
    (24, (64, 64, 3, 3), 0),
    (24, (256, 256, 1, 3), 3),
]


class _Weights(nn.Cell):
    """Many weights and the loss ``sum_i sum(w_i * gw_i)``; weight-normed when ``dim`` is set."""

    def __init__(self, vs, gs, dim):
        super().__init__()
        self.dim = dim
        self.normed = dim is not None
        if self.normed:
            self.v = ParameterTuple([Parameter(ms.Tensor(v), name=f"v{i}") for i, v in enumerate(vs)])
            self.g = ParameterTuple([Parameter(ms.Tensor(g), name=f"g{i}") for i, g in enumerate(gs)])
        else:
            self.w = ParameterTuple([Parameter(ms.Tensor(v), name=f"w{i}") for i, v in enumerate(vs)])

    def construct(self, gws):
        total = 0
        if self.normed:
            for v, g, gw in zip(self.v, self.g, gws):
                total = total + (F.weight_norm(v, g, self.dim) * gw).sum()
        else:
            for w, gw in zip(self.w, gws):
                total = total + (w * gw).sum()
        return total


def _ms_weights_step(kind: str, vs, gs, gws, dim, grad: bool = True):
    """A compiled step over the weights: ``kind`` is "plain", "fused" or "composed"."""
    net = _Weights(vs, gs, None if kind == "plain" else dim)
    if grad:
        value_and_grad = ms.value_and_grad(net, grad_position=None, weights=net.trainable_params())

        @ms.jit
        def step(gws):
            return value_and_grad(gws)
    else:
        @ms.jit
        def step(gws):
            return net(gws)

    gws_t = tuple(ms.Tensor(x) for x in gws)

    def run():
        out = step(gws_t)
        (out[1][-1] if grad else out).asnumpy()

    if kind != "plain":
        F.set_backend(kind, drop_compiled=False)
    try:
        run()  # compiles under this backend
    finally:
        F.set_backend("auto", drop_compiled=False)
    return run


def _torch_weights_step(normed: bool, vs, gs, gws, dim):
    if normed:
        params = [torch.tensor(v, requires_grad=True) for v in vs] + [torch.tensor(g, requires_grad=True) for g in gs]
    else:
        params = [torch.tensor(v, requires_grad=True) for v in vs]
    gwt = [torch.tensor(x) for x in gws]
    n = len(vs)

    def run():
        for p in params:
            p.grad = None
        if normed:
            ws = [torch._weight_norm(params[i], params[n + i], dim) for i in range(n)]
        else:
            ws = params
        loss = sum((w * gw).sum() for w, gw in zip(ws, gwt))
        loss.backward()
        loss.item()

    return run


def _weight_set(count, shape, dim, seed=0):
    rng = np.random.default_rng(seed)
    vs = [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]
    gs = [(rng.random(F.g_shape(shape, dim)) + 0.5).astype(np.float32) for _ in range(count)]
    gws = [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]
    return vs, gs, gws


def added_cost_table(args) -> List[str]:
    rows = ["| weights in one step | dim | plain step (ms) | fused adds (ms) | composed adds (ms) | "
            "torch adds (ms) | composed / fused | fused / torch | composed / torch |",
            "|---|---|---|---|---|---|---|---|---|"]
    _show(*rows)
    for count, shape, dim in WEIGHT_SETS:
        if args.quick and dim != 0:
            continue
        vs, gs, gws = _weight_set(count, shape, dim)
        fns = {kind: _ms_weights_step(kind, vs, gs, gws, dim) for kind in ("plain", "fused", "composed")}
        if torch is not None:
            fns["torch plain"] = _torch_weights_step(False, vs, gs, gws, dim)
            fns["torch wn"] = _torch_weights_step(True, vs, gs, gws, dim)
        t = {k: v * 1e3 for k, v in interleaved(fns, args.rounds, 1).items()}
        fused, composed = t["fused"] - t["plain"], t["composed"] - t["plain"]
        tadd = t["torch wn"] - t["torch plain"] if torch is not None else None
        rows.append(f"| {count} x {shape} | {dim} | {t['plain']:.1f} | {fused:.1f} | {composed:.1f} | "
                    f"{_fmt1(tadd)} | {_ratio_pos(composed, fused)} | {_ratio_pos(fused, tadd)} | "
                    f"{_ratio_pos(composed, tadd)} |")
        _show(rows[-1])
    return rows


def _fmt1(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _ratio_pos(a, b) -> str:
    # An added cost at or below zero is noise: no meaningful ratio.
    if b is None or b <= 0 or a <= 0:
        return "n/a"
    return f"{a / b:.2f}"


# ---------------------------------------------------------------------------------------
# Kernels per weight, counted in the compiled graph
# ---------------------------------------------------------------------------------------

_KERNEL_ACTOR = re.compile(r"^%\d+ = kernel_graph\d*:([A-Za-z0-9_]+)-op\d+\(", re.M)


def _graph_kernels(build: Callable[[], Callable[[], None]]) -> collections.Counter:
    """Kernel types of the graph that ``build()`` compiles, from MindSpore's dump of the final
    actor set (one kernel actor per launched kernel)."""
    with tempfile.TemporaryDirectory(prefix="ms_wn_ir_") as tmp:
        ms.set_context(save_graphs=True, save_graphs_path=tmp)
        try:
            build()
        finally:
            ms.set_context(save_graphs=False)
        found = collections.Counter()
        files = glob.glob(os.path.join(tmp, "**", "final_actor_set_*.ir"), recursive=True)
        if not files:
            raise RuntimeError(f"MindSpore wrote no final actor set under {tmp}: cannot count kernels")
        for path in files:
            with open(path, encoding="utf-8", errors="replace") as f:
                found.update(_KERNEL_ACTOR.findall(f.read()))
        return found


def kernel_count_table() -> List[str]:
    shape, dim = (256, 256, 1, 3), 0
    vs, gs, gws = _weight_set(1, shape, dim)
    counts = {}
    for kind in ("plain", "fused", "composed"):
        fwd = _graph_kernels(lambda: _ms_weights_step(kind, vs, gs, gws, dim, grad=False))
        both = _graph_kernels(lambda: _ms_weights_step(kind, vs, gs, gws, dim, grad=True))
        counts[kind] = (fwd, both)
    rows = ["| path | forward kernels | backward kernels | total | of which Reshape | kernel types (forward + backward) |",
            "|---|---|---|---|---|---|"]
    plain_fwd, plain_both = counts["plain"]
    for kind in ("fused", "composed"):
        fwd, both = counts[kind]
        n_fwd = sum(fwd.values()) - sum(plain_fwd.values())
        n_both = sum(both.values()) - sum(plain_both.values())
        extra = both - plain_both
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(extra.items(), key=lambda kv: (-kv[1], kv[0])))
        rows.append(f"| {kind} | {n_fwd} | {n_both - n_fwd} | {n_both} | {extra.get('Reshape', 0)} | {kinds} |")
    return rows


# ---------------------------------------------------------------------------------------
# Training steps
# ---------------------------------------------------------------------------------------

def ms_mlp(width: int, depth: int, n_out: int) -> nn.Cell:
    layers: List[nn.Cell] = []
    for _ in range(depth - 1):
        layers += [nn.Dense(width, width), nn.ReLU()]
    layers.append(nn.Dense(width, n_out))
    return nn.SequentialCell(layers)


def ms_conv_stack(channels: int, depth: int, kernel: int) -> nn.Cell:
    layers: List[nn.Cell] = []
    for _ in range(depth):
        layers += [nn.Conv1d(channels, channels, kernel, pad_mode="same"), nn.LeakyReLU(0.1)]
    return nn.SequentialCell(layers)


def ms_step_fn(net: nn.Cell, x: ms.Tensor, y: ms.Tensor) -> Callable[[], None]:
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Adam(net.trainable_params(), 1e-4))
    step.set_train()

    def run():
        step(x, y).asnumpy()

    return run


def torch_step_fn(net, x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    xt, yt = torch.tensor(x), torch.tensor(y)
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    loss_fn = torch.nn.MSELoss()

    def run():
        opt.zero_grad()
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
        loss.item()

    return run


def torch_mlp(width: int, depth: int, n_out: int, weight_norm: bool):
    torch.manual_seed(0)
    layers = []
    for i in range(depth):
        lin = torch.nn.Linear(width, width if i < depth - 1 else n_out)
        if weight_norm:
            lin = _torch_weight_norm(lin)
        layers.append(lin)
        if i < depth - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_conv_stack(channels: int, depth: int, kernel: int, weight_norm: bool):
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        conv = torch.nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        if weight_norm:
            conv = _torch_weight_norm(conv)
        layers += [conv, torch.nn.LeakyReLU(0.1)]
    return torch.nn.Sequential(*layers)


def _torch_weight_norm(module):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecated form is the one that calls torch._weight_norm
        return torch.nn.utils.weight_norm(module)


def training_tables(args) -> List[str]:
    rng = np.random.default_rng(1)
    rows = ["| network | plain step (ms) | WN fused (ms) | WN composed (ms) | overhead fused | "
            "overhead composed | noise: 2nd plain / plain | torch plain (ms) | torch WN (ms) | "
            "torch overhead |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    _show(*rows)
    configs = [
        ("MLP 8x512, batch 100", lambda: ms_mlp(512, 8, 512),
         lambda w: torch_mlp(512, 8, 512, w), (100, 512), (100, 512), args.rounds, args.calls),
        ("Conv1d stack 4x(128->128, k7), batch 1, length 64", lambda: ms_conv_stack(128, 4, 7),
         lambda w: torch_conv_stack(128, 4, 7, w), (1, 128, 64), (1, 128, 64),
         args.rounds, 1 if args.quick else 2),
    ]
    extra: List[str] = []
    for label, make_ms, make_torch, xshape, yshape, rounds, calls in configs:
        x = rng.standard_normal(xshape).astype(np.float32)
        y = rng.standard_normal(yshape).astype(np.float32)
        xm, ym = ms.Tensor(x), ms.Tensor(y)
        fns: Dict[str, Callable[[], None]] = {}
        compile_s: Dict[str, float] = {}
        # "plain2" is a second, identical plain network: its ratio to "plain" shows how much
        # of an overhead figure the machine's noise alone can produce.
        for kind in ("plain", "plain2", "fused", "composed"):
            ms.set_seed(0)
            net = make_ms()
            if kind in ("fused", "composed"):
                F.set_backend(kind, drop_compiled=False)
                wn.apply_weight_norm(net)
            fn = ms_step_fn(net, xm, ym)
            start = time.perf_counter()
            fn()  # the first call compiles the graph
            compile_s[kind] = time.perf_counter() - start
            fns[kind] = fn
        F.set_backend("auto", drop_compiled=False)
        if torch is not None:
            fns["torch plain"] = torch_step_fn(make_torch(False), x, y)
            fns["torch wn"] = torch_step_fn(make_torch(True), x, y)
        t = {k: v * 1e3 for k, v in interleaved(fns, rounds, calls).items()}
        rows.append(
            f"| {label} | {t['plain']:.2f} | {t['fused']:.2f} | {t['composed']:.2f} | "
            f"{t['fused'] / t['plain']:.3f}x | {t['composed'] / t['plain']:.3f}x | "
            f"{t['plain2'] / t['plain']:.3f}x | {_fmt(t.get('torch plain'))} | {_fmt(t.get('torch wn'))} | "
            f"{_ratio(t.get('torch wn', 0), t.get('torch plain'))}{'x' if torch is not None else ''} |")
        _show(rows[-1])
        # The faster of the two plain compiles: the first compile of a process may pay one-time
        # costs that would flatter the weight-norm ratios.
        plain_compile = min(compile_s["plain"], compile_s["plain2"])
        extra.append(f"| {label} | {plain_compile:.2f} | {compile_s['fused']:.2f} | "
                     f"{compile_s['composed']:.2f} | {compile_s['fused'] / plain_compile:.2f}x | "
                     f"{compile_s['composed'] / plain_compile:.2f}x |")
    compile_rows = ["| network | compile + first step, plain (s) | with WN fused (s) | with WN composed (s) "
                    "| fused / plain | composed / plain |", "|---|---|---|---|---|---|"] + extra
    return rows, compile_rows


class _Scale(nn.Cell):
    """A parametrization with a Parameter of its own: ``X * s``."""

    def __init__(self):
        super().__init__()
        self.s = Parameter(ms.Tensor(np.float32(1.0)), name="s")

    def construct(self, X):
        return X * self.s


class _Symmetric(nn.Cell):
    def construct(self, X):
        return ms.ops.triu(X) + ms.ops.triu(X, 1).T


class _RowNorm(nn.Cell):
    def construct(self, X):
        return X / ms.ops.sqrt((X * X).sum(1, keepdims=True) + 1e-12)


_CHAIN_PARTS = {"scale": _Scale, "symmetric": _Symmetric, "rownorm": _RowNorm}


def chain_tables(args) -> List[str]:
    """Training steps with Cell parametrizations on every Dense weight of the 8x512 MLP."""
    rng = np.random.default_rng(3)
    x = ms.Tensor(rng.standard_normal((100, 512)).astype(np.float32))
    y = ms.Tensor(rng.standard_normal((100, 512)).astype(np.float32))
    setups = {"plain": (), "scale": ("scale",), "symmetric": ("symmetric",), "rownorm": ("rownorm",),
              "symmetric+scale": ("symmetric", "scale"),
              "symmetric+rownorm+scale": ("symmetric", "rownorm", "scale")}
    fns: Dict[str, Callable[[], None]] = {}
    compile_s: Dict[str, float] = {}
    for name, parts in setups.items():
        ms.set_seed(0)
        net = ms_mlp(512, 8, 512)
        for layer in net:
            if isinstance(layer, nn.Dense):
                for part in parts:
                    wn.parametrize.register_parametrization(layer, "weight", _CHAIN_PARTS[part]())
        fn = ms_step_fn(net, x, y)
        start = time.perf_counter()
        fn()
        compile_s[name] = time.perf_counter() - start
        fns[name] = fn
    t = {k: v * 1e3 for k, v in interleaved(fns, args.rounds, args.calls).items()}
    added = {k: t[k] - t["plain"] for k in t}
    rows = ["| parametrization on each of 8 weights | step (ms) | adds (ms) | sum of the parts adds (ms) | "
            "compile + first step (s) |", "|---|---|---|---|---|"]
    for name, parts in setups.items():
        parts_sum = sum(added[p] for p in parts) if len(parts) > 1 else None
        rows.append(f"| {name} | {t[name]:.2f} | {added[name]:+.2f} | "
                    f"{'' if parts_sum is None else f'{parts_sum:+.2f}'} | {compile_s[name]:.2f} |")
    return rows


def inference_table(args) -> List[str]:
    rng = np.random.default_rng(2)
    x = ms.Tensor(rng.standard_normal((100, 512)).astype(np.float32))
    fns = {}
    for kind in ("plain", "removed"):
        ms.set_seed(0)
        net = ms_mlp(512, 8, 512)
        net.set_train(False)
        if kind == "removed":
            wn.apply_weight_norm(net)
            net(x).asnumpy()  # runs once with weight norm, so removal has a cached graph to drop
            wn.remove_all_weight_norm(net)

        def run(net=net):
            net(x).asnumpy()
        fns[kind] = run
    t = {k: v * 1e3 for k, v in interleaved(fns, args.rounds, args.calls * 2).items()}
    return ["| network | plain inference (ms) | after remove_all_weight_norm (ms) | ratio |",
            "|---|---|---|---|",
            f"| MLP 8x512, batch 100 | {t['plain']:.3f} | {t['removed']:.3f} | "
            f"{t['removed'] / t['plain']:.3f} |"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [f"{datetime.date.today().isoformat()}", f"{cpu}, {os.cpu_count()} logical CPUs",
             f"Python {platform.python_version()}", f"MindSpore {ms.__version__}",
             f"numpy {np.__version__}"]
    if torch is not None:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    parts.append(f"fused kernels: {'available' if F.fused_available() else 'UNAVAILABLE'}")
    return "; ".join(parts)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, noisier (measured: 230-251 s on 2 shared cores; "
                             "compiling the graphs takes much of it)")
    parser.add_argument("--rounds", type=int, default=None, help="timed samples per contender")
    parser.add_argument("--calls", type=int, default=None, help="calls per sample (small shapes)")
    parser.add_argument("--skip", default="",
                        help="comma list of sections to skip: added,kernels,reparam,train,infer,chain")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (7 if args.quick else 31)
    args.calls = args.calls or (5 if args.quick else 10)
    skip = set(filter(None, args.skip.split(",")))

    ms.set_context(mode=ms.GRAPH_MODE)
    print(f"Machine: {machine()}\n", flush=True)
    if "added" not in skip:
        print("### What weight norm adds over a network's weights: one compiled step, value + gradients "
              "(GRAPH_MODE; torch eager), weight-normed minus plain, median ms\n", flush=True)
        added_cost_table(args)
        print()
    if "kernels" not in skip:
        print("### Kernels per weight-normed weight, counted in the compiled graph "
              "((256, 256, 1, 3), dim 0; weight-normed minus plain)\n")
        print("\n".join(kernel_count_table()) + "\n")
    if "reparam" not in skip:
        print("### Reparameterization, forward + backward (GRAPH_MODE), median ms per call\n", flush=True)
        reparam_table(args)
        print()
    if "train" not in skip:
        print("### Training step with weight norm on every layer (GRAPH_MODE; torch eager)\n", flush=True)
        _, compiles = training_tables(args)
        print("\n### Graph compile time (first training step)\n")
        print("\n".join(compiles) + "\n")
    if "infer" not in skip:
        print("### Inference after remove_all_weight_norm (GRAPH_MODE)\n")
        print("\n".join(inference_table(args)) + "\n")
    if "chain" not in skip:
        print("### Chained Cell parametrizations, training step on the MLP 8x512, batch 100 "
              "(GRAPH_MODE), median ms\n", flush=True)
        print("\n".join(chain_tables(args)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
