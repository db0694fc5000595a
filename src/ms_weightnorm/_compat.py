"""Every MindSpore internal or release-dependent API the package uses, in one place.

Supported window: MindSpore 2.7.0 to 2.10.x (each release in it was tested; see the README).
The rest of the package calls the functions here and never looks at the MindSpore version.
Each entry says why it reaches past the public API and which releases need what.

A MindSpore newer than the window is not refused: ``import ms_weightnorm`` warns once
(:class:`UntestedMindSporeWarning`) and everything below keeps its newest behaviour.
"""
from __future__ import annotations

import importlib
import re
import warnings
from typing import Callable, Dict, Optional, Tuple

import mindspore as ms

__all__ = [
    "OLDEST",
    "NEWEST",
    "UntestedMindSporeWarning",
    "mindspore_version",
    "check_version",
    "drop_compiled_graphs",
    "own_params",
    "amp_type_name",
    "AMP_FLAG_HOOK",
    "make_trace_probe",
    "compiling",
    "custom_aot",
    "elementwise_type",
    "comm_initialized",
    "private_nn_class",
]

# The tested window: the oldest release, and the newest (major, minor) whose patch releases
# are expected to behave like the tested one.
OLDEST: Tuple[int, int, int] = (2, 7, 0)
NEWEST: Tuple[int, int] = (2, 10)


class UntestedMindSporeWarning(UserWarning):
    """The installed MindSpore is outside the release window this package was tested on."""


def mindspore_version(text: Optional[str] = None) -> Tuple[int, int, int]:
    """``(major, minor, patch)`` of ``text`` (default: the installed ``mindspore.__version__``).

    Suffixes such as ``rc1`` or ``.dev20260101`` are ignored; missing parts count as 0.

    >>> mindspore_version("2.7.0rc1"), mindspore_version("2.10")
    ((2, 7, 0), (2, 10, 0))
    """
    text = getattr(ms, "__version__", "0") if text is None else text
    match = re.match(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
    if match is None:
        return (0, 0, 0)
    parts = [int(p) if p is not None else 0 for p in match.groups()]
    return (parts[0], parts[1], parts[2])


_warned = {"done": False}


def check_version(text: Optional[str] = None) -> Optional[str]:
    """Warn (once per process) when MindSpore is outside the tested window; return the message.

    Called by ``import ms_weightnorm``. Returns ``None`` inside the window.

    >>> check_version("2.8.0") is None
    True
    """
    version = mindspore_version(text)
    shown = text if text is not None else getattr(ms, "__version__", "unknown")
    if version[:2] > NEWEST:
        message = (f"ms_weightnorm was tested with MindSpore {'.'.join(map(str, OLDEST))} to "
                   f"{NEWEST[0]}.{NEWEST[1]}.x; MindSpore {shown} is newer and untested. It will "
                   f"probably work; if it does not, please report it, or install "
                   f"'mindspore<{NEWEST[0]}.{NEWEST[1] + 1}'.")
    elif version < OLDEST:
        message = (f"ms_weightnorm needs MindSpore >= {'.'.join(map(str, OLDEST))}; MindSpore {shown} "
                   f"is older and unsupported. Install 'mindspore>={'.'.join(map(str, OLDEST))}'.")
    else:
        return None
    if not _warned["done"]:
        _warned["done"] = True
        warnings.warn(message, UntestedMindSporeWarning, stacklevel=3)
    return message


# --- compiled-graph caches ---------------------------------------------------------------------
# MindSpore caches compiled graphs per top cell / ms.jit function and never re-checks the
# structure of a cell's children, so after a class swap a cached graph would run the old
# structure. There is no public API that drops the caches alone (``ms.ms_memory_recycle`` also
# recycles device memory). The caches live in the module that defines ``ms_memory_recycle``:
# ``mindspore.graph.api`` from 2.9.0 on (``mindspore.common.api`` is then a deprecated alias
# that logs a warning on import), ``mindspore.common.api`` in 2.7.0-2.8.0 (2.7.1-2.8.0 have a
# ``mindspore.graph`` package, but without ``api``).

def _graph_api():
    for name in ("mindspore.graph.api", "mindspore.common.api"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "cells_compile_cache") and hasattr(module, "_cell_graph_executor"):
            return module
    raise ImportError(  # pragma: no cover - a MindSpore layout we have not seen
        f"ms_weightnorm cannot find MindSpore {ms.__version__}'s compiled-graph caches "
        f"(looked in mindspore.graph.api and mindspore.common.api); this MindSpore release is "
        f"not supported, install 'mindspore>={'.'.join(map(str, OLDEST))},<{NEWEST[0]}.{NEWEST[1] + 1}'")


def drop_compiled_graphs() -> None:
    """Forget every compiled graph (cells and ``ms.jit`` functions); the next call recompiles.

    The same cache clearing as ``ms.ms_memory_recycle`` (identical in 2.7.0-2.10.0), without
    its device-memory recycling.
    """
    api = _graph_api()
    executor = api._cell_graph_executor
    if api.ms_compile_cache:
        executor.del_net_res(None, api.ms_compile_cache)
        try:
            # ms.jit functions compiled by the newer jit pipeline have their own executor.
            api.JitExecutor_.get_instance().del_net_res(None, api.ms_compile_cache)
        except Exception:  # pragma: no cover - depends on the jit pipeline in use
            pass
        api.ms_compile_cache.clear()
    # A copy: on 2.7.2 freeing a graph can drop a cell's entry while we iterate (measured).
    for cache in list(api.cells_compile_cache.values()):
        if cache:
            executor.del_net_res(None, cache)
            cache.clear()


# --- Cell internals ----------------------------------------------------------------------------

def own_params(cell) -> Dict[str, object]:
    """The cell's own Parameters by attribute name, as the live ordered dict the Cell keeps.

    Why internal: a parametrization must remove a Parameter and insert new ones at its place,
    keeping order (checkpoint and optimizer order), and ``Cell`` has no public API for that;
    ``parameters_dict``/``get_parameters`` are copies and recurse into children. ``Cell._params``
    is the same ordered dict in 2.7.0-2.10.0.
    """
    return cell._params


# ``to_float``/amp set ``cell.mixed_precision_type`` (a ``MixedPrecisionType`` enum, or None)
# through the hook ``Cell._add_mixed_precision_flag``; a parametrized class overrides the hook to
# learn which float type the cell's computed weight must have. Both unchanged in 2.7.0-2.10.0.
AMP_FLAG_HOOK = "_add_mixed_precision_flag"


def amp_type_name(cell) -> Optional[str]:
    """``"FP16"``, ``"BF16"``, ``"FP32"`` as set by ``to_float``/amp on ``cell``, else None."""
    kind = getattr(cell, "mixed_precision_type", None)
    return getattr(kind, "name", None)


# --- "am I being compiled?" ----------------------------------------------------------------------

def make_trace_probe(name: str) -> Callable[..., bool]:
    """A callable that is True while MindSpore compiles a graph and False when run eagerly.

    Why internal: MindSpore has no public "is tracing" query usable inside a traced function.
    A constant primitive (``set_const_prim`` plus the ``constexpr_prim`` attribute, the
    mechanism behind ``ops.constexpr``) is evaluated by its ``__infer__`` at compile time and
    by ``__call__`` in PyNative. ``PrimitiveWithInfer`` lives in ``mindspore.ops.primitive``
    in 2.7.0-2.10.0.
    """
    from mindspore.ops.primitive import PrimitiveWithInfer

    class _TraceProbe(PrimitiveWithInfer):
        def __init__(self):
            super().__init__(name)
            self.set_const_prim(True)
            self.add_prim_attr("constexpr_prim", True)

        def __infer__(self, *args):
            return {"dtype": None, "shape": None, "value": True}

        def __call__(self, *args):
            return False

    return _TraceProbe()


# One probe for the package: ``compiling(0)`` (the argument only gives the primitive an input).
compiling = make_trace_probe("ms_weightnorm_compiling")


# --- custom kernels --------------------------------------------------------------------------------

def _fixed_bprop(bprop: Callable, n_inputs: int) -> Callable:
    # GRAPH_MODE parses a Custom op's bprop and binds exactly n_inputs + 2 named parameters
    # (inputs, out, dout): no *args, no defaults. bprop is passed through when it already has
    # that form; the callers here write theirs that way.
    return bprop


def _eager_bprop(bprop: Callable, n_inputs: int) -> Callable:
    # PyNative calls a Custom op's bprop from Python as bprop(*inputs, out, dout), except that
    # MindSpore 2.7.0 and 2.7.1, in second-order gradients, call it once more with one extra
    # argument before dout (measured: bprop(*inputs, out, <first-order dout>, dout)); 2.7.2
    # and later do not. Inputs and out come first and dout last in both forms.
    def bprop_any(*args):
        return bprop(*args[:n_inputs + 1], args[-1])
    return bprop_any


def custom_aot(symbol: str, out_shape: Callable, out_dtype: Callable, bprop: Callable,
               n_inputs: int) -> Callable:
    """``ops.Custom(symbol, func_type="aot")`` with ``bprop(*inputs, out, dout)``, on every release.

    Returns a function of the ``n_inputs`` inputs. It holds two primitives over the same kernel,
    one whose bprop GRAPH_MODE can parse and one whose bprop accepts MindSpore 2.7.0/2.7.1's
    PyNative calling form (see ``_eager_bprop``), and picks one when traced (a compile-time
    constant: graphs contain only the first). The AOT kernel's C calling convention
    (``int f(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
    void* stream, void* extra)``) is the same in 2.7.0-2.10.0.
    """
    from mindspore import ops

    def make(bp):
        return ops.Custom(symbol, out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bp)
    graph_op = make(_fixed_bprop(bprop, n_inputs))
    eager_op = make(_eager_bprop(bprop, n_inputs))

    def custom_op(*inputs):
        if compiling(0):
            return graph_op(*inputs)
        return eager_op(*inputs)
    custom_op.primitives = (graph_op, eager_op)
    return custom_op


# --- kernels a backend lacks ------------------------------------------------------------------------

def _elementwise_type(dtype, device: str, version: Tuple[int, int, int]):
    # The CPU backend has bfloat16 Mul and RealDiv kernels from 2.9.0 on (measured: 2.7.0, 2.7.1,
    # 2.7.2 and 2.8.0 raise "Select CPU operator[Mul] fail! Unsupported data type" for
    # bfloat16 inputs, in PyNative and GRAPH_MODE alike; 2.9.0 and 2.10.0 run them).
    if dtype == ms.bfloat16 and device == "CPU" and version < (2, 9, 0):
        return ms.float32
    return dtype


def _device() -> str:
    try:
        return str(ms.get_context("device_target"))
    except Exception:  # pragma: no cover - context API moved
        return "unknown"


def _constexpr(fn):
    # Evaluated in Python while a graph is compiled (its result is a constant of the graph).
    from mindspore import ops
    return ops.constexpr(reuse_result=False)(fn)


@_constexpr
def elementwise_type(dtype):
    """The type to do elementwise arithmetic of ``dtype`` tensors in on this backend.

    ``dtype`` itself, or ``float32`` where the backend has no kernel for ``dtype`` (bfloat16
    on the CPU backend before MindSpore 2.9.0); callers cast, compute, and cast back.
    """
    return _elementwise_type(dtype, _device(), mindspore_version())


# --- communication ---------------------------------------------------------------------------------

def comm_initialized() -> bool:
    """Whether ``mindspore.communication.init()`` has run in this process.

    Why internal: the public ``get_rank``/``get_group_size`` answer from environment variables
    before ``init()`` (msrun sets them), so they cannot tell. ``GlobalComm.INITED`` (in
    ``mindspore.communication.management``, 2.7.0-2.10.0) is the flag ``init()`` sets.
    """
    try:
        from mindspore.communication.management import GlobalComm
    except ImportError:  # a build without communication support
        return False
    return bool(getattr(GlobalComm, "INITED", False))


# --- private layer classes -------------------------------------------------------------------------

def private_nn_class(module: str, name: str) -> Optional[type]:
    """A class of ``mindspore.nn.layer.<module>`` (e.g. ``normalization._BatchNorm``), or None.

    Private bases cover user subclasses of the public layers; looked up by name and allowed
    to be missing, since they are not public API (present in 2.7.0-2.10.0).
    """
    try:
        mod = importlib.import_module(f"mindspore.nn.layer.{module}")
    except ImportError:  # pragma: no cover - moved
        return None
    cls = getattr(mod, name, None)
    return cls if isinstance(cls, type) else None
