"""The compatibility module: version window, warnings, and each MindSpore internal it wraps.

Every test here runs on whichever MindSpore release is installed; CI runs them on both ends
of the supported window (2.7.0 and 2.10).
"""
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from ms_weightnorm import _compat
from ms_weightnorm import functional as F

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ms_weightnorm"


def test_version_parsing():
    assert _compat.mindspore_version("2.7.0") == (2, 7, 0)
    assert _compat.mindspore_version("2.10.1rc1") == (2, 10, 1)
    assert _compat.mindspore_version("2.11.0.dev20270101") == (2, 11, 0)
    assert _compat.mindspore_version("3") == (3, 0, 0)
    assert _compat.mindspore_version("nightly") == (0, 0, 0)
    assert _compat.mindspore_version() == _compat.mindspore_version(ms.__version__)


def test_window_messages(monkeypatch):
    monkeypatch.setitem(_compat._warned, "done", False)
    for inside in ("2.7.0", "2.7.2", "2.8.0", "2.9.0", "2.10.0", "2.10.7"):
        assert _compat.check_version(inside) is None, inside
    with pytest.warns(_compat.UntestedMindSporeWarning, match=r"MindSpore 2\.11\.0 is newer and untested"):
        newer = _compat.check_version("2.11.0")
    assert "2.7.0 to 2.10.x" in newer and "mindspore<2.11" in newer
    # Once per process: the second call returns the message without warning again.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compat.check_version("3.0.0") is not None
    monkeypatch.setitem(_compat._warned, "done", False)
    with pytest.warns(_compat.UntestedMindSporeWarning, match=r"needs MindSpore >= 2\.7\.0"):
        _compat.check_version("2.6.0")


_IMPORT_WITH_VERSION = """
import warnings, mindspore
if {fake!r}:
    mindspore.__version__ = {fake!r}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import ms_weightnorm
    import ms_weightnorm as again
    from ms_weightnorm import _compat
    _compat.check_version()
mine = [w for w in caught if issubclass(w.category, _compat.UntestedMindSporeWarning)]
print(len(mine))
for w in mine:
    print(w.message)
"""


def _import_under(fake):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _IMPORT_WITH_VERSION.format(fake=fake)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_import_warns_once_on_a_newer_mindspore():
    # A faked release: the import must not fail, and must say once where the user stands.
    lines = _import_under("2.11.0")
    count_at = next(i for i, line in enumerate(lines) if line.isdigit())
    assert lines[count_at] == "1", lines
    assert "MindSpore 2.11.0 is newer and untested" in lines[count_at + 1]


def test_import_is_silent_on_the_installed_release():
    lines = _import_under("")
    assert lines[-1] == "0", lines


def test_compiled_graph_caches_are_dropped():
    class Scaled(nn.Cell):
        def __init__(self):
            super().__init__()
            self.k = 2.0

        def construct(self, x):
            return x * self.k

    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = Scaled()
        x = ms.Tensor(np.ones(2, np.float32))
        assert net(x).asnumpy().tolist() == [2.0, 2.0]
        api = _compat._graph_api()
        assert any(api.cells_compile_cache.values()) or api.ms_compile_cache
        object.__setattr__(net, "k", 3.0)  # a change MindSpore does not notice on its own
        assert net(x).asnumpy().tolist() == [2.0, 2.0]
        _compat.drop_compiled_graphs()
        assert not any(api.cells_compile_cache.values()) and not api.ms_compile_cache
        assert net(x).asnumpy().tolist() == [3.0, 3.0]
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_graph_api_is_the_module_of_ms_memory_recycle():
    # The public function that clears the same caches is defined where they live.
    assert _compat._graph_api().__name__ == ms.ms_memory_recycle.__module__


def test_own_params_is_the_live_ordered_dict():
    layer = nn.Dense(3, 2)
    params = _compat.own_params(layer)
    assert list(params) == ["weight", "bias"]
    bias = params.pop("bias")
    assert [name for name, _ in layer.parameters_and_names()] == ["weight"]
    params["bias"] = bias
    assert [p.name for p in layer.trainable_params()] == ["weight", "bias"]


def test_amp_type_name_follows_to_float():
    layer = nn.Dense(3, 2)
    assert _compat.amp_type_name(layer) is None
    layer.to_float(ms.float16)
    assert _compat.amp_type_name(layer) == "FP16"
    assert callable(getattr(nn.Cell, _compat.AMP_FLAG_HOOK))


def test_compiling_probe(mode):
    def which(x):
        return x + 1 if _compat.compiling(0) else x - 1

    x = ms.Tensor(np.zeros(1, np.float32))
    assert which(x).asnumpy().tolist() == [-1.0]
    assert ms.jit(which)(x).asnumpy().tolist() == [1.0]


def test_eager_bprop_accepts_both_calling_forms():
    seen = []

    def bprop(a, b, c, out, dout):
        seen.append((a, b, c, out, dout))
        return "grads"

    wrapped = _compat._eager_bprop(bprop, 3)
    assert wrapped("v", "g", "m", "out", "dout") == "grads"
    # MindSpore 2.7.0/2.7.1 PyNative second order: an extra argument before dout.
    assert wrapped("v", "g", "m", "out", "first-dout", "dout") == "grads"
    assert seen == [("v", "g", "m", "out", "dout")] * 2


def test_elementwise_type_rules():
    bf16, f16, f32 = ms.bfloat16, ms.float16, ms.float32
    assert _compat._elementwise_type(bf16, "CPU", (2, 8, 0)) == f32
    assert _compat._elementwise_type(bf16, "CPU", (2, 7, 0)) == f32
    assert _compat._elementwise_type(bf16, "CPU", (2, 9, 0)) == bf16
    assert _compat._elementwise_type(bf16, "Ascend", (2, 7, 0)) == bf16
    assert _compat._elementwise_type(f16, "CPU", (2, 7, 0)) == f16
    assert _compat._elementwise_type(f32, "CPU", (2, 7, 0)) == f32


@pytest.mark.parametrize("dim", [0, 1, None])
def test_composed_bfloat16_forward_on_this_release(mode, dim, rng):
    # On releases whose CPU backend lacks bfloat16 Mul the composed path multiplies in float32;
    # either way the result is the float64 reference rounded to bfloat16.
    v = rng.standard_normal((5, 4)).astype(np.float32)
    g = (rng.random(F.g_shape(v.shape, dim)) + 0.5).astype(np.float32)
    vb, gb = ms.Tensor(v).astype(ms.bfloat16), ms.Tensor(g).astype(ms.bfloat16)
    v64 = vb.astype(ms.float32).asnumpy().astype(np.float64)
    g64 = gb.astype(ms.float32).asnumpy().astype(np.float64)
    axes = tuple(i for i in range(2) if i != dim) if dim is not None else (0, 1)
    ref = g64 * v64 / np.sqrt((v64 * v64).sum(axis=axes, keepdims=dim is not None))
    previous = F.get_backend()
    F.set_backend("composed")
    try:
        fn = ms.jit(F.weight_norm) if mode == "graph" else F.weight_norm
        w = fn(vb, gb, dim)
        assert w.dtype == ms.bfloat16
        np.testing.assert_allclose(w.astype(ms.float32).asnumpy(), ref, rtol=2 ** -7, atol=1e-6)
    finally:
        F.set_backend(previous)


def test_comm_and_private_classes():
    assert _compat.comm_initialized() is False  # msrun runs are in tests/test_distributed.py
    batch_norm = _compat.private_nn_class("normalization", "_BatchNorm")
    assert batch_norm is not None and issubclass(nn.BatchNorm2d, batch_norm)
    assert _compat.private_nn_class("normalization", "NoSuchNorm") is None
    assert _compat.private_nn_class("no_such_module", "_BatchNorm") is None


# Names that only the compatibility module may use: MindSpore internals and version checks.
_INTERNALS = re.compile(
    r"mindspore\.(common|graph)\.api|from mindspore\.graph|PrimitiveWithInfer|GlobalComm|"
    r"\._params\b|cells_compile_cache|ms_compile_cache|_cell_graph_executor|"
    r"mindspore\.nn\.layer\.|_add_mixed_precision_flag|mixed_precision_type|"
    r"__version__\s*(?:[<>]|[=!]=)|(?:[<>]=?|[=!]=)\s*\S*__version__|mindspore_version\(|version\.parse|"
    r"\bset_const_prim\b")


def test_internals_only_in_the_compat_module():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_compat.py":
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _INTERNALS.search(line.split("#", 1)[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "MindSpore internals outside _compat.py:\n" + "\n".join(offenders)


def test_pyproject_and_readme_state_the_window():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    oldest = ".".join(map(str, _compat.OLDEST[:2]))
    assert f'"mindspore>={oldest},<3"' in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    newest = f"{_compat.NEWEST[0]}.{_compat.NEWEST[1]}"
    assert f"MindSpore {'.'.join(map(str, _compat.OLDEST))} to {newest}" in readme
