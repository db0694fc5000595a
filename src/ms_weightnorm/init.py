"""Data-dependent initialization of weight-normed layers (Salimans & Kingma 2016, section 3).

For every weight-normed layer, in the order the network calls them, the layer's
pre-activation with a unit magnitude and no bias, ``t = (v . x) / ||v||``, is measured on a
batch of data, and then

    g    = init_scale / std(t)
    bias = -mean(t) * init_scale / std(t)

per output feature, so that the layer's pre-activations on that batch have mean 0 and
standard deviation ``init_scale``. Each layer sees the outputs of the layers below it that
are already initialized, which is what makes the whole stack well scaled, not only the
first layer. The direction ``v`` is not changed.

Statistics are over the batch and, for convolutions, over the spatial axes; the standard
deviation is the population one (divide by the count, as batch normalization does). Under
data parallelism (msrun) the per-feature sums are added over all processes first, so every
process sets the same ``g`` and ``bias``: those of an initialization on the global batch.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from . import _layouts
from ._compat import own_params
from .distributed import all_reduce_sum
from .parametrize import invalidate_compiled_graphs, original_class
from .weight_norm import WeightNorm, is_weight_normed, weight_norms

__all__ = ["data_dependent_init"]

Inputs = Union[Tensor, np.ndarray, Sequence[Union[Tensor, np.ndarray]]]

_TRANSPOSED = _layouts.TRANSPOSED
_FORWARD = (nn.Dense, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# A feature whose std is below this fraction of its |mean| is constant up to rounding: dividing
# by that std would give a huge, meaningless g.
_CONSTANT_RTOL = 1e-6


class _Layer:
    """What data init needs to know about one weight-normed layer, checked before any change."""

    def __init__(self, path: str, cell: nn.Cell):
        self.path = path or "<the network itself>"
        self.cell = cell
        base = original_class(cell)
        label = f"cell '{self.path}' ({base.__name__})"
        wn = weight_norms(cell)
        if not issubclass(base, _FORWARD + _TRANSPOSED):
            raise TypeError(
                f"data_dependent_init: {label} has weight norm on {sorted(wn)}, but data-dependent init "
                f"is defined for Dense/Linear and Conv1d/2d/3d (transposed too). Remove weight norm "
                f"from that cell (remove_weight_norm) before calling data_dependent_init")
        if "weight" not in wn:
            raise TypeError(
                f"data_dependent_init: {label} has weight norm on {sorted(wn)}, not on 'weight'; "
                f"data-dependent init sets the magnitude of the layer's 'weight'")
        self.g: Parameter = cell.weight_g
        v = cell.weight_v
        transposed = issubclass(base, _TRANSPOSED)
        # Output features sit on axis 1 of a transposed conv's weight (in, out/group, ...).
        weight_axis = _layouts.output_axis(base)
        dim = wn["weight"].dim
        if dim != weight_axis:
            got = "the whole tensor (dim=None)" if dim is None else f"axis {dim}"
            raise ValueError(
                f"data_dependent_init: {label} normalizes its weight of shape {tuple(v.shape)} over all "
                f"axes but {got}, so g does not hold one magnitude per output feature. Data init needs "
                f"weight_norm(cell, dim={weight_axis}) for this layer (its output features are axis "
                f"{weight_axis} of the weight)")
        groups = getattr(cell, "group", getattr(cell, "groups", 1))  # nn's name, mint's name
        if transposed and groups != 1:
            raise ValueError(
                f"data_dependent_init: {label} has group={groups}: each slice of g then scales "
                f"{groups} output channels at once, so per-feature init is not defined. Use group=1 "
                f"or remove weight norm from this cell")
        bias = own_params(cell).get("bias")
        self.bias: Optional[Parameter] = bias if isinstance(bias, Parameter) else None
        # Dense puts features last (any rank); convolutions on axis 1 unless channels-last.
        if issubclass(base, (nn.Dense, nn.Linear)) or getattr(cell, "data_format", "NCHW") == "NHWC":
            self.feature_axis = -1
        else:
            self.feature_axis = 1
        self.done = False


def _as_inputs(inputs: Inputs) -> Tuple[Tensor, ...]:
    items = tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)
    out = []
    for x in items:
        if isinstance(x, np.ndarray):
            x = Tensor(x)
        if not isinstance(x, Tensor):
            raise TypeError(
                f"data_dependent_init: inputs must be a Tensor/numpy array or a tuple of them (the "
                f"arguments of net), got {type(x).__name__}")
        out.append(x)
    return tuple(out)


def _write(param: Parameter, value: np.ndarray) -> None:
    # ops.assign, not set_data: assignments are seen by graphs compiled under ms.jit too.
    ops.assign(param, Tensor(np.asarray(value).reshape(param.shape), param.dtype))


def _global_stats(t: np.ndarray, layer: _Layer) -> Tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and population std of ``t`` (features on the last axis) over all processes."""
    c = t.shape[-1]
    t = t.reshape(-1, c)
    # Two reductions (sum and count, then the centred sum of squares) instead of one pass with
    # sum(t*t): no cancellation when |mean| >> std, even with the float32 transport.
    first = np.concatenate([t.sum(0), [float(t.shape[0])]])
    first = all_reduce_sum(Tensor(first.astype(np.float32))).asnumpy().astype(np.float64)
    count = first[-1]
    if count < 2:
        raise ValueError(
            f"data_dependent_init: cell '{layer.path}' saw {int(count)} value per output feature on the "
            f"init batch; a variance needs at least 2. Pass a larger batch")
    mean = first[:-1] / count
    sq = ((t - mean) ** 2).sum(0)
    var = all_reduce_sum(Tensor(sq.astype(np.float32))).asnumpy().astype(np.float64) / count
    std = np.sqrt(var)
    bad = ~np.isfinite(std) | (std <= _CONSTANT_RTOL * np.abs(mean)) | (std == 0)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(
            f"data_dependent_init: output feature(s) {idx[:10].tolist()}{' ...' if idx.size > 10 else ''} "
            f"of cell '{layer.path}' are constant (or not finite) on the init batch, so g = init_scale / "
            f"std(t) is undefined. Use a larger or more varied batch (are its inputs all equal?)")
    return mean, std


def _init_call(layer: _Layer, construct: Callable, init_scale: float) -> Callable:
    cell = layer.cell

    def patched(*args, **kwargs):
        if layer.done:
            return construct(*args, **kwargs)
        # t: the layer itself with unit g and no bias (and no fused activation), so every conv
        # type, padding and stride is handled by the layer's own code.
        _write(layer.g, np.ones(layer.g.shape))
        if layer.bias is not None:
            _write(layer.bias, np.zeros(layer.bias.shape))
        act = getattr(cell, "activation_flag", False)
        if act:
            cell.activation_flag = False
        try:
            t = construct(*args, **kwargs)
        finally:
            if act:
                cell.activation_flag = True
        t = np.moveaxis(t.asnumpy().astype(np.float64), layer.feature_axis, -1)
        mean, std = _global_stats(t, layer)
        scale = init_scale / std
        _write(layer.g, scale)
        if layer.bias is not None:
            _write(layer.bias, -mean * scale)
        layer.done = True
        return construct(*args, **kwargs)
    return patched


def data_dependent_init(net: nn.Cell, inputs: Inputs, init_scale: float = 1.0) -> nn.Cell:
    """Initialize ``g`` and ``bias`` of every weight-normed layer of ``net`` from a batch; return ``net``.

    Runs ``net(*inputs)`` once. Each weight-normed layer, when the network first calls it,
    measures ``t = (v . x) / ||v||`` on its actual input (the outputs of the layers below it,
    already initialized) and sets, per output feature,
    ``g = init_scale / std(t)`` and ``bias = -mean(t) * init_scale / std(t)``.
    Afterwards the layer's pre-activations on ``inputs`` have mean 0 and std ``init_scale`` per
    feature (over the batch, and the spatial axes of convolutions). ``std`` is the population
    standard deviation (divide by the count), like batch normalization's. ``v`` is not changed;
    layers without a bias only get ``g``. Under msrun data parallelism the statistics are those
    of the global batch (sums are all-reduced), so every process sets the same values.

    Supported layers: ``nn.Dense``/``nn.Linear`` and ``nn.Conv1d/2d/3d`` with weight norm on
    ``weight`` over ``dim=0``, and ``nn.Conv1d/2d/3dTranspose`` (group 1) with ``dim=1``: ``g``
    must hold one magnitude per output feature. A Dense's fused ``activation`` is left out of
    ``t``. The pass runs in PyNative mode whatever the current mode (the mode is restored and
    compiled graphs are dropped, so a GRAPH_MODE network recompiles with the new values). Apart
    from ``g`` and ``bias``, no Parameter changes (running statistics of batch-norm layers are put
    back). On error nothing is changed.

    Raises ``ValueError`` if ``net`` has no weight-normed layer, a layer is not called by
    ``net(*inputs)``, the batch has fewer than 2 values per feature, a feature is constant on the
    batch, or ``g`` is not per output feature; ``TypeError`` for an unsupported weight-normed layer.

    >>> import numpy as np, mindspore as ms
    >>> from mindspore import nn
    >>> from ms_weightnorm import apply_weight_norm
    >>> net = nn.SequentialCell([nn.Dense(5, 8), nn.ReLU(), nn.Dense(8, 3)])
    >>> _ = apply_weight_norm(net)
    >>> x = ms.Tensor(np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32))
    >>> _ = data_dependent_init(net, x, init_scale=0.5)
    >>> h = net[0](x).asnumpy()
    >>> bool(np.allclose(h.mean(0), 0, atol=1e-5)), bool(np.allclose(h.std(0), 0.5, atol=1e-4))
    (True, True)
    """
    if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)) or not init_scale > 0:
        raise ValueError(f"data_dependent_init: init_scale must be a number > 0, got {init_scale!r}")
    if not isinstance(net, nn.Cell):
        raise TypeError(f"data_dependent_init: net must be a mindspore.nn.Cell, got {type(net).__name__}")
    args = _as_inputs(inputs)
    layers: List[_Layer] = []
    seen = set()
    for path, cell in net.cells_and_names():
        if id(cell) in seen:
            continue
        seen.add(id(cell))
        if is_weight_normed(cell) and not isinstance(cell, WeightNorm):  # a wrapper answers for its module
            layers.append(_Layer(path, cell))
    if not layers:
        raise ValueError(
            f"data_dependent_init: {type(net).__name__} has no weight-normed layer; apply weight norm "
            f"first (weight_norm(layer) or apply_weight_norm(net))")

    params = list(net.get_parameters())
    saved: Dict[int, np.ndarray] = {id(p): p.asnumpy().copy() for p in params}
    targets = {id(l.g) for l in layers} | {id(l.bias) for l in layers if l.bias is not None}
    mode = ms.get_context("mode")
    ok = False
    try:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        for layer in layers:
            # An instance attribute shadows the class's construct, and PyNative calls
            # self.construct: no structural change, and deleting it restores the class method.
            vars(layer.cell)["construct"] = _init_call(layer, layer.cell.construct, float(init_scale))
        try:
            net(*args)
        finally:
            for layer in layers:
                vars(layer.cell).pop("construct", None)
        missed = [l.path for l in layers if not l.done]
        if missed:
            raise ValueError(
                f"data_dependent_init: weight-normed cell(s) {missed} were not called by net(*inputs), "
                f"so they cannot be initialized from data. Pass inputs that run them (a construct under "
                f"ms.jit also hides its layers from the init pass)")
        ok = True
    finally:
        for p in params:
            # Forward passes may move running statistics; on error everything goes back.
            if not ok or id(p) not in targets:
                if not np.array_equal(p.asnumpy(), saved[id(p)]):
                    _write(p, saved[id(p)])
        ms.set_context(mode=mode)
        invalidate_compiled_graphs()
    return net
