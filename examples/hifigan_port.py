"""Porting guide: a HiFi-GAN V1-style vocoder generator from PyTorch to MindSpore.

HiFi-GAN (Kong et al., 2020) puts weight norm on every convolution: a ConvTranspose1d
upsampling stack, each stage followed by a multi-receptive-field fusion (MRF) of residual
blocks made of dilated Conv1d layers. Its released checkpoints (``g_02500000``...) are
``torch.save({"generator": state_dict})`` files with ``weight_g``/``weight_v`` keys. This
script shows the whole path:

1. the generator written twice, in PyTorch and in MindSpore, with the same attribute
   names so that the state dict keys line up (``conv_pre``, ``ups.<i>``,
   ``resblocks.<j>.convs1.<k>``, ``conv_post``);
2. the PyTorch weights loaded into the MindSpore twin with ``load_torch_state_dict``
   (no PyTorch needed for this step: the ``.pt`` file is read by a restricted unpickler;
   Conv1d layouts and the weight-norm keys are mapped);
3. the outputs compared;
4. weight norm removed (``remove_all_weight_norm``) for inference, outputs compared again;
5. the generator exported to MINDIR and run from it with ``ms.load`` + ``nn.GraphCell``.

Run it (small by default; ``--channels 512 --frames 32`` is the V1 size)::

    python examples/hifigan_port.py --out-dir /tmp/hifigan

Here the PyTorch generator has random weights; for a real port, skip step 1 and pass the
released checkpoint: ``load_torch_state_dict(net, read_torch_checkpoint(path)["generator"])``.

The discriminators (multi-period with weight norm, multi-scale with spectral norm on its first
scale) and GAN training steps in GRAPH_MODE are in ``hifigan_discriminators.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

if __name__ == "__main__":
    # MindSpore logs warnings at its default level that a user of this script cannot act on
    # (deprecations inside MindSpore's own layers and optimizers). GLOG_v=3 keeps errors only;
    # MindSpore reads it at import, so it is set before the import, and only when unset: an
    # explicit GLOG_v (e.g. GLOG_v=2 to see the warnings) wins.
    os.environ.setdefault("GLOG_v", "3")

import numpy as np
import mindspore as ms
from mindspore import nn

from ms_weightnorm import remove_all_weight_norm, weight_norm
from ms_weightnorm.torch_io import load_torch_state_dict, read_torch_checkpoint

LRELU_SLOPE = 0.1


@dataclass(frozen=True)
class Config:
    """HiFi-GAN generator hyperparameters; the defaults are V1's except the channel count."""

    num_mels: int = 80
    upsample_initial_channel: int = 32  # V1: 512
    upsample_rates: Tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: Tuple[int, ...] = (16, 16, 4, 4)
    resblock_kernel_sizes: Tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: Tuple[Tuple[int, ...], ...] = field(
        default_factory=lambda: ((1, 3, 5), (1, 3, 5), (1, 3, 5)))


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the length of a stride-1 convolution."""
    return (kernel_size * dilation - dilation) // 2


# --- MindSpore ------------------------------------------------------------------------------
# MindSpore's Conv1d needs pad_mode="pad" for an explicit padding and has no bias by default;
# PyTorch's has one. Everything else mirrors the PyTorch modules below, name for name.

def ms_conv1d(c_in: int, c_out: int, k: int, dilation: int = 1) -> nn.Conv1d:
    return weight_norm(nn.Conv1d(c_in, c_out, k, stride=1, pad_mode="pad",
                                 padding=same_padding(k, dilation), dilation=dilation, has_bias=True))


class MSResBlock1(nn.Cell):
    """Residual block: pairs of (dilated conv, conv), each pair added to its input."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]):
        super().__init__()
        self.convs1 = nn.CellList([ms_conv1d(channels, channels, kernel_size, d) for d in dilations])
        self.convs2 = nn.CellList([ms_conv1d(channels, channels, kernel_size, 1) for _ in dilations])
        self.n = len(dilations)
        self.act = nn.LeakyReLU(LRELU_SLOPE)

    def construct(self, x):
        for i in range(self.n):
            xt = self.convs1[i](self.act(x))
            xt = self.convs2[i](self.act(xt))
            x = xt + x
        return x


class MSGenerator(nn.Cell):
    """HiFi-GAN generator: mel spectrogram (B, num_mels, T) to waveform (B, 1, T * prod(rates))."""

    def __init__(self, cfg: Config):
        super().__init__()
        ch = cfg.upsample_initial_channel
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.num_upsamples = len(cfg.upsample_rates)
        self.conv_pre = ms_conv1d(cfg.num_mels, ch, 7)
        ups = []
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            ups.append(weight_norm(nn.Conv1dTranspose(
                ch // 2 ** i, ch // 2 ** (i + 1), k, stride=u, pad_mode="pad", padding=(k - u) // 2,
                has_bias=True)))
        self.ups = nn.CellList(ups)
        blocks = []
        for i in range(self.num_upsamples):
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                blocks.append(MSResBlock1(ch // 2 ** (i + 1), k, d))
        self.resblocks = nn.CellList(blocks)
        self.conv_post = ms_conv1d(ch // 2 ** self.num_upsamples, 1, 7)
        self.act = nn.LeakyReLU(LRELU_SLOPE)
        self.act_post = nn.LeakyReLU(0.01)  # PyTorch's F.leaky_relu default slope, as in HiFi-GAN
        self.tanh = nn.Tanh()

    def construct(self, x):
        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = self.ups[i](self.act(x))
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = self.conv_post(self.act_post(x))
        return self.tanh(x)


# --- PyTorch (the reference; only needed where the checkpoint comes from) ---------------------

def build_torch_generator(cfg: Config, style: str = "old"):
    """The PyTorch generator, weight norm on every conv in the ``old`` (``weight_g``/``weight_v``,
    as in the released HiFi-GAN checkpoints) or ``new`` (``parametrizations``) style."""
    import torch
    from torch import nn as tnn
    import torch.nn.functional as F

    if style == "old":
        def wn(m):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated
                return tnn.utils.weight_norm(m)
    elif style == "new":
        wn = tnn.utils.parametrizations.weight_norm
    else:
        raise ValueError(f"style must be 'old' or 'new', got {style!r}")

    def conv(c_in, c_out, k, dilation=1):
        return wn(tnn.Conv1d(c_in, c_out, k, 1, dilation=dilation, padding=same_padding(k, dilation)))

    class ResBlock1(tnn.Module):
        def __init__(self, channels, kernel_size, dilations):
            super().__init__()
            self.convs1 = tnn.ModuleList([conv(channels, channels, kernel_size, d) for d in dilations])
            self.convs2 = tnn.ModuleList([conv(channels, channels, kernel_size, 1) for _ in dilations])

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                x = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)) + x
            return x

    class Generator(tnn.Module):
        def __init__(self):
            super().__init__()
            ch = cfg.upsample_initial_channel
            self.num_kernels = len(cfg.resblock_kernel_sizes)
            self.conv_pre = conv(cfg.num_mels, ch, 7)
            self.ups = tnn.ModuleList([
                wn(tnn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
                for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
            self.resblocks = tnn.ModuleList([
                ResBlock1(ch // 2 ** (i + 1), k, d)
                for i in range(len(self.ups))
                for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
            self.conv_post = conv(ch // 2 ** len(self.ups), 1, 7)

        def forward(self, x):
            x = self.conv_pre(x)
            for i, up in enumerate(self.ups):
                x = up(F.leaky_relu(x, LRELU_SLOPE))
                blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
                x = sum(block(x) for block in blocks) / self.num_kernels
            return torch.tanh(self.conv_post(F.leaky_relu(x)))

    return Generator()


# --- the port ---------------------------------------------------------------------------------

def port_generator(checkpoint: str, cfg: Config) -> MSGenerator:
    """A MindSpore generator with the weights of a HiFi-GAN ``{"generator": state_dict}`` file.

    Needs no PyTorch. Strict: every Parameter must be found, every key used.
    """
    net = MSGenerator(cfg)
    load_torch_state_dict(net, read_torch_checkpoint(checkpoint)["generator"])
    net.set_train(False)
    return net


def max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b|: one number to print and compare."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def run(out_dir: str, cfg: Config = Config(), frames: int = 16, style: str = "old",
        seed: int = 0) -> Dict[str, np.ndarray]:
    """Steps 1-5 of the module docstring; returns the outputs of each stage.

    Keys: ``torch``, ``mindspore``, ``removed`` (after ``remove_all_weight_norm``) and
    ``mindir`` (from the exported file), all of shape (1, 1, frames * prod(upsample_rates)).
    """
    import torch

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    reference = build_torch_generator(cfg, style).eval()
    # Weight norm's g starts as ||v||; scale it so that the check does not rely on that.
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith(("weight_g", "original0")):
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    checkpoint = os.path.join(out_dir, "generator.pt")
    torch.save({"generator": reference.state_dict()}, checkpoint)

    mel = np.random.default_rng(seed).standard_normal((1, cfg.num_mels, frames)).astype(np.float32)
    with torch.no_grad():
        outputs = {"torch": reference(torch.from_numpy(mel)).numpy()}

    net = port_generator(checkpoint, cfg)
    x = ms.Tensor(mel)
    outputs["mindspore"] = net(x).asnumpy()

    remove_all_weight_norm(net)
    outputs["removed"] = net(x).asnumpy()

    stem = os.path.join(out_dir, "generator")
    ms.export(net, x, file_name=stem, file_format="MINDIR")
    graph = nn.GraphCell(ms.load(stem + ".mindir"))
    outputs["mindir"] = graph(x).asnumpy()
    return outputs


TORCH_MISSING = ("hifigan_port.py: this example needs PyTorch, only to build the reference generator it ports "
                 "from (loading the checkpoint into MindSpore does not). Install it with "
                 "`pip install torch==2.13.0` (the CPU build is enough), or run the example as "
                 "`bash run.sh exec python examples/hifigan_port.py`, which installs it.")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out-dir", default="hifigan_port_out",
                        help="folder for the PyTorch checkpoint (generator.pt) and the exported generator.mindir")
    parser.add_argument("--channels", type=int, default=32,
                        help="upsample_initial_channel, the generator's width (HiFi-GAN V1: 512)")
    parser.add_argument("--frames", type=int, default=16, help="mel frames of the test input")
    parser.add_argument("--style", choices=("old", "new"), default="old",
                        help="PyTorch weight-norm API of the reference: old = weight_g/weight_v keys, as in the "
                             "released HiFi-GAN checkpoints; new = torch.nn.utils.parametrizations")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401  (only the reference model needs it)
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        print(TORCH_MISSING, file=sys.stderr)
        return 1
    outputs = run(args.out_dir, Config(upsample_initial_channel=args.channels), args.frames, args.style)
    for stage in ("mindspore", "removed", "mindir"):
        print(f"{stage:>9} vs torch: max relative error {max_rel_error(outputs[stage], outputs['torch']):.2e}")
    print(f"exported {os.path.join(args.out_dir, 'generator.mindir')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
