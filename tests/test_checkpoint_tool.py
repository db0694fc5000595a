"""``python -m ms_weightnorm.checkpoint``, run where MindSpore is not installed.

The tool and ``import ms_weightnorm`` are tested in a venv holding only numpy and safetensors
(``MS_WEIGHTNORM_NOMINDSPORE_VENV``, by default .venv-nomindspore in the checkout), created
when absent: ``pip install 'numpy<2' safetensors``, about 20 s. Files come from real torch
(2.13.0, this venv) and from the library's own writer; torch reads the results.
"""
import os
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from ms_weightnorm.checkpoint import detect_norms, main
from ms_weightnorm._checkpoint.torch_writer import BFloat16, write_torch_zip

ROOT = Path(__file__).resolve().parents[1]
tnn = torch.nn


@pytest.fixture(scope="module")
def bare_python():
    """A python with numpy and safetensors only (no MindSpore, no torch)."""
    venv = Path(os.environ.get("MS_WEIGHTNORM_NOMINDSPORE_VENV", ROOT / ".venv-nomindspore"))
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import numpy, safetensors"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy<2", "safetensors"], check=True, timeout=900)
    for module in ("mindspore", "torch"):
        found = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        assert found.returncode != 0, f"{venv} has {module}; the test needs a venv without it"
    return str(python)


def run(python, *args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONHOME", None)
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def hifigan_like(seed=0):
    """A generator with every layout the tool detects, and a bfloat16 layer."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old_wn, old_sn = tnn.utils.weight_norm, tnn.utils.spectral_norm
        net = tnn.Sequential(OrderedDict(
            conv_pre=old_wn(tnn.Conv1d(80, 8, 7)),
            ups=tnn.ModuleList([tnn.utils.parametrizations.weight_norm(tnn.ConvTranspose1d(8, 4, 4), dim=1)]),
            post=tnn.utils.parametrizations.spectral_norm(tnn.Linear(4, 4)),
            disc=old_sn(tnn.Conv2d(1, 2, 3)),
            whole=old_wn(tnn.Linear(3, 2), dim=None),
        ))
    net.half_layer = tnn.Linear(2, 2).to(torch.bfloat16)
    return net


def test_import_without_mindspore(bare_python):
    proc = run(bare_python, "-c", """
import sys
import ms_weightnorm
from ms_weightnorm import CheckpointError, UnsafeCheckpointError
print(CheckpointError.__mro__[1].__name__, issubclass(UnsafeCheckpointError, CheckpointError))
print("mindspore" in sys.modules, "torch" in sys.modules)
try:
    from ms_weightnorm import weight_norm
except ImportError as err:
    print(err)
try:
    ms_weightnorm.no_such_name
except AttributeError as err:
    print(err)
""")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ValueError True"
    assert lines[1] == "False False"
    assert lines[2].startswith("ms_weightnorm.weight_norm needs MindSpore, which is not installed here")
    assert lines[3] == "module 'ms_weightnorm' has no attribute 'no_such_name'"


def test_inspect_torch_file_without_mindspore(bare_python, tmp_path):
    net = hifigan_like()
    torch.save({"generator": net.state_dict(), "steps": 2500000}, tmp_path / "g_02500000")
    proc = run(bare_python, "-m", "ms_weightnorm.checkpoint", "inspect", "g_02500000", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"g_02500000: torch.save zip format, {os.path.getsize(tmp_path / 'g_02500000')} bytes"
    rows = {line.split()[0]: line.split(None, 1)[1] for line in out[2:] if line and not line.startswith(" ")}
    state = net.state_dict()
    for key, value in state.items():
        dtype = str(value.dtype).replace("torch.", "")
        assert rows[f"generator.{key}"].split("  ")[0].strip() == str(tuple(value.shape)), key
        assert rows[f"generator.{key}"].endswith(dtype), key
    assert rows["steps"].split() == ["2500000", "int", "(not", "a", "tensor)"]
    text = "\n".join(out)
    assert ("weight norm, old layout (torch.nn.utils.weight_norm): 2 weight(s)\n"
            "  generator.conv_pre.weight  dim=0\n"
            "  generator.whole.weight  dim=None (whole tensor)\n") in text
    assert ("weight norm, new layout (torch.nn.utils.parametrizations.weight_norm): 1 weight(s)\n"
            "  generator.ups.0.weight  dim=1") in text
    assert ("spectral norm, old layout (torch.nn.utils.spectral_norm): 1 weight(s)\n"
            "  generator.disc.weight  u (2,), v (9,)") in text
    assert ("spectral norm, new layout (torch.nn.utils.parametrizations.spectral_norm): 1 weight(s)\n"
            "  generator.post.weight  u (4,), v (4,)") in text
    elements = sum(v.numel() for v in state.values())
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    assert out[-1] == f"total: {len(state)} tensor(s), {elements} elements, {nbytes} bytes of tensor data " \
                      f"({nbytes / 1e6:.1f} MB)"


def test_convert_both_ways_without_mindspore(bare_python, tmp_path):
    net = hifigan_like(seed=1)
    state = net.state_dict()
    torch.save({"generator": state, "steps": 3}, tmp_path / "g.pt")
    # Nested: safetensors needs one flat mapping, so the tool asks for --key.
    proc = run(bare_python, "-m", "ms_weightnorm.checkpoint", "convert", "g.pt", "g.safetensors", cwd=tmp_path)
    assert proc.returncode == 1 and not (tmp_path / "g.safetensors").exists()
    assert proc.stderr.strip() == ("error: g.pt is a nested checkpoint (entries ['generator'] are mappings); "
                                   "safetensors holds one flat mapping of tensors: pick one with --key, "
                                   "e.g. --key generator")
    proc = run(bare_python, "-m", "ms_weightnorm.checkpoint", "convert", "g.pt", "g.safetensors", "--key",
               "generator", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {len(state)} tensor(s) to g.safetensors"
    flat = safetensors.torch.load_file(tmp_path / "g.safetensors")
    # The reference reader; safetensors stores keys in its own order (alignment, then name).
    assert sorted(flat) == sorted(state)
    for key, value in state.items():
        assert flat[key].dtype == value.dtype and torch.equal(flat[key], value), key
    proc = run(bare_python, "-m", "ms_weightnorm.checkpoint", "convert", "g.safetensors", "back.pth", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert type(back) is OrderedDict and sorted(back) == sorted(state)
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in state.items())
    fresh = hifigan_like(seed=7)
    fresh.load_state_dict(back)


def test_convert_our_writers_file_without_mindspore(bare_python, tmp_path):
    values = OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3), h=np.arange(3, dtype=np.float16),
                         b=BFloat16([1.5, -2.0, 0.1]))
    write_torch_zip(str(tmp_path / "ours.pt"), {"model": values, "epoch": 4})
    proc = run(bare_python, "-m", "ms_weightnorm.checkpoint", "convert", "ours.pt", "model.pt", "--key", "model",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    back = torch.load(tmp_path / "model.pt", weights_only=True)
    assert list(back) == ["w", "h", "b"]
    assert torch.equal(back["w"], torch.from_numpy(values["w"])) and torch.equal(back["h"], torch.from_numpy(values["h"]))
    assert back["b"].dtype == torch.bfloat16
    assert torch.equal(back["b"], torch.tensor([1.5, -2.0, 0.1]).to(torch.bfloat16))
    proc = run(bare_python, "-m", "ms_weightnorm.checkpoint", "inspect", "ours.pt", cwd=tmp_path)
    assert "model.b  (3,)    bfloat16" in proc.stdout and "epoch    4       int (not a tensor)" in proc.stdout


def test_refuses_hostile_and_missing_files(bare_python, tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueR.")
        z.writestr("archive/version", b"3\n")
    proc = run(bare_python, "-m", "ms_weightnorm.checkpoint", "inspect", "evil.pt", cwd=tmp_path)
    assert proc.returncode == 1
    # The unpickler's global allowlist refused it, naming the file and the callable.
    assert proc.stderr.startswith("error: evil.pt: refusing to load: its pickle references posix.system,")
    proc = run(bare_python, "-m", "ms_weightnorm.checkpoint", "convert", "nope.pt", "x.safetensors", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: [Errno 2] no checkpoint file: 'nope.pt'"
    assert sorted(os.listdir(tmp_path)) == ["evil.pt"]


def test_main_in_process(tmp_path, capsys):
    write_torch_zip(str(tmp_path / "a.pt"), {"fc.weight_g": np.ones((2, 1), np.float32),
                                              "fc.weight_v": np.ones((2, 3), np.float32)})
    assert main(["inspect", str(tmp_path / "a.pt")]) == 0
    out = capsys.readouterr().out
    assert "weight norm, old layout (torch.nn.utils.weight_norm): 1 weight(s)\n  fc.weight  dim=0\n" in out
    assert main(["convert", str(tmp_path / "a.pt"), str(tmp_path / "a.ckpt")]) == 1
    assert capsys.readouterr().err.strip().endswith("name the output .safetensors, .pt, .pth or .bin")


def test_detect_norms_needs_every_key_of_a_layout():
    found = detect_norms({"a.weight_g": (2, 1), "b.weight_orig": (2, 3), "b.weight_u": (2,),
                          "b.weight_v": (3,), "c.parametrizations.weight.original0": (1, 4),
                          "c.parametrizations.weight.original1": (3, 4), "d.weight_g": (2, 5),
                          "d.weight_v": (2, 3), "weight_g": (1, 3), "weight_v": (2, 3),
                          "xparametrizations.w.original0": (1,), "xparametrizations.w.original1": (2,)})
    assert [(k.split(" (")[0], v) for k, v in found.items()] == [
        ("weight norm, old layout", [("d.weight", "g does not fit v"), ("weight", "dim=1")]),
        ("weight norm, new layout", [("c.weight", "dim=1")]),
        ("spectral norm, old layout", [("b.weight", "u (2,), v (3,)")]),
        ("spectral norm, new layout", []),
    ]
