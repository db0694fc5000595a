"""Loader of the fused CPU weight-norm kernels (``weight_norm_kernel.cc``).

The C++ source ships inside the package and is compiled on first use with the system's C++
compiler into a cache directory, under a name keyed by the hash of the source, the flags,
the compiler and the CPU, so an upgraded package or another machine sharing the cache
never loads a stale or foreign build. Nothing is built at install time: a plain
``pip install`` works, and machines without a compiler fall back to the composed path.

Cache directory: ``$MS_WEIGHTNORM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ms_weightnorm``, else
``~/.cache/ms_weightnorm`` (a per-user temporary directory if that is not writable).
Compiler: ``$CXX``, else ``g++``, else ``c++``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional, Tuple

__all__ = ["SOURCE", "library_path", "unavailable_reason", "make_kernels"]

SOURCE = Path(__file__).with_name("weight_norm_kernel.cc")
_BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fopenmp-simd")
# -march=native vectorizes the loops for this CPU (AVX2/AVX-512, F16C for float16); the
# CPU's flags are part of the cache key, so a shared cache never serves another CPU's build.
_NATIVE_FLAGS = ("-march=native",)

_lock = threading.Lock()
_state: dict = {"done": False, "path": None, "reason": None}


def _cache_dir() -> Path:
    env = os.environ.get("MS_WEIGHTNORM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "ms_weightnorm"


def _writable_dir(path: Path) -> Optional[Path]:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, delete=True)
        probe.close()
        return path
    except OSError:
        return None


def _compiler() -> Optional[str]:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _build(cxx: str, flags: Tuple[str, ...], target: Path) -> Optional[str]:
    """Compile to a private file, then rename: concurrent processes never see a partial file."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            return (proc.stderr or proc.stdout).strip()[-2000:] or f"{cxx} exited with {proc.returncode}"
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _locate_or_build() -> Tuple[Optional[Path], Optional[str]]:
    if platform.system() != "Linux":
        return None, f"MindSpore custom AOT kernels need Linux (this is {platform.system()})"
    if not SOURCE.is_file():
        return None, f"kernel source {SOURCE} is missing from the installed package"
    cxx = _compiler()
    if cxx is None:
        return None, "no C++ compiler found (set CXX, or install g++)"
    directory = _writable_dir(_cache_dir()) or _writable_dir(
        Path(tempfile.gettempdir()) / f"ms_weightnorm-{os.getuid()}")
    if directory is None:
        return None, f"no writable cache directory (tried {_cache_dir()})"
    source = SOURCE.read_bytes()
    version = _compiler_version(cxx)
    errors = []
    announced = False
    for flags in (_BASE_FLAGS + _NATIVE_FLAGS, _BASE_FLAGS):
        key = hashlib.sha256(b"\0".join(
            [source, " ".join(flags).encode(), cxx.encode(), version.encode(), _cpu_signature().encode()]
        )).hexdigest()[:20]
        target = directory / f"weight_norm_kernel-{key}.so"
        if not target.is_file():
            if not announced:
                # The first weight-norm call would otherwise wait in silence while g++ runs.
                print(f"ms_weightnorm: compiling the fused CPU kernels once, ~10 s (cached in {directory})",
                      file=sys.stderr, flush=True)
                announced = True
            error = _build(cxx, flags, target)
            if error is not None:
                errors.append(error)
                continue
        try:
            lib = ctypes.CDLL(str(target))
            lib.WeightNormForward  # noqa: B018 - raises AttributeError if the symbol is missing
            lib.WeightNormBackward  # noqa: B018
        except (OSError, AttributeError) as err:
            errors.append(f"{target}: {err}")
            continue
        return target, None
    return None, "compiling the kernel failed: " + "\n".join(errors)


def library_path() -> Optional[Path]:
    """Path of the compiled kernel library (building it on first call), or ``None``."""
    with _lock:
        if not _state["done"]:
            _state["path"], _state["reason"] = _locate_or_build()
            _state["done"] = True
    return _state["path"]


def unavailable_reason() -> Optional[str]:
    """Why the fused kernels cannot be used here, or ``None`` when they can."""
    library_path()
    return _state["reason"]


def make_kernels(bprop_forward: Callable, bprop_backward: Callable):
    """A new pair of ``ops.Custom`` primitives ``(forward, backward)`` with the given bprops.

    ``forward(v, g, meta) -> w`` and ``backward(v, g, dw, meta) -> (dv, dg)``, where ``meta``
    is an int64 tensor ``[bits of eps as float64, axis]`` (``axis`` -1 for the whole tensor) and ``g`` holds one
    value per index of ``axis``. The bprops are written in MindSpore ops by the caller.
    """
    path = library_path()
    if path is None:
        raise RuntimeError(f"ms_weightnorm fused kernels are unavailable: {_state['reason']}")
    from .._compat import custom_aot

    forward = custom_aot(
        f"{path}:WeightNormForward",
        out_shape=lambda v, g, meta: v,
        out_dtype=lambda v, g, meta: v,
        bprop=bprop_forward,
        n_inputs=3,
    )
    backward = custom_aot(
        f"{path}:WeightNormBackward",
        out_shape=lambda v, g, dw, meta: (v, g),
        out_dtype=lambda v, g, dw, meta: (v, g),
        bprop=bprop_backward,
        n_inputs=4,
    )
    return forward, backward
