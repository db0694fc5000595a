"""Cross-process reductions for data-parallel runs (msrun / mindspore.communication).

Used by code that computes statistics on a batch (data-dependent init) so that every
rank sees the statistics of the global batch. Without initialized communication these
are the identity, so single-process code runs unchanged.

These functions run eagerly (call them from Python, outside a Cell's ``construct`` or an
``ms.jit`` function), in either execution mode.
"""
from __future__ import annotations

import numpy as np

import mindspore as ms
from mindspore import Tensor, ops

from ._compat import comm_initialized

__all__ = ["is_initialized", "world_size", "rank", "all_reduce_sum"]

# Dtypes the collective kernels take directly on every backend. The CPU backend's AllReduce
# has float32 and float16 kernels only (measured, MindSpore 2.10); its AllGather accepts
# float64 and int64 but silently narrows them to float32 and int32 (measured: 1 + 1e-12
# arrives as 1.0, 3e9 wraps negative). Those are gathered as their raw bits in int32 words.
_REDUCE_NATIVE = (ms.float32, ms.float16)
_GATHER_NATIVE = (ms.float64, ms.int32, ms.int64)


def is_initialized() -> bool:
    """Whether ``mindspore.communication.init()`` has run in this process.

    >>> is_initialized()
    False
    """
    return comm_initialized()


def world_size() -> int:
    """Number of processes in the default group, or 1 when communication is not initialized.

    Checks initialization itself: before ``init()``, ``get_group_size()`` returns the
    ``RANK_SIZE`` environment variable, which msrun sets, so a reduction issued before
    ``init()`` would otherwise wait for partners that cannot answer.

    >>> world_size()
    1
    """
    if not is_initialized():
        return 1
    from mindspore.communication import get_group_size
    return int(get_group_size())


def rank() -> int:
    """This process's rank in the default group, or 0 when communication is not initialized.

    >>> rank()
    0
    """
    if not is_initialized():
        return 0
    from mindspore.communication import get_rank
    return int(get_rank())


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum ``x`` over all processes (identity in a single process); same shape and dtype as ``x``.

    Every process must call it, with the same shape and dtype, in the same order. All ranks
    get identical results. float32 and float16 use ``AllReduce``; bfloat16 is summed in
    float32. float64, int32 and int64, which the CPU backend's ``AllReduce`` rejects, are
    gathered bit for bit (``AllGather`` of their int32 words) and summed locally in rank
    order, so they keep their precision.

    >>> import numpy as np, mindspore as ms
    >>> all_reduce_sum(ms.Tensor(np.ones(3, np.float32))).asnumpy().tolist()
    [1.0, 1.0, 1.0]
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"all_reduce_sum expects a mindspore Tensor, got {type(x).__name__}")
    n = world_size()
    if n == 1:
        return x
    dtype = x.dtype
    if dtype in _REDUCE_NATIVE:
        return ops.AllReduce(ops.ReduceOp.SUM)(x)
    if dtype == ms.bfloat16:
        return ops.AllReduce(ops.ReduceOp.SUM)(x.astype(ms.float32)).astype(dtype)
    if dtype in _GATHER_NATIVE:
        shape = tuple(x.shape)
        local = x.asnumpy()
        # AllGather concatenates along axis 0: give every rank's bits their own leading row.
        words = Tensor(np.ascontiguousarray(local).reshape(1, -1).view(np.int32))
        gathered = ops.AllGather()(words).asnumpy()
        values = np.ascontiguousarray(gathered).view(local.dtype).reshape((n,) + shape)
        total = values[0].copy()
        for r in range(1, n):  # rank order, so every rank adds in the same order
            total = total + values[r]
        return Tensor(np.asarray(total, dtype=local.dtype))
    raise TypeError(
        f"all_reduce_sum: unsupported dtype {dtype}; use float16, bfloat16, float32, float64, "
        f"int32 or int64")
