"""Data-parallel training of a weight-normed MLP, launched with ``msrun``.

Every process builds the same model (same seeds), takes its own contiguous shard of each
global batch, and the gradients are averaged across processes (``DATA_PARALLEL`` with
``gradients_mean=True``), so all ranks take the same optimizer step: the one a single
process would take on the whole global batch with a mean loss.

Two processes on one machine (CPU here; the same script runs unchanged on Ascend/GPU and
on several machines, with msrun's ``--worker_num``/``--local_worker_num``/``--node_rank``),
from a clone of the repository (``bash run.sh exec`` runs msrun inside the project's venv;
in an activated venv, leave it out)::

    bash run.sh exec msrun --worker_num=2 --local_worker_num=2 --master_addr=127.0.0.1 --master_port=8118 \\
          --log_dir=msrun_log --join=True \\
          examples/train_data_parallel.py --steps 20 --data-init --out dp_out

Rank 0 prints the global-batch loss as it trains and a summary. MindSpore's log level is set
to errors only (``GLOG_v=3``) unless ``GLOG_v`` is set already: at its default level every
worker logs dozens of connection retries while the processes find each other.

Without msrun (``bash run.sh exec python examples/train_data_parallel.py ...``) it trains in
one process on the whole global batch: the single-process reference of the distributed run.

Outputs in ``--out``: ``rank<r>_init.npz`` (parameters after initialization, before the
first step), ``rank<r>_final.npz`` (after the last step), ``rank<r>_losses.npy`` (the
loss of the local shard at each step), and ``final.ckpt`` written by rank 0 only, which loads into
a single-process weight-normed net built by :func:`build_net`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

if __name__ == "__main__":
    # MindSpore's C++ side logs every retry while the processes find each other ("Failed to
    # connect to the meta server", "Topology build timed out") at WARNING level, 60+ lines
    # for a run that succeeds. GLOG_v=3 keeps errors only; it is read when mindspore is
    # imported, so it is set before the import. An explicit GLOG_v (e.g. GLOG_v=2 to see the
    # warnings again) wins.
    os.environ.setdefault("GLOG_v", "3")

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn

from ms_weightnorm import apply_weight_norm
from ms_weightnorm.distributed import all_reduce_sum

MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}


@dataclass
class Config:
    """Everything that determines a run; ranks and the single-process reference share it."""

    steps: int = 10
    batch_size: int = 16  # global batch: split into equal contiguous shards, one per rank
    in_dim: int = 8
    hidden: int = 32
    out_dim: int = 4
    seed: int = 0
    lr: float = 0.05
    momentum: float = 0.9
    data_init: bool = False
    init_scale: float = 1.0
    mode: str = "graph"

    def to_argv(self) -> List[str]:
        """Command-line arguments that :func:`parse_args` turns back into this config."""
        argv = ["--steps", str(self.steps), "--batch-size", str(self.batch_size),
                "--in-dim", str(self.in_dim), "--hidden", str(self.hidden),
                "--out-dim", str(self.out_dim), "--seed", str(self.seed), "--lr", repr(self.lr),
                "--momentum", repr(self.momentum), "--init-scale", repr(self.init_scale),
                "--mode", self.mode]
        return argv + (["--data-init"] if self.data_init else [])


def build_net(cfg: Config) -> nn.Cell:
    """The weight-normed MLP ``Dense-ReLU-Dense-ReLU-Dense``, initialized from ``cfg.seed``.

    The initial weights come from a NumPy generator rather than MindSpore's initializers,
    so every process (any rank, any device, the single-process reference) starts from
    bit-identical parameters without relying on a framework RNG's behaviour across
    parallel modes. Weight norm is applied after the weights are set: ``g = ||w||``.
    """
    rng = np.random.default_rng(cfg.seed)
    dims = [cfg.in_dim, cfg.hidden, cfg.hidden, cfg.out_dim]
    layers: List[nn.Cell] = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        w = rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_out, fan_in)).astype(np.float32)
        b = rng.normal(0.0, 0.1, (fan_out,)).astype(np.float32)
        layers.append(nn.Dense(fan_in, fan_out, weight_init=Tensor(w), bias_init=Tensor(b)))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    net = nn.SequentialCell(layers)
    apply_weight_norm(net)
    return net


def make_data(cfg: Config) -> Tuple[np.ndarray, np.ndarray]:
    """Synthetic regression data for ``cfg.steps`` global batches: ``(steps, batch, in)``, ``(steps, batch, out)``.

    Drawn from ``cfg.seed + 1`` so the data does not depend on the model's size.
    """
    rng = np.random.default_rng(cfg.seed + 1)
    x = rng.normal(size=(cfg.steps, cfg.batch_size, cfg.in_dim)).astype(np.float32)
    teacher = rng.normal(size=(cfg.in_dim, cfg.out_dim)).astype(np.float32)
    y = (np.tanh(x @ teacher) + 0.1 * rng.normal(size=(cfg.steps, cfg.batch_size, cfg.out_dim)))
    return x, y.astype(np.float32)


def shard(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s contiguous slice of a global batch (axis 0) split into ``world`` equal shards.

    Contiguous shards in rank order concatenate back to the global batch, which is what the
    single-process reference trains on. Equal shards are required: with ``gradients_mean``
    the average of per-shard mean losses equals the global mean loss only then.

    >>> shard(np.arange(6), 1, 2).tolist()
    [3, 4, 5]
    """
    n = batch.shape[0]
    if n % world:
        raise ValueError(f"global batch of {n} does not split into {world} equal shards; "
                         f"use a --batch-size divisible by the number of processes")
    size = n // world
    return batch[rank * size:(rank + 1) * size]


def parameters(net: nn.Cell) -> Dict[str, np.ndarray]:
    """The network's Parameters as NumPy arrays, by their full names."""
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def global_loss(local_loss: Tensor, world: int) -> float:
    """The mean loss over the global batch, from this rank's mean loss on its equal shard.

    Every rank must call it at the same step (it is an all-reduce when ``world > 1``).

    >>> global_loss(Tensor(np.float32(0.5)), 1)
    0.5
    """
    if world == 1:
        return float(local_loss.asnumpy())
    return float(all_reduce_sum(local_loss.reshape((1,))).asnumpy()[0]) / world


def train(cfg: Config, rank: int = 0, world: int = 1, out_dir: Optional[str] = None,
          log_every: int = 0) -> Tuple[nn.Cell, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Train on rank ``rank``'s shards; return the net, its initial and final Parameters.

    With ``world == 1`` this is the single-process run on the whole global batch. The caller
    sets the execution mode and, for ``world > 1``, initializes communication and the
    data-parallel context first. If ``out_dir`` is given, rank ``rank`` writes
    ``rank<rank>_init.npz`` and ``rank<rank>_final.npz`` there, and rank 0 also ``final.ckpt``.
    With ``log_every > 0``, rank 0 prints the global-batch loss every ``log_every`` steps and
    at the last step, then a summary (all ranks take part in the loss's all-reduce).
    """
    x, y = make_data(cfg)
    net = build_net(cfg)
    if cfg.data_init:
        # Every rank passes only its own shard; data_dependent_init all-reduces the
        # per-feature statistics, so the result is that of the global batch.
        from ms_weightnorm.init import data_dependent_init
        data_dependent_init(net, Tensor(shard(x[0], rank, world)), init_scale=cfg.init_scale)
    initial = parameters(net)

    loss_fn = nn.MSELoss()  # mean over the shard: gradients_mean then gives the global mean
    # Momentum SGD: the per-shard and whole-batch gradient sums differ only by float32
    # rounding, and SGD carries that through unmagnified (measured: ~1e-6 relative after 10
    # steps). Adam divides by the root of small second moments, which can magnify it.
    opt = nn.Momentum(net.trainable_params(), learning_rate=cfg.lr, momentum=cfg.momentum)
    # TrainOneStepCell all-reduces the gradients when the parallel mode is DATA_PARALLEL
    # (and does nothing extra in a single process).
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), opt)
    step.set_train()
    losses, global_losses = [], []
    say = print if (log_every > 0 and rank == 0) else (lambda *a, **k: None)
    say(f"rank 0/{world}: training {cfg.steps} steps, global batch {cfg.batch_size} "
        f"({cfg.batch_size // world} per process), {cfg.mode} mode"
        f"{', after data-dependent init' if cfg.data_init else ''}", flush=True)
    start = time.perf_counter()
    for i in range(cfg.steps):
        xb = Tensor(shard(x[i], rank, world))
        yb = Tensor(shard(y[i], rank, world))
        loss = step(xb, yb)
        losses.append(float(loss.asnumpy()))
        if log_every > 0:
            global_losses.append(global_loss(loss, world))
            if (i + 1) % log_every == 0 or i + 1 == cfg.steps:
                say(f"  step {i + 1:>4}/{cfg.steps}  loss {global_losses[-1]:.4f}", flush=True)
    seconds = time.perf_counter() - start
    final = parameters(net)

    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        np.savez(os.path.join(out_dir, f"rank{rank}_init.npz"), **initial)
        np.savez(os.path.join(out_dir, f"rank{rank}_final.npz"), **final)
        np.save(os.path.join(out_dir, f"rank{rank}_losses.npy"), np.array(losses, np.float32))
        if rank == 0:
            # Only the network: the optimizer state is not needed to use or evaluate it,
            # and every rank holds the same values, so one writer is enough.
            ms.save_checkpoint(net, os.path.join(out_dir, "final.ckpt"))
    if global_losses:
        where = (f"; wrote {os.path.join(out_dir, 'final.ckpt')} and rank<r>_*.npz"
                 if out_dir is not None else "")
        say(f"rank 0/{world}: done, {cfg.steps} steps in {seconds:.1f} s (first step compiles); "
            f"global-batch loss {global_losses[0]:.4f} -> {global_losses[-1]:.4f}{where}", flush=True)
    return net, initial, final


def launched_by_msrun() -> bool:
    """Whether this process was started by msrun (dynamic cluster) or a rank table launcher."""
    return bool(os.environ.get("MS_ROLE") or os.environ.get("RANK_TABLE_FILE"))


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only where there is a value to show (not for flags or "unset")."""

    def _get_help_string(self, action):
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[Config, argparse.Namespace]:
    """Command line to :class:`Config` plus launcher options."""
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=_HelpWithDefaults)
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="global batch size, divisible by the number of processes")
    p.add_argument("--in-dim", type=int, default=d.in_dim, help="input features")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden width of the MLP")
    p.add_argument("--out-dim", type=int, default=d.out_dim, help="regression targets")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the model init and the data")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (momentum SGD)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="momentum of the SGD optimizer")
    p.add_argument("--data-init", action="store_true",
                   help="data-dependent init of g and bias on the first global batch")
    p.add_argument("--init-scale", type=float, default=d.init_scale,
                   help="with --data-init: the std of each pre-activation after init")
    p.add_argument("--mode", choices=sorted(MODES), default=d.mode, help="execution mode")
    p.add_argument("--device-target", default=None,
                   help="CPU, GPU or Ascend; default: MindSpore's choice for this build")
    p.add_argument("--out", default=None, help="folder for per-rank .npz files and rank 0's final.ckpt (default: write nothing)")
    p.add_argument("--log-every", type=int, default=0,
                   help="rank 0 prints the global-batch loss every N steps (0: about 10 lines per run)")
    p.add_argument("--distributed", choices=["auto", "on", "off"], default="auto",
                   help="initialize communication: auto = when launched by msrun")
    a = p.parse_args(argv)
    cfg = Config(steps=a.steps, batch_size=a.batch_size, in_dim=a.in_dim, hidden=a.hidden,
                 out_dim=a.out_dim, seed=a.seed, lr=a.lr,
                 momentum=a.momentum, data_init=a.data_init, init_scale=a.init_scale, mode=a.mode)
    return cfg, a


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for msrun (each worker, and msrun's scheduler process) or a plain run."""
    cfg, args = parse_args(argv)
    context = {"mode": MODES[cfg.mode]}
    if args.device_target:
        context["device_target"] = args.device_target
    ms.set_context(**context)

    distributed = args.distributed == "on" or (args.distributed == "auto" and launched_by_msrun())
    rank, world = 0, 1
    if distributed:
        from mindspore.communication import get_group_size, get_rank, init
        # msrun also runs this script as its scheduler: there init() serves the cluster
        # until the workers are done and exits (measured, MindSpore 2.10). The check below
        # keeps a scheduler that does return from training as a phantom rank 0.
        init()
        if os.environ.get("MS_ROLE") == "MS_SCHED":
            return 0
        rank, world = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                     gradients_mean=True, device_num=world)
    log_every = args.log_every if args.log_every > 0 else max(1, cfg.steps // 10)
    train(cfg, rank, world, args.out, log_every=log_every)
    if rank != 0:
        print(f"rank {rank}/{world}: done, {cfg.steps} steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
