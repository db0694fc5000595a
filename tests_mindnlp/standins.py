"""Stand-ins for two mindtorch functions that differ from torch's, for this suite only.

mindtorch 0.5.1's ``F.conv_transpose1d`` (which ``nn.ConvTranspose1d`` calls) has two bugs that
are not weight norm's and that ms_weightnorm does not patch (docs/mindnlp.md reproduces both):
its output is too long when ``padding > 0`` (the padding is dropped), and its gradient fails
(``Conv2D ... 'w_shape[0]' must be equal to 'out_channel'``) as soon as its input needs one.
Encodec's decoder and the HiFi-GAN upsample with it, so their weight norm cannot be checked
without a working one. This stand-in computes the transposed convolution as a convolution of
the zero-stuffed input with the flipped, transposed kernel, from ops whose gradients work. It
is used on both sides of every comparison (tools/mindnlp/measure.py too).

``F.leaky_relu``'s default slope is 0.2 in mindtorch 0.5.1, torch's is 0.01; the HiFi-GAN calls
it with the default once, before ``conv_post``. The stand-in passes torch's default.
"""
from __future__ import annotations

_SAVED = {}


def _one(x) -> int:
    return int(x[0]) if isinstance(x, (tuple, list)) else int(x)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    import mindtorch
    from mindtorch.nn import functional as F
    s, p, op, d = _one(stride), _one(padding), _one(output_padding), _one(dilation)
    k = int(weight.shape[-1])
    if groups != 1 or d != 1 or p > k - 1:
        raise NotImplementedError("the test stand-in covers groups=1, dilation=1, padding <= kernel_size - 1")
    n, c, length = (int(v) for v in input.shape)
    z = input
    if s > 1:  # s - 1 zeros after every sample, the trailing ones dropped
        zeros = mindtorch.zeros((n, c, length, s - 1), dtype=input.dtype)
        z = mindtorch.cat([input.unsqueeze(-1), zeros], dim=-1).reshape(n, c, length * s)[:, :, : (length - 1) * s + 1]
    z = F.pad(z, (k - 1 - p, k - 1 - p + op))
    return F.conv1d(z, weight.flip(-1).transpose(0, 1), bias)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return _SAVED["leaky_relu"](input, negative_slope, inplace)


def install() -> None:
    from mindtorch.nn import functional as F
    if not _SAVED:
        _SAVED.update(conv_transpose1d=F.conv_transpose1d, leaky_relu=F.leaky_relu)
        F.conv_transpose1d = conv_transpose1d
        F.leaky_relu = leaky_relu


def uninstall() -> None:
    from mindtorch.nn import functional as F
    if _SAVED:
        F.conv_transpose1d = _SAVED.pop("conv_transpose1d")
        F.leaky_relu = _SAVED.pop("leaky_relu")


def resync_rnn_weights(model) -> int:
    """Point every mindtorch RNN's weight lists back at its registered Parameters; return how many.

    mindtorch 0.5.1's ``nn.LSTM``/``nn.GRU`` forward reads ``w_ih_list``, ``w_hh_list``,
    ``b_ih_list``, ``b_hh_list``: plain lists of the Parameters made in ``__init__``. When those
    Parameters are replaced (``from_pretrained`` builds on the meta device and loads by
    assignment), the lists keep the old ones, so the forward uses the initial weights while
    ``state_dict()`` shows the loaded ones. Encodec has an LSTM in its encoder and its decoder.
    """
    count = 0
    for mod in model.modules():
        if not isinstance(getattr(mod, "w_ih_list", None), list):
            continue
        names = [(layer, "_reverse" if d else "") for layer in range(mod.num_layers)
                 for d in range(2 if mod.bidirectional else 1)]
        mod.w_ih_list = [getattr(mod, f"weight_ih_l{i}{s}") for i, s in names]
        mod.w_hh_list = [getattr(mod, f"weight_hh_l{i}{s}") for i, s in names]
        if mod.bias:
            mod.b_ih_list = [getattr(mod, f"bias_ih_l{i}{s}") for i, s in names]
            mod.b_hh_list = [getattr(mod, f"bias_hh_l{i}{s}") for i, s in names]
        count += 1
    return count
