"""Stand-ins, with identical math, for the ops mindone calls that have no CPU kernel in MindSpore 2.7.1.

mindone targets Ascend. On the CPU backend these kernels are not registered, so mindone's model
code (and mindone's own weight norm, for the "before" numbers) cannot run without them:

- ``Tensor.clone`` (kernel Clone) -> ``Tensor.copy``;
- ``mint.norm`` / ``mint.linalg.vector_norm`` (LinalgVectorNorm) -> ``(|x|^p).sum(axis)^(1/p)``
  with ``ops`` primitives, same ``dim``/``keepdim`` semantics for the p used (2, and p=None=2);
- ``Tensor.normal_`` (InplaceNormal) -> fill from ``numpy`` with the same mean/std;
- ``Tensor.fill_``/``zero_`` (InplaceFillScalar / InplaceZero) -> ``assign_value`` of a full tensor;
- ``mint.nn.functional.conv1d`` (Conv1DExt) -> ``ops.conv2d`` on an added axis of size 1;
- ``mint.nn.functional.pad`` (ConstantPadND, ReflectionPad1D) -> the ``ops.Pad`` and
  ``ops.MirrorPad("REFLECT")`` primitives with the same (PyTorch-order) paddings;
- ``mint.nn.ELU`` / ``mint.nn.functional.elu`` (EluExt) -> ``ops.Elu`` (alpha 1.0);
- ``mint.empty`` (asks for the Ascend device) -> ``ops.zeros`` (its values are unspecified anyway);
- ``Tensor.uniform_`` (InplaceUniform) -> fill from ``numpy`` with the same bounds;
- ``mint.nn.functional.leaky_relu`` (LeakyReLUExt) -> ``where(x >= 0, x, slope * x)``;
- ``mint.nn.Conv1d`` (which calls the Conv1DExt kernel directly, not ``mint.nn.functional``) ->
  its construct through the ``conv1d`` and ``pad`` stand-ins above;
- ``mint.nn.LayerNorm`` (LayerNormExt) -> mean and biased variance over the normalized axes;
- mindone's ``ConvTranspose1d`` (``mindspore_adapter._conv``, on ``conv_transpose2d``: kernel
  ConvTranspose2D) -> ``ops.Conv2DBackpropInput`` (the gradient of a convolution with respect to
  its input, which is the transposed convolution; MindSpore's own ``nn.Conv1dTranspose`` uses it);
- ``mint.stack`` (StackExt) -> ``ops.stack``.

Nothing here touches ms_weightnorm: the weight norm under test is the real one.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, mint, ops

_SAVED = []


def _norm(x, p="fro", dim=None, keepdim=False, *, dtype=None):
    if p in (None, "fro"):
        p = 2
    if p != 2:
        raise NotImplementedError(f"the CPU stand-in of mint.norm covers p=2 only, got p={p}")
    sq = ops.square(x)
    if dim is None:
        out = ops.sqrt(sq.sum())
        return out.reshape((1,) * x.ndim) if keepdim else out
    return ops.sqrt(sq.sum(axis=dim, keepdims=keepdim))


def _vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    return _norm(x, ord, dim, keepdim)


def _normal_(self, mean=0.0, std=1.0, *, generator=None):
    value = np.random.default_rng().normal(mean, std, tuple(self.shape)).astype(np.float32)
    self.assign_value(Tensor(value, dtype=self.dtype))
    return self


def _fill_(self, value):
    self.assign_value(ops.full(tuple(self.shape), float(value), dtype=self.dtype))
    return self


def _zero_(self):
    return _fill_(self, 0.0)


def _conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    def one(v):
        return v[0] if isinstance(v, (tuple, list)) else v
    pad = one(padding)
    if isinstance(pad, str):
        pad_mode, pad = pad, 0
    else:
        pad_mode, pad = "pad", (0, pad)  # (height, width): ops.conv2d takes one pad per axis, both sides
    out = ops.conv2d(input.expand_dims(2), weight.expand_dims(2), None, (1, one(stride)), pad_mode,
                     pad, (1, one(dilation)), groups).squeeze(2)
    if bias is not None:
        out = out + bias.reshape((1, -1, 1))
    return out


def _pad(input, pad, mode="constant", value=None):
    pad = tuple(int(p) for p in pad)
    pairs = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):  # PyTorch order: last axis first
        pairs[input.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":
        out = ops.Pad(tuple(pairs))(input)
        if value:
            mask = ops.Pad(tuple(pairs))(ops.ones_like(input))
            out = out + (1 - mask) * value
        return out
    if mode == "reflect":
        return ops.MirrorPad("REFLECT")(input, Tensor(np.array(pairs, np.int64)))
    raise NotImplementedError(f"the CPU stand-in of mint.nn.functional.pad covers constant and reflect, not {mode}")


def _elu(input, alpha=1.0, inplace=False):
    if alpha != 1.0:
        raise NotImplementedError("the CPU stand-in of elu covers alpha=1.0 (ops.Elu's only value)")
    return ops.Elu()(input)


class _ELU(ms.nn.Cell):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = alpha

    def construct(self, x):
        return _elu(x, self.alpha)


def _empty(*size, dtype=None, device=None, **kwargs):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return ops.zeros(tuple(int(n) for n in size), dtype or ms.float32)


def _uniform_(self, from_=0.0, to=1.0, *, generator=None):
    value = np.random.default_rng().uniform(from_, to, tuple(self.shape)).astype(np.float32)
    self.assign_value(Tensor(value, dtype=self.dtype))
    return self


def _leaky_relu(input, negative_slope=0.01, inplace=False):
    return ops.where(input >= 0, input, input * negative_slope)


def _mint_conv1d_construct(self, input):
    if self.padding_mode != "zeros":
        padded = _pad(input, self._reversed_padding, mode=self.padding_mode)
        return _conv1d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
    return _conv1d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _layer_norm_construct(self, input):
    axes = tuple(range(input.ndim - len(self.normalized_shape), input.ndim))
    mean = input.mean(axis=axes, keep_dims=True)
    var = ops.square(input - mean).mean(axis=axes, keep_dims=True)
    out = (input - mean) / ops.sqrt(var + self.eps)
    if self.weight is not None:
        out = out * self.weight
    if self.bias is not None:
        out = out + self.bias
    return out


def _adapter_conv_transpose1d_construct(self, x):
    n, _, length = x.shape
    k, s, d = self.kernel_size[-1], self.stride[-1], self.dilation[-1]
    p, extra = self.padding[-1], self.output_padding[-1]
    out_len = (length - 1) * s - 2 * p + d * (k - 1) + extra + 1
    deconv = ops.Conv2DBackpropInput(self.in_channels, (1, k), pad_mode="pad", pad=(0, 0, p, p), stride=(1, s),
                                     dilation=(1, d), group=self.groups)
    out = deconv(x.expand_dims(2), self.weight.expand_dims(2), (n, self.out_channels, 1, out_len)).squeeze(2)
    if self.bias is not None:
        out = out + self.bias.reshape((1, -1, 1))
    return out


def install() -> None:
    if _SAVED:
        return
    targets = [
        (ms.Tensor, "clone", lambda self: self.copy()),
        (mint, "norm", _norm),
        (mint.linalg, "vector_norm", _vector_norm),
        (ms.Tensor, "normal_", _normal_),
        (ms.Tensor, "fill_", _fill_),
        (ms.Tensor, "zero_", _zero_),
        (mint.nn.functional, "conv1d", _conv1d),
        (mint.nn.functional, "pad", _pad),
        (mint.nn.functional, "elu", _elu),
        (mint.nn, "ELU", _ELU),
        (mint, "empty", _empty),
        (ms.Tensor, "uniform_", _uniform_),
        (mint.nn.functional, "leaky_relu", _leaky_relu),
        (mint.nn.Conv1d, "construct", _mint_conv1d_construct),
        (mint.nn.LayerNorm, "construct", _layer_norm_construct),
        (mint, "stack", lambda tensors, dim=0: ops.stack(tensors, dim)),
    ]
    from mindone.transformers.mindspore_adapter import _conv as mindone_conv
    targets.append((mindone_conv.ConvTranspose1d, "construct", _adapter_conv_transpose1d_construct))
    for owner, name, value in targets:
        _SAVED.append((owner, name, owner.__dict__.get(name, getattr(owner, name, None))))
        setattr(owner, name, value)


def uninstall() -> None:
    while _SAVED:
        owner, name, value = _SAVED.pop()
        setattr(owner, name, value)
