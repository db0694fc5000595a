"""Mean-only batch normalization (Salimans & Kingma 2016, section 2.2).

The paper pairs weight normalization with a batch normalization that only centres: the
minibatch mean is subtracted per feature, but the result is not divided by the minibatch
standard deviation (weight norm already controls the scale). The noise this adds is gentler
than full batch norm's, and the layer is cheap.
"""
from __future__ import annotations

from typing import Optional, Union

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

__all__ = ["MeanOnlyBatchNorm"]


class MeanOnlyBatchNorm(nn.Cell):
    """Subtract the per-feature batch mean (training) or running mean (inference); add a bias.

    Features are on axis 1: inputs ``(N, C)`` after a Dense, ``(N, C, L)``, ``(N, C, H, W)`` or
    ``(N, C, D, H, W)`` after a convolution. In training (``set_train(True)``) the output is
    ``x - mean_batch(x) + bias``, the mean taken over every axis but 1, and the running mean
    is updated as ``moving_mean = momentum * moving_mean + (1 - momentum) * mean_batch``
    (MindSpore's BatchNorm convention: ``momentum`` is the weight of the old value). In
    inference the output is ``x - moving_mean + bias``. Gradients flow through the batch mean,
    as in batch normalization; the running-mean update is not differentiated.

    Args:
        num_features: number of features ``C``.
        momentum: weight of the old running mean, in ``[0, 1]``.
        bias_init: initializer of the learnable bias (``"zeros"`` by default).
        moving_mean_init: initializer of the running mean.
        use_batch_statistics: ``None`` follows the cell's training flag; ``True``/``False``
            always use batch/running statistics (the running mean is only updated with batch
            statistics in training).
        dtype: dtype of the Parameters.

    Parameters ``bias`` (trainable) and ``moving_mean`` (not trainable) save and load with
    ``mindspore.save_checkpoint``/``load_checkpoint`` like any cell's.

    >>> import numpy as np, mindspore as ms
    >>> bn = MeanOnlyBatchNorm(2)
    >>> x = ms.Tensor(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32))
    >>> bn.set_train(True)(x).asnumpy().tolist()
    [[-1.0, -10.0], [1.0, 10.0]]
    >>> bn.moving_mean.asnumpy().astype(float).round(6).tolist()
    [0.2, 2.0]
    >>> bn.set_train(False)(x).asnumpy().astype(float).round(6).tolist()
    [[0.8, 8.0], [2.8, 28.0]]
    """

    def __init__(self, num_features: int, momentum: float = 0.9,
                 bias_init: Union[str, Tensor] = "zeros", moving_mean_init: Union[str, Tensor] = "zeros",
                 use_batch_statistics: Optional[bool] = None, dtype: ms.dtype = ms.float32):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"MeanOnlyBatchNorm: num_features must be a positive int, got {num_features!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"MeanOnlyBatchNorm: momentum must be a number in [0, 1], got {momentum!r}")
        if use_batch_statistics not in (None, True, False):
            raise ValueError(
                f"MeanOnlyBatchNorm: use_batch_statistics must be None, True or False, got {use_batch_statistics!r}")
        self.num_features = num_features
        self.momentum = float(momentum)
        self.use_batch_statistics = use_batch_statistics
        self.bias = Parameter(initializer(bias_init, (num_features,), dtype), name="bias")
        self.moving_mean = Parameter(initializer(moving_mean_init, (num_features,), dtype),
                                     name="moving_mean", requires_grad=False)

    def extend_repr(self) -> str:
        return f"num_features={self.num_features}, momentum={self.momentum}"

    def construct(self, x):
        ndim = x.ndim
        if ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"MeanOnlyBatchNorm(num_features={self.num_features}) got an input of shape "
                             f"{x.shape}; it expects (N, {self.num_features}, ...) with features on axis 1")
        shape = (1, self.num_features) + (1,) * (ndim - 2)
        use_batch = self.training if self.use_batch_statistics is None else self.use_batch_statistics
        if use_batch:
            # (C, rest) view: a one-axis reduction is much faster on the CPU backend than
            # reducing (0, 2, 3) at once.
            flat = x.swapaxes(0, 1).reshape(self.num_features, -1)
            mean = flat.mean(1)
            if self.training:
                new = self.momentum * self.moving_mean + (1.0 - self.momentum) * ops.stop_gradient(mean)
                ops.assign(self.moving_mean, new.astype(self.moving_mean.dtype))
            return x - mean.reshape(shape) + self.bias.reshape(shape)
        return x - self.moving_mean.reshape(shape) + self.bias.reshape(shape)
