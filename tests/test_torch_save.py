"""``.pt`` saves: torch.save's zip format written with numpy, read back by real torch.

PyTorch 2.13.0 CPU (the test venv) is the reference; ``test_older_torch_reads_and_writes``
repeats the exchange with torch 2.4.1 in a venv of its own (see that test for its cost).
"""
import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import nn

from ms_weightnorm import (CheckpointError, load_torch_state_dict, read_torch_checkpoint, save_torch_checkpoint,
                           save_torch_state_dict, spectral_norm, to_torch_state_dict, weight_norm)
from ms_weightnorm._checkpoint import torch_writer
from ms_weightnorm._checkpoint.torch_writer import BFloat16, write_torch_zip
from test_torch_io import _torch_wn

ROOT = Path(__file__).resolve().parents[1]
tnn = torch.nn


def torch_net(style, seed=0):
    """Conv1d (weight norm, dim 2) -> BatchNorm1d -> ConvTranspose1d (weight norm) -> Linear (spectral norm)."""
    torch.manual_seed(seed)
    sn = tnn.utils.spectral_norm if style == "old" else tnn.utils.parametrizations.spectral_norm
    net = tnn.Sequential(OrderedDict(
        conv=_torch_wn(tnn.Conv1d(2, 4, 3, padding=1), style, dim=2),
        bn=tnn.BatchNorm1d(4),
        up=_torch_wn(tnn.ConvTranspose1d(4, 2, 4, stride=2, padding=1), style),
        fc=sn(tnn.Linear(16, 3)),
    ))
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
        for name, p in net.named_parameters():
            if name.endswith(("weight_g", "original0")):  # g != ||v||
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    return net.eval()


class MSNet(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(2, 4, 3, pad_mode="pad", padding=1, has_bias=True), dim=3)
        self.bn = nn.BatchNorm1d(4)
        self.up = weight_norm(nn.Conv1dTranspose(4, 2, 4, stride=2, pad_mode="pad", padding=1, has_bias=True))
        self.fc = spectral_norm(nn.Dense(16, 3))


def _torch_state(net):
    return {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("style", ["old", "new"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_pt_round_trip_keys_and_values_exact(style, suffix, tmp_path):
    reference = torch_net(style)
    torch_file = os.path.join(tmp_path, "reference.pt")
    torch.save(reference.state_dict(), torch_file)
    net = MSNet()
    load_torch_state_dict(net, torch_file)              # our reader on torch.save's file
    path = os.path.join(tmp_path, "model" + suffix)
    written = save_torch_state_dict(net, path, style=style)
    loaded = torch.load(path, weights_only=True)         # torch on our file
    want = _torch_state(reference)
    assert type(loaded) is OrderedDict
    assert list(loaded) == written and sorted(loaded) == sorted(want)
    for key, value in want.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        assert torch.equal(loaded[key], value), key      # bit for bit: copied, never recomputed
    fresh = torch_net(style, seed=9)
    fresh.load_state_dict(loaded)                        # strict: BatchNorm fills num_batches_tracked
    x = torch.randn(2, 2, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), reference(x))
    mapped = torch.load(path, weights_only=True, mmap=True)  # storages read in place from the file
    assert all(torch.equal(mapped[k], v) for k, v in want.items())


def test_nested_checkpoint_loads_as_hifigan_inference_does(tmp_path):
    reference = torch_net("old")
    net = MSNet()
    load_torch_state_dict(net, {k: v.numpy() for k, v in reference.state_dict().items()})
    disc = nn.SequentialCell([nn.Dense(3, 2)])
    path = os.path.join(tmp_path, "g_02500000")
    save_torch_checkpoint(path + ".pt", {"generator": net, "discriminator": disc, "steps": 2500000,
                                         "optim": {"lr": 2e-4, "betas": [0.8, 0.99]}}, style="old")
    ckpt = torch.load(path + ".pt", weights_only=True)
    assert sorted(ckpt) == ["discriminator", "generator", "optim", "steps"]
    assert ckpt["steps"] == 2500000 and ckpt["optim"] == {"lr": 2e-4, "betas": [0.8, 0.99]}
    generator = torch_net("old", seed=5)
    generator.load_state_dict(ckpt["generator"])          # HiFi-GAN's inference.py, word for word
    for key, value in _torch_state(reference).items():
        assert torch.equal(generator.state_dict()[key], value), key
    assert list(ckpt["discriminator"]) == ["0.weight", "0.bias"]
    np.testing.assert_array_equal(ckpt["discriminator"]["0.weight"].numpy(), disc[0].weight.asnumpy())
    # HiFi-GAN's {"generator": state_dict} form from a plain state dict, and our reader on it.
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    save_torch_checkpoint(path + ".pth", {"generator": state})
    back = read_torch_checkpoint(path + ".pth")
    assert list(back) == ["generator"] and list(back["generator"]) == list(state)
    assert all(np.array_equal(back["generator"][k], v) for k, v in state.items())


def test_bfloat16_kept_in_nested_checkpoints(tmp_path):
    # (Parameters of a network: test_torch_io.py::test_bfloat16_parameters_load_and_save_exactly.)
    path = os.path.join(tmp_path, "bf16.pt")
    # Tensors of every kind in a nested checkpoint keep bfloat16: MindSpore, torch, numpy-marked.
    values = torch.tensor([1.5, -2.0, 3.0e38, float("nan")], dtype=torch.bfloat16)
    save_torch_checkpoint(path, {"ms": ms.Tensor(values.float().numpy(), ms.bfloat16), "torch": values,
                                 "np": BFloat16(values.float().numpy())})
    back = torch.load(path, weights_only=True)
    for key in ("ms", "torch", "np"):
        assert back[key].dtype == torch.bfloat16
        assert torch.equal(back[key].view(torch.int16), values.view(torch.int16)), key


def test_every_dtype_and_shape_torch_reads_exactly(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "f64": rng.standard_normal((2, 3)), "f32": rng.standard_normal(5).astype(np.float32),
        "f16": rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float16),
        "i64": rng.integers(-2 ** 62, 2 ** 62, (3,)), "i32": np.arange(-3, 3, dtype=np.int32),
        "i16": np.array([-32768, 32767], np.int16), "i8": np.array([-128, 127], np.int8),
        "u8": np.array([0, 255], np.uint8), "bool": np.array([True, False]),
        "c64": np.array([1 + 2j], np.complex64), "c128": np.array([3 - 4j]),
        "scalar": np.array(2.5, np.float32), "empty": np.zeros((0, 4), np.float32),
        "big_endian": np.arange(4, dtype=">f4"), "strided": np.arange(12.0).reshape(3, 4)[:, ::2],
    }
    path = os.path.join(tmp_path, "all.pt")
    write_torch_zip(path, OrderedDict(arrays))
    back = torch.load(path, weights_only=True)
    assert list(back) == list(arrays)
    for key, array in arrays.items():
        assert back[key].shape == array.shape, key
        np.testing.assert_array_equal(back[key].numpy(), array, err_msg=key)
        assert back[key].numpy().dtype == array.dtype.newbyteorder("="), key
    ours = read_torch_checkpoint(path)
    assert all(np.array_equal(ours[k], a) and ours[k].dtype == a.dtype.newbyteorder("=") for k, a in arrays.items())


def test_zip64_records_read_by_torch_and_us(tmp_path, monkeypatch):
    # Files past 4 GiB need the ZIP64 fields; forcing them on every record tests that path cheaply.
    monkeypatch.setattr(torch_writer, "_ZIP32_MAX", 0)
    state = OrderedDict(a=np.arange(5.0), b=np.ones((2, 2), np.float32))
    path = os.path.join(tmp_path, "zip64.pt")
    write_torch_zip(path, state)
    with open(path, "rb") as f:
        assert f.read(30)[18:26] == b"\xff" * 8       # the first local header defers to ZIP64
    for loaded in (torch.load(path, weights_only=True), torch.load(path, weights_only=True, mmap=True)):
        assert all(np.array_equal(loaded[k].numpy(), v) for k, v in state.items())
    assert all(np.array_equal(read_torch_checkpoint(path)[k], v) for k, v in state.items())


def test_data_aligned_to_64_bytes(tmp_path):
    import zipfile
    path = os.path.join(tmp_path, "a.pt")
    write_torch_zip(path, {f"w{i}": np.ones(i + 1, np.float32) for i in range(5)})
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if "/data/" in info.filename:
                f.seek(info.header_offset + 26)
                name_len, extra_len = np.frombuffer(f.read(4), "<u2")
                assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename


def test_refused_before_anything_is_written(tmp_path):
    path = os.path.join(tmp_path, "x.pt")
    with open(path, "wb") as f:
        f.write(b"old")
    cases = [
        ({"w": np.zeros(2, np.uint16)}, TypeError, r"checkpoint\['w'\]: arrays of dtype uint16 cannot be saved"),
        ({"w": (1, 2)}, TypeError, r"checkpoint\['w'\] is a tuple"),
        ({1: np.zeros(2)}, TypeError, r"checkpoint: keys must be strings, got int 1"),
        ({"\udc80": np.zeros(2)}, ValueError, r"is not valid UTF-8"),
    ]
    for obj, error, message in cases:
        with pytest.raises(error, match=message):
            write_torch_zip(path, obj)
    with pytest.raises(ValueError, match=r"a nested checkpoint is written in torch\.save's format"):
        save_torch_checkpoint(os.path.join(tmp_path, "x.safetensors"), {"generator": {}})
    with pytest.raises(TypeError, match=r"entries\['g'\] is a set"):
        save_torch_checkpoint(path, {"g": {1}})
    assert open(path, "rb").read() == b"old" and sorted(os.listdir(tmp_path)) == ["x.pt"]


def test_unreadable_result_never_replaces_the_old_file(tmp_path, monkeypatch):
    path = os.path.join(tmp_path, "x.pt")
    write_torch_zip(path, {"w": np.ones(2, np.float32)})
    before = open(path, "rb").read()
    # The read-back sees something other than what was saved: the save must stop there.
    monkeypatch.setattr(torch_writer, "_read_shape_tree", lambda obj: "something else")
    with pytest.raises(CheckpointError, match=r"x\.pt: the file written did not read back as the object saved; "
                                              r"the old file \(if any\) was left in place"):
        write_torch_zip(path, {"w": np.zeros(3, np.float32)})
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["x.pt"]
    # A write whose bytes are broken is caught by the reader itself.
    monkeypatch.undo()
    monkeypatch.setattr(torch_writer, "_tensor_bytes", lambda a, b: memoryview(b"\0" * 3))
    with pytest.raises(CheckpointError, match=r"storage record 'archive/data/0' holds 3 bytes, expected 12"):
        write_torch_zip(path, {"w": np.zeros(3, np.float32)})
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["x.pt"]


# --- an older torch -------------------------------------------------------------------------

OLD_TORCH = "2.4.1"
_OLD_SCRIPT = r"""
import json, sys, torch, numpy as np
folder = sys.argv[1]
out = {"version": torch.__version__}
ours = torch.load(folder + "/ours.pt", weights_only=True)
want = np.load(folder + "/want.npz")
out["ours_keys"] = list(ours["generator"])
out["ours_equal"] = all(np.array_equal(ours["generator"][k].float().numpy(), want[k]) for k in want.files)
out["ours_dtypes"] = {k: str(v.dtype) for k, v in ours["generator"].items()}
out["steps"] = ours["steps"]
torch.manual_seed(3)
state = {"conv.weight_g": torch.rand(4, 1, 1), "conv.weight_v": torch.randn(4, 2, 3),
         "lin.weight": torch.randn(3, 2).to(torch.bfloat16), "n": torch.tensor(7)}
torch.save({"generator": state}, folder + "/theirs.pt")
np.savez(folder + "/theirs.npz", **{k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
                                    for k, v in state.items()})
print(json.dumps(out))
"""


def _old_torch_python() -> str:
    """The python of a venv holding torch 2.4.1 (``MS_WEIGHTNORM_OLD_TORCH_VENV``, by default
    .venv-torch-old in the checkout), created when absent: torch's PyPI wheel for Linux is the
    CUDA build, so this downloads about 3 GB and takes about 5 GB of disk (70 s here)."""
    venv = Path(os.environ.get("MS_WEIGHTNORM_OLD_TORCH_VENV", ROOT / ".venv-torch-old"))
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import torch; print(torch.__version__)"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={OLD_TORCH}", "numpy<2"],
                       check=True, timeout=1800)
    return str(python)


def test_older_torch_reads_and_writes(tmp_path):
    python = _old_torch_python()
    reference = torch_net("new")
    net = MSNet()
    load_torch_state_dict(net, {k: v.numpy() for k, v in reference.state_dict().items()})
    state = to_torch_state_dict(net)
    np.savez(tmp_path / "want.npz", **state)
    save_torch_checkpoint(tmp_path / "ours.pt", {"generator": net, "steps": 7})
    proc = subprocess.run([python, "-c", _OLD_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["version"].startswith(OLD_TORCH)
    assert report["ours_keys"] == list(state) and report["ours_equal"] and report["steps"] == 7
    assert set(report["ours_dtypes"].values()) == {"torch.float32"}
    theirs = read_torch_checkpoint(tmp_path / "theirs.pt")["generator"]
    want = np.load(tmp_path / "theirs.npz")
    assert list(theirs) == ["conv.weight_g", "conv.weight_v", "lin.weight", "n"]
    for key in want.files:
        np.testing.assert_array_equal(theirs[key], want[key], err_msg=key)
    into = nn.SequentialCell(OrderedDict(conv=weight_norm(nn.Conv1d(2, 4, 3, has_bias=False)),
                                         lin=nn.Dense(2, 3, has_bias=False, dtype=ms.bfloat16)))
    result = load_torch_state_dict(into, {k: v for k, v in theirs.items() if k != "n"})
    assert result == ([], [])
    np.testing.assert_array_equal(into.lin.weight.astype(ms.float32).asnumpy(), want["lin.weight"])


@pytest.mark.parametrize("anonymous", [True, False])
def test_atomic_verify_sees_the_complete_file_and_can_stop_the_write(tmp_path, monkeypatch, anonymous):
    from ms_weightnorm._checkpoint import atomic
    if not anonymous:  # file systems without O_TMPFILE: a named temporary file from the start
        monkeypatch.setattr(atomic, "_open_anonymous", lambda directory: -1)
    path = str(tmp_path / "f.bin")
    seen = []
    atomic.atomic_write(path, [b"ab", b"c"], verify=lambda p: seen.append(open(p, "rb").read()))
    assert seen == [b"abc"] and open(path, "rb").read() == b"abc"

    def refuse(p):
        raise CheckpointError("no")
    with pytest.raises(CheckpointError, match="^no$"):
        atomic.atomic_write(path, [b"new"], verify=refuse)
    assert open(path, "rb").read() == b"abc" and os.listdir(tmp_path) == ["f.bin"]


def test_nested_checkpoint_refuses_a_bad_style_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"style must be 'new' \(parametrizations\.<name>\.original0/1\) or 'old'"):
        save_torch_checkpoint(tmp_path / "x.pt", {"steps": 1}, style="middle")
    assert os.listdir(tmp_path) == []
