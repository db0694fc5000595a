"""Porting guide, part 2: HiFi-GAN's discriminators, and GAN training in GRAPH_MODE.

HiFi-GAN (Kong et al., 2020) trains its generator (see ``hifigan_port.py``) against two
discriminators:

- a multi-period discriminator (MPD): for each period p in (2, 3, 5, 7, 11) the waveform is
  folded into a (T/p, p) image and judged by 2-D convolutions with (k, 1) kernels, all with
  weight norm;
- a multi-scale discriminator (MSD): three 1-D convolution stacks on the waveform at 1x, 2x
  and 4x average-pooled scales; the first scale uses **spectral norm**, the others weight norm.

Both are written twice here, in PyTorch (the reference; HiFi-GAN uses the older
``torch.nn.utils.spectral_norm``, whose checkpoints hold ``weight_orig``/``weight_u``/``weight_v``)
and in MindSpore with the same attribute names, so ``load_torch_state_dict`` maps the keys. This
script:

1. builds the PyTorch generator and discriminators with random weights and saves a checkpoint;
2. ports all three to MindSpore (no PyTorch needed for that step) and compares every
   discriminator output and feature map in eval mode;
3. runs a few HiFi-GAN training steps (discriminator step, then generator step, each with
   its own Adam optimizer) in GRAPH_MODE with ``nn.TrainOneStepCell``, and the same steps in
   PyTorch, and compares the losses step by step and the spectral-norm state ``u``, ``v``
   (which advances twice per discriminator call: once for the real, once for the generated
   waveform).

HiFi-GAN's mel-spectrogram L1 loss is replaced by a waveform L1 loss (same weight, 45), to keep
the example free of an STFT port; the adversarial and feature-matching losses are HiFi-GAN's.

Run it (small by default; the CPU backend runs convolutions at about 1 GFLOP/s)::

    python examples/hifigan_discriminators.py --out-dir /tmp/hifigan_gan --steps 3
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

if __name__ == "__main__":
    # MindSpore logs warnings at its default level that a user of this script cannot act on
    # ("'FusedSparseAdam' is deprecated", printed whenever MindSpore's own nn.Adam is built).
    # GLOG_v=3 keeps errors only; MindSpore reads it at import, so it is set before the
    # import, and only when unset: an explicit GLOG_v (e.g. GLOG_v=2) wins.
    os.environ.setdefault("GLOG_v", "3")

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ms_weightnorm import spectral_norm, weight_norm
from ms_weightnorm.torch_io import load_torch_state_dict, read_torch_checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hifigan_port as gen  # noqa: E402  (the generator half of the guide)

LRELU_SLOPE = 0.1


@dataclass(frozen=True)
class DConfig:
    """Discriminator sizes; HiFi-GAN V1 uses mpd_channels (32, 128, 512, 1024, 1024) and
    msd_channels (128, 128, 256, 512, 1024, 1024, 1024)."""

    periods: Tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: Tuple[int, ...] = (4, 8, 16, 32, 32)
    msd_channels: Tuple[int, ...] = (16, 16, 32, 32, 64, 64, 64)
    msd_kernels: Tuple[int, ...] = (15, 41, 41, 41, 41, 41, 5)
    msd_strides: Tuple[int, ...] = (1, 2, 2, 4, 4, 1, 1)
    msd_groups: Tuple[int, ...] = (1, 4, 16, 16, 16, 16, 1)


def _pad(k: int) -> int:
    return (k - 1) // 2


# --- MindSpore --------------------------------------------------------------------------------

class MSDiscriminatorP(nn.Cell):
    """One period of the MPD: the waveform folded to (B, 1, T/p, p), then (k, 1) convolutions."""

    def __init__(self, period: int, channels: Sequence[int], kernel_size: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        chans = (1,) + tuple(channels)
        convs = []
        for i in range(len(channels)):
            s = stride if i < len(channels) - 1 else 1
            convs.append(weight_norm(nn.Conv2d(chans[i], chans[i + 1], (kernel_size, 1), (s, 1), pad_mode="pad",
                                               padding=(_pad(kernel_size),) * 2 + (0, 0), has_bias=True)))
        self.convs = nn.CellList(convs)
        self.conv_post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, pad_mode="pad", padding=(1, 1, 0, 0),
                                               has_bias=True))
        self.act = nn.LeakyReLU(LRELU_SLOPE)

    def construct(self, x):
        b, c, t = x.shape
        if t % self.period:
            x = ops.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.reshape(b, c, -1, self.period)
        fmap = ()
        for conv in self.convs:
            x = self.act(conv(x))
            fmap += (x,)
        x = self.conv_post(x)
        fmap += (x,)
        return x.reshape(b, -1), fmap


class MSMultiPeriodDiscriminator(nn.Cell):
    def __init__(self, cfg: DConfig = DConfig()):
        super().__init__()
        self.discriminators = nn.CellList([MSDiscriminatorP(p, cfg.mpd_channels) for p in cfg.periods])

    def construct(self, y, y_hat):
        real, fake, fmap_real, fmap_fake = (), (), (), ()
        for d in self.discriminators:
            r, fr = d(y)
            g, fg = d(y_hat)
            real += (r,)
            fake += (g,)
            fmap_real += (fr,)
            fmap_fake += (fg,)
        return real, fake, fmap_real, fmap_fake


class MSDiscriminatorS(nn.Cell):
    """One scale of the MSD: grouped 1-D convolutions; spectral norm or weight norm on each."""

    def __init__(self, cfg: DConfig, use_spectral_norm: bool = False):
        super().__init__()
        # HiFi-GAN uses torch.nn.utils.spectral_norm (v updated first in each power step):
        # style="old" continues such a model step for step.
        def norm(cell):
            return spectral_norm(cell, style="old") if use_spectral_norm else weight_norm(cell)
        chans = (1,) + tuple(cfg.msd_channels)
        self.convs = nn.CellList([
            norm(nn.Conv1d(chans[i], chans[i + 1], k, s, pad_mode="pad", padding=_pad(k), group=g, has_bias=True))
            for i, (k, s, g) in enumerate(zip(cfg.msd_kernels, cfg.msd_strides, cfg.msd_groups))])
        self.conv_post = norm(nn.Conv1d(chans[-1], 1, 3, 1, pad_mode="pad", padding=1, has_bias=True))
        self.act = nn.LeakyReLU(LRELU_SLOPE)

    def construct(self, x):
        fmap = ()
        for conv in self.convs:
            x = self.act(conv(x))
            fmap += (x,)
        x = self.conv_post(x)
        fmap += (x,)
        return x.reshape(x.shape[0], -1), fmap


class MSMultiScaleDiscriminator(nn.Cell):
    def __init__(self, cfg: DConfig = DConfig()):
        super().__init__()
        self.discriminators = nn.CellList([MSDiscriminatorS(cfg, use_spectral_norm=True),
                                           MSDiscriminatorS(cfg), MSDiscriminatorS(cfg)])
        self.meanpools = nn.CellList([nn.AvgPool1d(4, 2, pad_mode="pad", padding=2),
                                      nn.AvgPool1d(4, 2, pad_mode="pad", padding=2)])

    def construct(self, y, y_hat):
        real, fake, fmap_real, fmap_fake = (), (), (), ()
        for i in range(3):
            if i > 0:
                y = self.meanpools[i - 1](y)
                y_hat = self.meanpools[i - 1](y_hat)
            r, fr = self.discriminators[i](y)
            g, fg = self.discriminators[i](y_hat)
            real += (r,)
            fake += (g,)
            fmap_real += (fr,)
            fmap_fake += (fg,)
        return real, fake, fmap_real, fmap_fake


# HiFi-GAN's losses (least-squares GAN plus feature matching).

def discriminator_loss(real, fake):
    loss = 0.0
    for r, g in zip(real, fake):
        loss = loss + ((1 - r) ** 2).mean() + (g ** 2).mean()
    return loss


def generator_loss(fake):
    loss = 0.0
    for g in fake:
        loss = loss + ((1 - g) ** 2).mean()
    return loss


def feature_loss(fmap_real, fmap_fake):
    loss = 0.0
    for fr, fg in zip(fmap_real, fmap_fake):
        for r, g in zip(fr, fg):
            loss = loss + ops.abs(r - g).mean()
    return 2 * loss


class DiscriminatorLoss(nn.Cell):
    """The discriminator step's loss; the generated waveform is a constant here."""

    def __init__(self, generator, mpd, msd):
        super().__init__()
        self.generator, self.mpd, self.msd = generator, mpd, msd

    def construct(self, mel, y):
        y_hat = ops.stop_gradient(self.generator(mel))
        # Only the outputs the loss uses are taken out of each result: in GRAPH_MODE, unpacking
        # the unused feature maps too would make extractions that the compiler drops with a
        # warning ("Some side effect nodes were eliminated by mistake"), harmless but alarming.
        out_f, out_s = self.mpd(y, y_hat), self.msd(y, y_hat)
        real_f, fake_f, real_s, fake_s = out_f[0], out_f[1], out_s[0], out_s[1]
        return discriminator_loss(real_s, fake_s) + discriminator_loss(real_f, fake_f)


class GeneratorLoss(nn.Cell):
    def __init__(self, generator, mpd, msd):
        super().__init__()
        self.generator, self.mpd, self.msd = generator, mpd, msd

    def construct(self, mel, y):
        y_hat = self.generator(mel)
        out_f, out_s = self.mpd(y, y_hat), self.msd(y, y_hat)  # the real scores go unused
        fake_f, fmap_rf, fmap_gf = out_f[1], out_f[2], out_f[3]
        fake_s, fmap_rs, fmap_gs = out_s[1], out_s[2], out_s[3]
        return (generator_loss(fake_s) + generator_loss(fake_f) + feature_loss(fmap_rs, fmap_gs)
                + feature_loss(fmap_rf, fmap_gf) + 45 * ops.abs(y - y_hat).mean())


# --- PyTorch (the reference) -------------------------------------------------------------------

def build_torch_discriminators(cfg: DConfig = DConfig()):
    """HiFi-GAN's MPD and MSD in PyTorch: weight norm everywhere, spectral norm on MSD scale 1."""
    import warnings
    from torch import nn as tnn
    import torch.nn.functional as F

    def wn(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated
            return tnn.utils.weight_norm(m)

    class DiscriminatorP(tnn.Module):
        def __init__(self, period, kernel_size=5, stride=3):
            super().__init__()
            self.period = period
            chans = (1,) + tuple(cfg.mpd_channels)
            n = len(cfg.mpd_channels)
            self.convs = tnn.ModuleList([
                wn(tnn.Conv2d(chans[i], chans[i + 1], (kernel_size, 1), (stride if i < n - 1 else 1, 1),
                              padding=(_pad(kernel_size), 0))) for i in range(n)])
            self.conv_post = wn(tnn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

        def forward(self, x):
            fmap = []
            b, c, t = x.shape
            if t % self.period:
                x = F.pad(x, (0, self.period - t % self.period), "reflect")
            x = x.view(b, c, -1, self.period)
            for conv in self.convs:
                x = F.leaky_relu(conv(x), LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            return x.flatten(1), fmap

    class DiscriminatorS(tnn.Module):
        def __init__(self, use_spectral_norm=False):
            super().__init__()
            norm = tnn.utils.spectral_norm if use_spectral_norm else wn
            chans = (1,) + tuple(cfg.msd_channels)
            self.convs = tnn.ModuleList([
                norm(tnn.Conv1d(chans[i], chans[i + 1], k, s, groups=g, padding=_pad(k)))
                for i, (k, s, g) in enumerate(zip(cfg.msd_kernels, cfg.msd_strides, cfg.msd_groups))])
            self.conv_post = norm(tnn.Conv1d(chans[-1], 1, 3, 1, padding=1))

        def forward(self, x):
            fmap = []
            for conv in self.convs:
                x = F.leaky_relu(conv(x), LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            return x.flatten(1), fmap

    class MultiPeriodDiscriminator(tnn.Module):
        def __init__(self):
            super().__init__()
            self.discriminators = tnn.ModuleList([DiscriminatorP(p) for p in cfg.periods])

        def forward(self, y, y_hat):
            out = ([], [], [], [])
            for d in self.discriminators:
                r, fr = d(y)
                g, fg = d(y_hat)
                for lst, item in zip(out, (r, g, fr, fg)):
                    lst.append(item)
            return out

    class MultiScaleDiscriminator(tnn.Module):
        def __init__(self):
            super().__init__()
            self.discriminators = tnn.ModuleList([DiscriminatorS(True), DiscriminatorS(), DiscriminatorS()])
            self.meanpools = tnn.ModuleList([tnn.AvgPool1d(4, 2, padding=2), tnn.AvgPool1d(4, 2, padding=2)])

        def forward(self, y, y_hat):
            out = ([], [], [], [])
            for i, d in enumerate(self.discriminators):
                if i > 0:
                    y, y_hat = self.meanpools[i - 1](y), self.meanpools[i - 1](y_hat)
                r, fr = d(y)
                g, fg = d(y_hat)
                for lst, item in zip(out, (r, g, fr, fg)):
                    lst.append(item)
            return out

    return MultiPeriodDiscriminator(), MultiScaleDiscriminator()


def torch_losses():
    """HiFi-GAN's loss functions in PyTorch (the reference for the ones above)."""
    import torch

    def d_loss(real, fake):
        return sum(torch.mean((1 - r) ** 2) + torch.mean(g ** 2) for r, g in zip(real, fake))

    def g_loss(fake):
        return sum(torch.mean((1 - g) ** 2) for g in fake)

    def f_loss(fmap_real, fmap_fake):
        return 2 * sum(torch.mean(torch.abs(r - g)) for fr, fg in zip(fmap_real, fmap_fake) for r, g in zip(fr, fg))

    return d_loss, g_loss, f_loss


# --- the port and the training steps -------------------------------------------------------------

def port(checkpoint: str, cfg: gen.Config, dcfg: DConfig):
    """MindSpore generator, MPD and MSD with the weights of a HiFi-GAN-style checkpoint
    ``{"generator": ..., "mpd": ..., "msd": ...}`` (strict: every key used, every Parameter set)."""
    state = read_torch_checkpoint(checkpoint)
    nets = gen.MSGenerator(cfg), MSMultiPeriodDiscriminator(dcfg), MSMultiScaleDiscriminator(dcfg)
    for net, key in zip(nets, ("generator", "mpd", "msd")):
        load_torch_state_dict(net, state[key])
    return nets


def _flat(outputs) -> list:
    """Every tensor of a discriminator's (real, fake, fmap_real, fmap_fake), as numpy, in order."""
    real, fake, fmap_real, fmap_fake = outputs
    arrays = list(real) + list(fake) + [x for f in fmap_real for x in f] + [x for f in fmap_fake for x in f]
    return [a.detach().numpy() if hasattr(a, "detach") else a.asnumpy() for a in arrays]


def run(out_dir: str, cfg: gen.Config = gen.Config(upsample_initial_channel=16), dcfg: DConfig = DConfig(),
        frames: int = 8, steps: int = 3, lr: float = 2e-4, seed: int = 0) -> Dict[str, object]:
    """Steps 1-3 of the module docstring. Returns the largest relative errors of the port
    (``mpd``, ``msd``: max over all outputs and feature maps), the per-step losses of both
    frameworks (``torch_d``, ``torch_g``, ``ms_d``, ``ms_g``), and the spectral-norm state after the
    steps (``u``/``v`` of the MSD's first convolution, ``torch_u``/``torch_v`` and ``ms_u``/``ms_v``)."""
    import torch

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    t_gen = gen.build_torch_generator(cfg, "old")
    t_mpd, t_msd = build_torch_discriminators(dcfg)
    rng = np.random.default_rng(seed)
    mel = rng.standard_normal((1, cfg.num_mels, frames)).astype(np.float32)
    length = frames * int(np.prod(cfg.upsample_rates))
    y = (0.5 * np.sin(np.arange(length) * 0.05) + 0.05 * rng.standard_normal(length)).astype(np.float32)
    y = y.reshape(1, 1, length)
    t_msd.train()
    with torch.no_grad():  # a few training forwards: the stored u, v are neither random nor converged
        t_msd(torch.from_numpy(y), torch.from_numpy(y[..., ::-1].copy()))
    checkpoint = os.path.join(out_dir, "hifigan.pt")
    torch.save({"generator": t_gen.state_dict(), "mpd": t_mpd.state_dict(), "msd": t_msd.state_dict()}, checkpoint)

    net_g, net_mpd, net_msd = port(checkpoint, cfg, dcfg)
    result: Dict[str, object] = {}

    # 2. Eval-mode outputs and feature maps of both discriminators on (real, generated).
    t_gen.eval(), t_mpd.eval(), t_msd.eval()
    net_mpd.set_train(False)
    net_msd.set_train(False)
    with torch.no_grad():
        y_hat_t = t_gen(torch.from_numpy(mel))
        ref = {"mpd": _flat(t_mpd(torch.from_numpy(y), y_hat_t)), "msd": _flat(t_msd(torch.from_numpy(y), y_hat_t))}
    y_hat_m = ms.Tensor(y_hat_t.numpy())
    got = {"mpd": _flat(net_mpd(ms.Tensor(y), y_hat_m)), "msd": _flat(net_msd(ms.Tensor(y), y_hat_m))}
    for key in ("mpd", "msd"):
        result[key] = max(gen.max_rel_error(a, b) for a, b in zip(got[key], ref[key]))

    # 3. Training steps: PyTorch first (eager), then MindSpore in GRAPH_MODE.
    d_loss, g_loss, f_loss = torch_losses()
    t_gen.train(), t_mpd.train(), t_msd.train()
    opt_g = torch.optim.Adam(t_gen.parameters(), lr, betas=(0.8, 0.99))
    opt_d = torch.optim.Adam(list(t_mpd.parameters()) + list(t_msd.parameters()), lr, betas=(0.8, 0.99))
    x_t, y_t = torch.from_numpy(mel), torch.from_numpy(y)
    result["torch_d"], result["torch_g"] = [], []
    for _ in range(steps):
        y_g_hat = t_gen(x_t)
        opt_d.zero_grad()
        rf, gf, _, _ = t_mpd(y_t, y_g_hat.detach())
        rs, gs, _, _ = t_msd(y_t, y_g_hat.detach())
        loss_d = d_loss(rs, gs) + d_loss(rf, gf)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        _, gf, frf, fgf = t_mpd(y_t, y_g_hat)
        _, gs, frs, fgs = t_msd(y_t, y_g_hat)
        loss_g = g_loss(gs) + g_loss(gf) + f_loss(frs, fgs) + f_loss(frf, fgf) + 45 * torch.mean(torch.abs(y_t - y_g_hat))
        loss_g.backward()
        opt_g.step()
        result["torch_d"].append(loss_d.item())
        result["torch_g"].append(loss_g.item())
    first = t_msd.discriminators[0].convs[0]
    result["torch_u"], result["torch_v"] = first.weight_u.numpy().copy(), first.weight_v.numpy().copy()

    previous_mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        d_params = net_mpd.trainable_params() + net_msd.trainable_params()
        d_step = nn.TrainOneStepCell(DiscriminatorLoss(net_g, net_mpd, net_msd),
                                     nn.Adam(d_params, lr, beta1=0.8, beta2=0.99))
        g_step = nn.TrainOneStepCell(GeneratorLoss(net_g, net_mpd, net_msd),
                                     nn.Adam(net_g.trainable_params(), lr, beta1=0.8, beta2=0.99))
        d_step.set_train(True)
        g_step.set_train(True)
        x_m, y_m = ms.Tensor(mel), ms.Tensor(y)
        result["ms_d"], result["ms_g"] = [], []
        for _ in range(steps):
            result["ms_d"].append(float(d_step(x_m, y_m).asnumpy()))
            result["ms_g"].append(float(g_step(x_m, y_m).asnumpy()))
    finally:
        ms.set_context(mode=previous_mode)
    first = net_msd.discriminators[0].convs[0]
    result["ms_u"], result["ms_v"] = first.weight_u.asnumpy(), first.weight_v.asnumpy()
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="hifigan_gan_out",
                        help="folder for the PyTorch checkpoints the port reads (default: %(default)s)")
    parser.add_argument("--channels", type=int, default=16, help="generator upsample_initial_channel (V1: 512)")
    parser.add_argument("--frames", type=int, default=8, help="mel frames per training example")
    parser.add_argument("--steps", type=int, default=3, help="GAN training steps (D step + G step)")
    args = parser.parse_args(argv)
    r = run(args.out_dir, gen.Config(upsample_initial_channel=args.channels), DConfig(), args.frames, args.steps)
    print(f"port, eval mode: max relative error MPD {r['mpd']:.2e}, MSD {r['msd']:.2e}")
    for i in range(args.steps):
        print(f"step {i}: D loss torch {r['torch_d'][i]:.6f} mindspore {r['ms_d'][i]:.6f}   "
              f"G loss torch {r['torch_g'][i]:.6f} mindspore {r['ms_g'][i]:.6f}")
    print(f"spectral-norm u after the steps: max relative error {gen.max_rel_error(r['ms_u'], r['torch_u']):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
