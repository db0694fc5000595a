"""The fuzzing property of the checkpoint reader, one function per target (no atheris needed:
``targets.py`` runs these under libFuzzer, ``tests/test_fuzz.py`` replays inputs through them).

- ``zip``: the bytes are a whole ``torch.save`` file (zip directory, archive layout, pickle,
  tensors), read in memory through the reader's exception boundary;
- ``pickle``: the bytes are a ``data.pkl`` record, unpickled against storages of zeros;
- ``safetensors``: the bytes are a ``.safetensors`` file (written to a file, as the reference
  implementation reads files).

The property, checked on every input: it loads, and every array that views the input lies
inside the input's bytes; or it raises ``CheckpointError``. Anything else (another exception,
an array outside the input) is a finding. And the cost property: the input's peak traced
memory and its time stay inside the cost model (docs/security.md): for a pickle, at most
``BYTES_PER_UNIT`` bytes and ``NS_PER_UNIT`` ns per unit the unpickler charged, plus what the
tensors themselves hold (bounded by the input's size) and a small constant; for a safetensors
file, a multiple of the input's size. An input that leaves the model is a finding. The modules are called *inside* the reader's
exception boundary (which would turn a stray ``struct.error`` into a ``CheckpointError``), so
that a check missing in the code itself is found, not masked; time and memory are bounded by the runner
(libFuzzer's ``-timeout`` and ``-rss_limit_mb`` and an address-space limit in ``targets.py``; a
subprocess with limits in the tests). The reader package is loaded alone (no MindSpore).
"""
import importlib.util
import os
import sys
import tempfile
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(HERE, os.pardir, "src", "ms_weightnorm", "_checkpoint")


def load_reader():
    spec = importlib.util.spec_from_file_location("_fuzzed_reader", os.path.join(PACKAGE, "__init__.py"),
                                                  submodule_search_locations=[PACKAGE])
    module = importlib.util.module_from_spec(spec)
    sys.modules["_fuzzed_reader"] = module
    spec.loader.exec_module(module)
    return module


reader = load_reader()
import numpy as np  # noqa: E402
from _fuzzed_reader import (files as _files, limits as _limits, safetensors_io as _safetensors_io, tensors as _tensors,  # noqa: E402
                            torch_zip as _torch_zip, unpickler as _unpickler)

CheckpointError = reader.CheckpointError
MAX_FUZZ_STORAGE = 1 << 20

# The cost model's measured constants (fuzz/cost_model.py), with a margin: a finding is an input
# that needs more than these.
BYTES_PER_UNIT = 1.5
NS_PER_UNIT = 400          # measured <= 70 on a shared 2-core machine; a margin for libFuzzer's own overhead
SLACK_BYTES = 2 << 20
SLACK_SECONDS = 0.5
SAFETENSORS_BYTES_PER_BYTE = 64   # a header byte costs at most this much in descriptions
SAFETENSORS_NS_PER_BYTE = 2000
FUZZ_COST_BASE = 1 << 20

tracemalloc.start()


class _Recording(_unpickler.Unpickler):
    """The unpickler, remembering the units it charged (the cost property compares against them)."""

    last = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _Recording.last = self


_torch_zip.Unpickler = _Recording


class CostModelExceeded(AssertionError):
    """An input cost more memory or time than the cost model allows."""


def _within_model(run, data: bytes, kind: str) -> None:
    """``run()``, then a finding if its peak memory or time left the model."""
    _Recording.last = None
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.process_time()  # CPU time: other processes on a shared machine do not count
    try:
        # A smaller constant term than the default 16 MiB: the property is per unit, whatever the
        # budget, and inputs that spend a whole default budget would slow the fuzzer tenfold.
        with _limits.limits(pickle_cost_base=FUZZ_COST_BASE):
            run()
    finally:
        seconds = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1] - base
        units = _Recording.last.spent if _Recording.last is not None else 0
        if kind == "safetensors":
            allowed_bytes = SAFETENSORS_BYTES_PER_BYTE * len(data) + SLACK_BYTES
            allowed_seconds = SAFETENSORS_NS_PER_BYTE * 1e-9 * len(data) + SLACK_SECONDS
        else:
            # tensors: the input's bytes, a float32 copy of bfloat16 views (2x), CRC pieces
            allowed_bytes = BYTES_PER_UNIT * units + 4 * len(data) + SLACK_BYTES
            allowed_seconds = NS_PER_UNIT * 1e-9 * units + 1e-6 * len(data) + SLACK_SECONDS
        if peak > allowed_bytes or seconds > allowed_seconds:
            raise CostModelExceeded(
                f"{kind} input of {len(data)} bytes charged {units} units but took {peak} bytes (model: "
                f"{allowed_bytes:.0f}) and {seconds:.3f} s (model: {allowed_seconds:.3f})")


def _arrays(obj, out, seen=None):
    """Every array and lazy tensor in the loaded tree, each shared container visited once (a tuple
    DAG of 40 levels has 2**40 leaves once expanded)."""
    seen = set() if seen is None else seen
    stack = [obj]
    while stack:
        obj = stack.pop()
        if isinstance(obj, (dict, list, tuple)):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            stack.extend(obj.values() if isinstance(obj, dict) else obj)
        elif isinstance(obj, (np.ndarray, _tensors.LazyTensor)):
            out.append(obj)
    return out


def _check_inside(arrays, data: bytes) -> None:
    """Every array that views memory (not a copy) lies inside ``data``'s buffer."""
    base = np.frombuffer(data, np.uint8)
    lo, hi = base.__array_interface__["data"][0], base.__array_interface__["data"][0] + len(data)
    for a in arrays:
        if isinstance(a, _tensors.LazyTensor):
            a = a.array()
        if a.size == 0 or a.base is None:
            continue  # an empty array, or a fresh copy (bfloat16 widened), owns its memory
        first, last = np.byte_bounds(a)
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        if root.base is None or not isinstance(root.base, (bytes, memoryview)):
            continue  # a view of a copy the reader made (bfloat16 widened from in-bounds bits)
        if not (lo <= first and last <= hi):
            raise AssertionError(f"an array spans [{first - lo}, {last - lo}) of a {len(data)}-byte input")


def _zip(data: bytes) -> None:
    lazy = len(data) % 2 == 0  # both paths: lazy descriptions, and arrays
    try:
        source = _files.Bytes(data, "<fuzz input>")  # the reader's own in-memory copy: arrays view it
        obj = _torch_zip.read_archive(source, "<fuzz input>", lazy)
        _check_inside(_arrays(obj, []), source._data.obj)
    except CheckpointError:
        pass


def zip_target(data: bytes) -> None:
    _within_model(lambda: _zip(data), data, "zip")


class _ZeroStorages:
    def __call__(self, key, code, numel):
        nbytes = numel * _tensors.element_dtype(code).itemsize
        if nbytes > MAX_FUZZ_STORAGE:
            raise CheckpointError("storage larger than the fuzzer's storages")
        blob = bytes(nbytes)
        return _tensors.Storage(key, code, numel, lambda: memoryview(blob))


def pickle_target(data: bytes) -> None:
    _within_model(lambda: _pickle(data), data, "pickle")


def _pickle(data: bytes) -> None:
    try:
        obj = _torch_zip.finish_tree(_Recording(data, _ZeroStorages(), "<fuzz input>").load(),
                                     lambda x: x, "<fuzz input>")
        for a in _arrays(obj, []):
            if isinstance(a, _tensors.LazyTensor):
                a.array()
    except CheckpointError:
        pass


_ST_PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-st-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None),
                        "input.safetensors")


def safetensors_target(data: bytes) -> None:
    _within_model(lambda: _safetensors(data), data, "safetensors")


def _safetensors(data: bytes) -> None:
    with open(_ST_PATH, "wb") as f:
        f.write(data)
    try:
        obj = _safetensors_io.read_safetensors(_ST_PATH, lazy=len(data) % 2 == 0)
        arrays = [a.array() if isinstance(a, _tensors.LazyTensor) else a for a in obj.values()]
        for a in arrays:  # private copies read with pread: touch them
            if a.size:
                a.reshape(-1)[[0, -1]]
    except CheckpointError:
        pass


TARGETS = {"zip": zip_target, "pickle": pickle_target, "safetensors": safetensors_target}
