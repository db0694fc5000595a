"""Cross-process reductions for data-parallel runs (msrun / mindspore.communication).

Used by code that computes statistics on a batch (data-dependent init) so that every
rank sees the statistics of the global batch. Without initialized communication these
are the identity, so single-process code runs unchanged.
"""
from __future__ import annotations

from mindspore import Tensor, ops

__all__ = ["world_size", "all_reduce_sum"]


def world_size() -> int:
    """Number of processes in the default group, or 1 when communication is not initialized."""
    try:
        from mindspore.communication import get_group_size
        return int(get_group_size())
    except Exception:  # not initialized, or built without communication support
        return 1


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum ``x`` over all processes (identity in a single process).

    >>> import numpy as np, mindspore as ms
    >>> all_reduce_sum(ms.Tensor(np.ones(3, np.float32))).asnumpy().tolist()
    [1.0, 1.0, 1.0]
    """
    if world_size() == 1:
        return x
    return ops.AllReduce(ops.ReduceOp.SUM)(x)
