"""PyTorch checkpoints in and out, MindSpore checkpoints, MINDIR export.

PyTorch (2.13.0 CPU) is the reference here; the library itself never imports it.
"""
import errno
import inspect
import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import threading
import warnings
import zipfile
from collections import OrderedDict

import mindspore as ms
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from mindspore import nn

from ms_weightnorm import is_weight_normed, remove_all_weight_norm, weight_norm
from ms_weightnorm._compat import mindspore_version
from ms_weightnorm.torch_io import (
    CheckpointError,
    LoadResult,
    UnsafeCheckpointError,
    load_torch_state_dict,
    read_torch_checkpoint,
    save_torch_state_dict,
    to_torch_state_dict,
)
from ms_weightnorm._checkpoint import write_safetensors

tnn = torch.nn


# --- twins ----------------------------------------------------------------------------------

def _torch_wn(module, style, dim=0):
    if style == "old":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return tnn.utils.weight_norm(module, dim=dim)
    if style == "new":
        return tnn.utils.parametrizations.weight_norm(module, dim=dim)
    return module


def torch_conv_net(style, conv_dim=0, seed=0):
    """Conv1d -> BatchNorm1d -> ConvTranspose1d, weight norm in ``style`` ('old', 'new', 'plain')."""
    torch.manual_seed(seed)
    net = tnn.Sequential(OrderedDict(
        conv=_torch_wn(tnn.Conv1d(2, 4, 3, padding=1), style, conv_dim),
        bn=tnn.BatchNorm1d(4),
        up=_torch_wn(tnn.ConvTranspose1d(4, 2, 4, stride=2, padding=1), style),
    ))
    with torch.no_grad():
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.5, 0.5)
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
        net.bn.num_batches_tracked.fill_(7)
        for name, p in net.named_parameters():
            if name.endswith(("weight_g", "original0")):  # g != ||v||, so folding is really tested
                p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    return net.eval()


class MSConvNet(nn.Cell):
    def __init__(self, conv_dim=0, up_dim=0, wn=True):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, pad_mode="pad", padding=1, has_bias=True)
        self.bn = nn.BatchNorm1d(4)
        self.up = nn.Conv1dTranspose(4, 2, 4, stride=2, pad_mode="pad", padding=1, has_bias=True)
        if wn:
            weight_norm(self.conv, dim=conv_dim)
            weight_norm(self.up, dim=up_dim)
        self.set_train(False)

    def construct(self, x):
        return self.up(self.bn(self.conv(x)))


X = np.random.default_rng(1).standard_normal((2, 2, 8)).astype(np.float32)


def torch_out(net, x=X):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def ms_params(net):
    return {name: p.asnumpy().copy() for name, p in net.parameters_and_names()}


def write_source(kind, state, tmp_path):
    """``state`` (a torch state dict) as the given kind of source."""
    if kind == "dict":
        return state
    if kind == "numpy":
        return {k: v.numpy() for k, v in state.items()}
    if kind == "pt":
        path = os.path.join(tmp_path, "model.pt")
        torch.save(state, path)
        return path
    if kind == "safetensors":
        path = os.path.join(tmp_path, "model.safetensors")
        safetensors.torch.save_file(dict(state), path)
        return path
    raise AssertionError(kind)


# --- loading: styles x sources x directions --------------------------------------------------

@pytest.mark.parametrize("source", ["safetensors", "pt", "dict", "numpy"])
@pytest.mark.parametrize("style", ["old", "new", "plain"])
@pytest.mark.parametrize("target_wn", [True, False], ids=["to_wn", "to_plain"])
def test_load_every_style_source_and_direction(style, source, target_wn, tmp_path):
    reference = torch_conv_net(style)
    net = MSConvNet(wn=target_wn)
    result = load_torch_state_dict(net, write_source(source, reference.state_dict(), tmp_path))
    assert result == LoadResult([], [])
    np.testing.assert_allclose(net(ms.Tensor(X)).asnumpy(), torch_out(reference), rtol=1e-4, atol=1e-6)
    assert is_weight_normed(net.conv) == target_wn
    assert net.bn.moving_mean.asnumpy().tolist() == reference.bn.running_mean.numpy().tolist()
    assert net.bn.gamma.asnumpy().tolist() == reference.bn.weight.detach().numpy().tolist()


@pytest.mark.parametrize("style", ["old", "new"])
def test_same_dim_weight_norm_is_copied_exactly_in_mindspore_layout(style):
    reference = torch_conv_net(style)
    state = reference.state_dict()
    net = MSConvNet()
    load_torch_state_dict(net, state)
    g_key, v_key = (("conv.weight_g", "conv.weight_v") if style == "old" else
                    ("conv.parametrizations.weight.original0", "conv.parametrizations.weight.original1"))
    assert net.conv.weight_g.shape == (4, 1, 1, 1) and net.conv.weight_v.shape == (4, 2, 1, 3)
    np.testing.assert_array_equal(net.conv.weight_g.asnumpy()[:, :, 0, :], state[g_key].numpy())
    np.testing.assert_array_equal(net.conv.weight_v.asnumpy()[:, :, 0, :], state[v_key].numpy())
    # ConvTranspose1d: (in, out, k) -> (in, out, 1, k), g on the in-channel axis.
    assert net.up.weight_v.shape == (4, 2, 1, 4) and net.up.weight_g.shape == (4, 1, 1, 1)


@pytest.mark.parametrize("style", ["old", "new"])
def test_torch_dim2_on_conv1d_arrives_on_axis3(style):
    reference = torch_conv_net(style, conv_dim=2)
    net = MSConvNet(conv_dim=3)
    load_torch_state_dict(net, reference.state_dict())
    g = dict(reference.named_parameters())["conv.weight_g" if style == "old" else
                                           "conv.parametrizations.weight.original0"]
    assert tuple(g.shape) == (1, 1, 3) and net.conv.weight_g.shape == (1, 1, 1, 3)
    np.testing.assert_array_equal(net.conv.weight_g.asnumpy().reshape(-1), g.detach().numpy().reshape(-1))
    np.testing.assert_allclose(net(ms.Tensor(X)).asnumpy(), torch_out(reference), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("torch_dim,ms_dim", [(2, 0), (0, 3), (0, None), (None, 0)])
def test_different_dims_are_folded_and_split_again(torch_dim, ms_dim):
    reference = torch_conv_net("old", conv_dim=torch_dim)
    net = MSConvNet(conv_dim=ms_dim)
    load_torch_state_dict(net, reference.state_dict())
    np.testing.assert_allclose(net(ms.Tensor(X)).asnumpy(), torch_out(reference), rtol=1e-4, atol=1e-6)
    expected_g = (1, 1, 1, 3) if ms_dim == 3 else () if ms_dim is None else (4, 1, 1, 1)
    assert net.conv.weight_g.shape == expected_g


def test_load_into_a_net_that_already_ran_in_graph_mode(mode):
    reference = torch_conv_net("new")
    net = MSConvNet()
    before = net(ms.Tensor(X)).asnumpy()
    load_torch_state_dict(net, reference.state_dict())
    after = net(ms.Tensor(X)).asnumpy()
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, torch_out(reference), rtol=1e-4, atol=1e-6)


class JitConvNet(MSConvNet):
    @ms.jit
    def construct(self, x):
        return self.up(self.bn(self.conv(x)))


def test_load_is_seen_by_an_ms_jit_construct_that_already_ran():
    # An ms.jit graph keeps Parameter values it compiled with unless its cache is dropped.
    reference = torch_conv_net("old")
    net = JitConvNet()
    before = net(ms.Tensor(X)).asnumpy()
    load_torch_state_dict(net, reference.state_dict())
    after = net(ms.Tensor(X)).asnumpy()
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, torch_out(reference), rtol=1e-4, atol=1e-6)


class TorchTextNet(tnn.Module):
    def __init__(self, style):
        super().__init__()
        self.emb = _torch_wn(tnn.Embedding(10, 4), style)
        self.norm = tnn.LayerNorm(4)
        self.fc = _torch_wn(tnn.Linear(4, 3), style)
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, ids):
        return self.fc(self.norm(self.emb(ids)))


class MSTextNet(nn.Cell):
    def __init__(self, wn):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm((4,), begin_norm_axis=-1, begin_params_axis=-1, epsilon=1e-5)
        self.fc = nn.Dense(4, 3)
        if wn:
            weight_norm(self.emb, "embedding_table")
            weight_norm(self.fc)

    def construct(self, ids):
        return self.fc(self.norm(self.emb(ids)))


@pytest.mark.parametrize("style,wn", [("plain", False), ("new", True), ("old", True), ("new", False)])
def test_embedding_and_layernorm_renames(style, wn):
    torch.manual_seed(3)
    reference = TorchTextNet(style).eval()
    net = MSTextNet(wn)
    assert load_torch_state_dict(net, reference.state_dict()) == ([], [])
    ids = np.array([[1, 2, 9], [0, 5, 5]], np.int32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids).long()).numpy()
    np.testing.assert_allclose(net(ms.Tensor(ids)).asnumpy(), expected, rtol=1e-4, atol=1e-6)
    assert net.norm.gamma.asnumpy().tolist() == reference.norm.weight.detach().numpy().tolist()


def _MS_INSTANCE_NORM():
    return nn.InstanceNorm2d(3)


@pytest.mark.parametrize("torch_cls,ms_layer", [
    (lambda: tnn.BatchNorm2d(3), lambda: nn.BatchNorm2d(3)),
    (lambda: tnn.InstanceNorm2d(3, affine=True, track_running_stats=True), _MS_INSTANCE_NORM),
    (lambda: tnn.GroupNorm(1, 3), lambda: nn.GroupNorm(1, 3)),
], ids=["batchnorm2d", "instancenorm2d", "groupnorm"])
def test_norm_layer_renames(torch_cls, ms_layer, tmp_path):
    if ms_layer is _MS_INSTANCE_NORM and mindspore_version() < (2, 7, 1):
        # MindSpore 2.7.0's own nn.InstanceNorm2d cannot be built (it calls the missing
        # ops.InstanceNorm; fixed in 2.7.1): nothing to load into. Pin that down instead.
        with pytest.raises(AttributeError, match="InstanceNorm"):
            ms_layer()
        return
    torch.manual_seed(5)
    layer = torch_cls()
    with torch.no_grad():
        for value in layer.state_dict().values():
            if value.is_floating_point():
                value.uniform_(0.5, 1.5)
    state = tnn.Sequential(OrderedDict(norm=layer)).state_dict()
    net = nn.SequentialCell(OrderedDict(norm=ms_layer()))
    assert load_torch_state_dict(net, state) == ([], [])
    names = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            mine = getattr(net.norm, names[key.split(".")[-1]])
            np.testing.assert_array_equal(mine.asnumpy(), value.numpy(), err_msg=key)
    path = os.path.join(tmp_path, "norm.safetensors")
    save_torch_state_dict(net, path)
    fresh = tnn.Sequential(OrderedDict(norm=torch_cls()))
    fresh.load_state_dict(safetensors.torch.load_file(path))
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_bfloat16_parameters_load_and_save_exactly(tmp_path, suffix):
    torch.manual_seed(4)
    reference = tnn.Sequential(tnn.utils.parametrizations.weight_norm(tnn.Linear(3, 2))).to(torch.bfloat16)
    path = os.path.join(tmp_path, "bf16.pt")
    torch.save(reference.state_dict(), path)
    net = nn.SequentialCell([weight_norm(nn.Dense(3, 2, dtype=ms.bfloat16))])
    load_torch_state_dict(net, path)
    assert net[0].weight_v.dtype == ms.bfloat16
    out = os.path.join(tmp_path, "back" + suffix)
    save_torch_state_dict(net, out)
    back = safetensors.torch.load_file(out) if suffix == ".safetensors" else torch.load(out, weights_only=True)
    for key, value in reference.state_dict().items():
        assert back[key].dtype == torch.bfloat16 and torch.equal(back[key], value), key


# --- saving -----------------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["old", "new"])
@pytest.mark.parametrize("conv_dim", [0, 2])
def test_torch_to_mindspore_to_torch_round_trip_is_exact(style, conv_dim, tmp_path):
    reference = torch_conv_net(style, conv_dim=conv_dim)
    net = MSConvNet(conv_dim=3 if conv_dim == 2 else 0)
    load_torch_state_dict(net, reference.state_dict())
    path = os.path.join(tmp_path, "back.safetensors")
    keys = save_torch_state_dict(net, path, style=style)
    copy = torch_conv_net(style, conv_dim=conv_dim, seed=1)
    copy.load_state_dict(safetensors.torch.load_file(path))  # strict: every key, every shape
    assert sorted(keys) == sorted(k for k in reference.state_dict() if not k.endswith("num_batches_tracked"))
    for key, value in reference.state_dict().items():
        if not key.endswith("num_batches_tracked"):  # not stored by MindSpore; torch keeps its own
            assert torch.equal(copy.state_dict()[key], value), key
    np.testing.assert_array_equal(torch_out(copy), torch_out(reference))
    # The file is plain safetensors: the reference reader sees the same arrays.
    plain = safetensors.numpy.load_file(path)
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in to_torch_state_dict(net, style).items()}


def test_save_other_style_than_loaded_and_plain_net(tmp_path):
    reference = torch_conv_net("old")
    net = MSConvNet()
    load_torch_state_dict(net, reference.state_dict())
    path = os.path.join(tmp_path, "new.safetensors")
    save_torch_state_dict(net, path, style="new")
    as_new = torch_conv_net("new", seed=2)
    as_new.load_state_dict(safetensors.torch.load_file(path))
    np.testing.assert_allclose(torch_out(as_new), torch_out(reference), rtol=1e-5, atol=1e-7)

    remove_all_weight_norm(net)
    save_torch_state_dict(net, path)
    plain = torch_conv_net("plain", seed=2)
    plain.load_state_dict(safetensors.torch.load_file(path))
    np.testing.assert_allclose(torch_out(plain), torch_out(reference), rtol=1e-4, atol=1e-6)


def test_save_rejects_bad_style_and_name(tmp_path):
    with pytest.raises(ValueError, match="style must be 'new'"):
        save_torch_state_dict(MSConvNet(), os.path.join(tmp_path, "a.safetensors"), style="middle")
    with pytest.raises(ValueError, match=r"name the file \.pt, \.pth or \.bin \(torch\.save's format\) or \.safetensors"):
        save_torch_state_dict(MSConvNet(), os.path.join(tmp_path, "a.ckpt"))
    assert os.listdir(tmp_path) == []


# --- strictness -------------------------------------------------------------------------------

def _broken_state():
    state = {k: v.numpy().copy() for k, v in torch_conv_net("new").state_dict().items()}
    del state["bn.running_var"]                                   # missing
    state["head.weight"] = np.zeros((2, 2), np.float32)           # unexpected
    state["up.bias"] = np.zeros(5, np.float32)                    # wrong shape
    state["conv.parametrizations.weight.original1"] = np.zeros((4, 3, 3), np.float32)  # wrong v shape
    return state


def test_strict_lists_everything_and_loads_nothing():
    net = MSConvNet()
    before = ms_params(net)
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(net, _broken_state())
    message = str(info.value)
    for needle in ["nothing was loaded", "bn.moving_variance", "head.weight", "up.bias",
                   "conv.parametrizations.weight.original1", "(4, 3, 3)", "strict=False"]:
        assert needle in message, needle
    after = ms_params(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_non_strict_loads_what_fits_and_returns_the_rest():
    net = MSConvNet()
    state = _broken_state()
    missing, unexpected = load_torch_state_dict(net, state, strict=False)
    assert sorted(missing) == ["bn.moving_variance", "conv.weight_g", "conv.weight_v", "up.bias"]
    assert sorted(unexpected) == ["conv.parametrizations.weight.original0",
                                  "conv.parametrizations.weight.original1", "head.weight", "up.bias"]
    np.testing.assert_array_equal(net.bn.moving_mean.asnumpy(), state["bn.running_mean"])
    np.testing.assert_array_equal(net.up.weight_v.asnumpy()[:, :, 0, :],
                                  state["up.parametrizations.weight.original1"])


def test_two_styles_of_one_weight_are_ambiguous():
    state = dict(torch_conv_net("new").state_dict())
    state["conv.weight_g"] = state["conv.parametrizations.weight.original0"]
    state["conv.weight_v"] = state["conv.parametrizations.weight.original1"]
    with pytest.raises(ValueError, match="more than once"):
        load_torch_state_dict(MSConvNet(), state)


def test_nested_training_checkpoint_gets_a_clear_error(tmp_path):
    path = os.path.join(tmp_path, "g_00000100")  # HiFi-GAN's checkpoints have no extension
    torch.save({"generator": torch_conv_net("old").state_dict(), "steps": 5}, path)
    with pytest.raises(TypeError, match=r"read_torch_checkpoint\(path\)\['generator'\]"):
        load_torch_state_dict(MSConvNet(), path)
    loaded = read_torch_checkpoint(path)
    assert loaded["steps"] == 5
    assert load_torch_state_dict(MSConvNet(), loaded["generator"]) == ([], [])


# --- the .pt reader without torch, and its safety ---------------------------------------------

_NO_TORCH = """
import sys
sys.modules["torch"] = None  # any "import torch" now raises ImportError
import numpy as np
import mindspore as ms
from mindspore import nn
from ms_weightnorm import weight_norm
from ms_weightnorm.torch_io import load_torch_state_dict, read_torch_checkpoint

{net_source}

state = read_torch_checkpoint({full!r})
expected = np.load({npz!r})
assert sorted(state) == sorted(expected.files), (sorted(state), expected.files)
for key in expected.files:
    assert state[key].dtype == expected[key].dtype, (key, state[key].dtype, expected[key].dtype)
    assert np.array_equal(state[key], expected[key]), key
net = MSConvNet()
assert load_torch_state_dict(net, {clean!r}) == ([], [])
np.save({out!r}, net(ms.Tensor(np.load({x!r}))).asnumpy())
assert sys.modules["torch"] is None
print("ok")
"""


def test_pt_loads_with_torch_absent(tmp_path):
    reference = torch_conv_net("new")
    clean = os.path.join(tmp_path, "model.pt")
    torch.save(reference.state_dict(), clean)
    full_state = dict(reference.state_dict())
    full_state["half"] = torch.arange(6, dtype=torch.float16).reshape(2, 3).t()  # a strided view
    full_state["brain"] = torch.tensor([1.5, -2.0, 3.0e38], dtype=torch.bfloat16)
    full_state["flag"] = torch.tensor([True, False])
    full_state["wide"] = torch.tensor([7, 65535], dtype=torch.int32).to(torch.uint16)  # rebuild_tensor_v3
    full = os.path.join(tmp_path, "full.pth")
    torch.save(full_state, full)
    expected = {k: v.numpy() for k, v in full_state.items() if v.dtype not in (torch.bfloat16, torch.uint16)}
    expected["brain"] = full_state["brain"].float().numpy()
    expected["wide"] = np.array([7, 65535], np.uint16)
    npz = os.path.join(tmp_path, "expected.npz")
    np.savez(npz, **expected)
    x, out = os.path.join(tmp_path, "x.npy"), os.path.join(tmp_path, "out.npy")
    np.save(x, X)
    script = _NO_TORCH.format(net_source=inspect.getsource(MSConvNet), full=full, npz=npz, clean=clean,
                              x=x, out=out)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), torch_out(reference), rtol=1e-4, atol=1e-6)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_zip(path, payload: bytes):
    """A file laid out like torch.save's zip format around an arbitrary pickle."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = os.path.join(tmp_path, "pwned")
    # As torch.save would write it: a real tensor next to an object whose reduce calls os.system.
    real = os.path.join(tmp_path, "evil.pt")
    torch.save({"w": torch.ones(2), "evil": _Evil(marker)}, real)
    # And a hand-made one, with nothing torch-like in it.
    crafted = os.path.join(tmp_path, "crafted.pth")
    _torch_zip(crafted, pickle.dumps(OrderedDict(evil=_Evil(marker)), protocol=2))
    for path in (real, crafted):
        with pytest.raises(UnsafeCheckpointError, match=r"system.*Nothing from the file was run"):
            load_torch_state_dict(MSConvNet(), path)
        with pytest.raises(UnsafeCheckpointError):
            read_torch_checkpoint(path)
    assert not os.path.exists(marker)
    # The attack is real: the standard unpickler would have run it.
    with zipfile.ZipFile(crafted) as zf:
        pickle.loads(zf.read("archive/data.pkl"))
    assert os.path.exists(marker)


def test_crafted_tensor_bounds_and_setstate_are_refused(tmp_path):
    good = os.path.join(tmp_path, "good.pt")
    torch.save({"w": torch.ones(4)}, good)
    with zipfile.ZipFile(good) as zf:
        names = {n: zf.read(n) for n in zf.namelist()}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    # Size 4 with stride 1000 would read far outside the 16-byte storage.
    assert names[pkl].count(b"K\x01\x85") == 1  # the stride (1,) of the one tensor
    bad = names[pkl].replace(b"K\x01\x85", b"M\xe8\x03\x85")
    path = os.path.join(tmp_path, "bounds.pt")
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in names.items():
            zf.writestr(n, bad if n == pkl else data)
    with pytest.raises(CheckpointError, match="reaches element"):
        read_torch_checkpoint(path)
    # BUILD (setstate) on anything but the state dict's OrderedDict is refused.
    build = os.path.join(tmp_path, "build.pt")
    _torch_zip(build, b"\x80\x02]q\x00}q\x01b.")  # [] with BUILD({}) applied to the list
    with pytest.raises(UnsafeCheckpointError, match="sets the state of a list"):
        read_torch_checkpoint(build)


def test_legacy_format_and_unknown_files_get_clear_errors(tmp_path):
    legacy = os.path.join(tmp_path, "old.pt")
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"legacy.*torch\.save\(torch\.load\(path\)"):
        load_torch_state_dict(MSConvNet(), legacy)
    other = os.path.join(tmp_path, "notes.txt")
    with open(other, "w") as f:
        f.write("hello")
    with pytest.raises(ValueError, match="neither a safetensors file nor a torch.save file"):
        load_torch_state_dict(MSConvNet(), other)
    with pytest.raises(FileNotFoundError):
        load_torch_state_dict(MSConvNet(), os.path.join(tmp_path, "nope.pt"))
    # A bare pickle (no zip around it) is not unpickled at all.
    marker = os.path.join(tmp_path, "pwned")
    bare = os.path.join(tmp_path, "bare.bin")
    with open(bare, "wb") as f:
        pickle.dump({"w": _Evil(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match="bare pickle"):
        load_torch_state_dict(MSConvNet(), bare)
    assert not os.path.exists(marker)


# --- MindSpore's own checkpoints and export ---------------------------------------------------

def _wn_dense_net(before_attach):
    conv = nn.Conv1d(2, 3, 3, pad_mode="pad", padding=1, has_bias=True)
    dense = nn.Dense(24, 4)
    if before_attach:
        weight_norm(conv)
        weight_norm(dense)
    net = nn.SequentialCell([conv, nn.Flatten(), dense])
    if not before_attach:
        weight_norm(net[0])
        weight_norm(net[2])
    return net


@pytest.mark.parametrize("before_attach", [True, False], ids=["wn_before_attach", "wn_after_attach"])
def test_mindspore_checkpoint_round_trip(before_attach, mode, tmp_path):
    x = ms.Tensor(X)
    source = _wn_dense_net(before_attach)
    path = os.path.join(tmp_path, "net.ckpt")
    ms.save_checkpoint(source, path)
    target = _wn_dense_net(before_attach)
    not_loaded = ms.load_param_into_net(target, ms.load_checkpoint(path))
    assert list(not_loaded[0]) == [] and list(not_loaded[1]) == []
    assert sorted(ms.load_checkpoint(path)) == ["0.bias", "0.weight_g", "0.weight_v",
                                                "2.bias", "2.weight_g", "2.weight_v"]
    np.testing.assert_array_equal(target(x).asnumpy(), source(x).asnumpy())


@pytest.mark.parametrize("remove", [True, False], ids=["folded", "weight_norm_on"])
def test_mindir_export(remove, tmp_path):
    x = ms.Tensor(X)
    net = _wn_dense_net(True)
    expected = net(x).asnumpy()
    if remove:
        remove_all_weight_norm(net)
    stem = os.path.join(tmp_path, "net")
    ms.export(net, x, file_name=stem, file_format="MINDIR")
    graph = nn.GraphCell(ms.load(stem + ".mindir"))
    names = sorted(p.name for p in graph.get_parameters())
    if remove:
        assert names == ["0.bias", "0.weight", "2.bias", "2.weight"]
    else:
        assert names == ["0.bias", "0.weight_g", "0.weight_v", "2.bias", "2.weight_g", "2.weight_v"]
    np.testing.assert_allclose(graph(x).asnumpy(), expected, rtol=1e-6, atol=1e-7)


# --- tied Parameters --------------------------------------------------------------------------

class MSTied(nn.Cell):
    """An output layer sharing the embedding's table, as language models do."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Dense(4, 10, has_bias=False)
        self.head.weight = self.embed.embedding_table

    def construct(self, ids):
        return self.head(self.embed(ids))


class TorchTied(tnn.Module):
    def __init__(self):
        super().__init__()
        self.embed = tnn.Embedding(10, 4)
        self.head = tnn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.embed(ids))


IDS = np.array([[1, 2, 9], [0, 5, 5]], np.int32)


@pytest.mark.parametrize("keys", ["both", "embed_only", "head_only"])
def test_tied_parameters_load_from_either_or_both_keys(keys, tmp_path):
    torch.manual_seed(6)
    reference = TorchTied().eval()
    state = dict(reference.state_dict())            # torch lists a tied weight under both names
    assert sorted(state) == ["embed.weight", "head.weight"]
    if keys != "both":
        del state["head.weight" if keys == "embed_only" else "embed.weight"]  # as deduplicating savers do
    net = MSTied()
    # torch.save keeps the tie as one storage under two tensors; safetensors needs separate copies.
    source = write_source("pt", state, tmp_path) if keys == "both" else write_source(
        "safetensors", {k: v.clone() for k, v in state.items()}, tmp_path)
    assert load_torch_state_dict(net, source) == LoadResult([], [])
    assert net.head.weight is net.embed.embedding_table  # still tied
    np.testing.assert_array_equal(net.embed.embedding_table.asnumpy(), reference.embed.weight.detach().numpy())
    with torch.no_grad():
        expected = reference(torch.from_numpy(IDS).long()).numpy()
    np.testing.assert_allclose(net(ms.Tensor(IDS)).asnumpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strict", [True, False])
def test_tied_parameters_with_different_values_are_refused(strict):
    state = {"embed.weight": np.ones((10, 4), np.float32), "head.weight": np.full((10, 4), 2.0, np.float32)}
    net = MSTied()
    before = ms_params(net)
    with pytest.raises(ValueError, match=r"different values: 'embed.weight' and 'head.weight'"):
        load_torch_state_dict(net, state, strict=strict)
    after = ms_params(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # Equal values, NaN included, are one value.
    state["head.weight"] = state["embed.weight"].copy()
    state["embed.weight"][0, 0] = state["head.weight"][0, 0] = np.nan
    assert load_torch_state_dict(net, state, strict=strict) == ([], [])
    assert np.isnan(net.head.weight.asnumpy()[0, 0])


def test_tied_parameter_missing_everywhere_is_reported_under_both_paths():
    missing, unexpected = load_torch_state_dict(MSTied(), {}, strict=False)
    assert sorted(missing) == ["embed.embedding_table", "head.weight"] and unexpected == []


# --- reading: errors, laziness, safetensors through the reference validator ------------------

def test_fifo_and_directory_are_refused_without_blocking(tmp_path):
    fifo = str(tmp_path / "pipe.pt")
    os.mkfifo(fifo)
    for path in (fifo, str(tmp_path)):
        with pytest.raises(CheckpointError, match="not a regular file"):
            load_torch_state_dict(MSConvNet(), path)
        with pytest.raises(CheckpointError, match="not a regular file"):
            read_torch_checkpoint(path)


def test_safetensors_bf16_and_offsets_out_of_key_order(tmp_path):
    # Data order differs from key order: offsets come from safetensors' validated header.
    import json
    import struct
    header = {"z": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "a": {"dtype": "BF16", "shape": [3], "data_offsets": [8, 14]},
              "m": {"dtype": "I64", "shape": [1], "data_offsets": [14, 22]}}
    text = json.dumps(header).encode()
    data = np.float32([1.5, -3]).tobytes() + np.uint16([0x3FC0, 0xC000, 0x7F80]).tobytes() + np.int64([-7]).tobytes()
    path = str(tmp_path / "order.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    got = read_torch_checkpoint(path)
    ref = safetensors.torch.load_file(path)
    assert got["z"].tolist() == ref["z"].tolist() == [1.5, -3.0]
    assert got["a"].dtype == np.float32 and got["a"].tolist() == ref["a"].float().tolist() == [1.5, -2.0, np.inf]
    assert got["m"].tolist() == ref["m"].tolist() == [-7]
    assert not got["z"].flags.writeable  # a view of the memory-mapped file


def test_loading_a_big_file_reads_only_what_the_network_needs(tmp_path):
    # 256 MiB of tensors the network does not use, and the two it does: the loader's peak
    # memory stays near MindSpore's own, because unused tensors are never read (memory-mapped).
    big = {f"unused{i}": torch.zeros(16, 1 << 20) for i in range(4)}
    state = {"0.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "0.bias": torch.ones(3), **big}
    paths = {"pt": str(tmp_path / "big.pt"), "st": str(tmp_path / "big.safetensors")}
    torch.save(state, paths["pt"])
    safetensors.torch.save_file(state, paths["st"])
    script = textwrap.dedent(f"""
        import json
        from mindspore import nn
        from ms_weightnorm.torch_io import load_torch_state_dict
        def hwm():
            with open("/proc/self/status") as f:
                return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
        out = {{}}
        for kind, path in {paths!r}.items():
            net = nn.SequentialCell([nn.Dense(4, 3)])
            before = hwm()
            missing, unexpected = load_torch_state_dict(net, path, strict=False)
            out[kind] = [hwm() - before, missing, len(unexpected), net[0].weight.asnumpy().tolist()]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for kind, (grown_mb, missing, unexpected, weight) in out.items():
        assert missing == [] and unexpected == 4 and weight == np.arange(12).reshape(3, 4).tolist(), kind
        assert grown_mb < 64, (kind, grown_mb)  # the unused 256 MiB were never read


# --- atomic saves -----------------------------------------------------------------------------

def _writer_payloads(n, size=1 << 18):
    return [{"w": np.full(size, i, np.float32), "tag": np.array([i], np.int64)} for i in range(n)]


def test_concurrent_thread_saves_leave_one_whole_file(tmp_path):
    path = str(tmp_path / "model.safetensors")
    payloads = _writer_payloads(6)
    expected = []
    for i, payload in enumerate(payloads):  # each writer's whole file, written alone
        alone = str(tmp_path / f"alone{i}.safetensors")
        write_safetensors(alone, payload)
        expected.append(open(alone, "rb").read())
    errors = []
    for _ in range(10):
        barrier = threading.Barrier(len(payloads))

        def run(payload):
            barrier.wait()
            try:
                write_safetensors(path, payload)
            except BaseException as err:  # collected: every writer must succeed
                errors.append(err)

        threads = [threading.Thread(target=run, args=(p,)) for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert open(path, "rb").read() in expected
        assert sorted(os.listdir(tmp_path)) == sorted([f"alone{i}.safetensors" for i in range(6)] + ["model.safetensors"])


def test_concurrent_process_saves_leave_one_whole_file(tmp_path):
    path = str(tmp_path / "model.safetensors")
    reader = os.path.dirname(ms_weightnorm_file())
    script = textwrap.dedent(f"""
        import importlib.util, sys, numpy as np
        spec = importlib.util.spec_from_file_location("_w", {reader!r} + "/__init__.py",
                                                      submodule_search_locations=[{reader!r}])
        m = importlib.util.module_from_spec(spec); sys.modules["_w"] = m; spec.loader.exec_module(m)
        i = int(sys.argv[1])
        for _ in range(20):
            m.write_safetensors({path!r}, {{"w": np.full(1 << 18, i, np.float32)}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stderr=subprocess.PIPE) for i in range(4)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    got = safetensors.numpy.load_file(path)["w"]
    assert got.shape == (1 << 18,) and got.min() == got.max() and got[0] in (0, 1, 2, 3)
    assert os.listdir(tmp_path) == ["model.safetensors"]


def ms_weightnorm_file():
    import ms_weightnorm._checkpoint as module
    return module.__file__


def test_planted_symlinks_cannot_redirect_a_save(tmp_path, monkeypatch):
    import secrets as secrets_module
    from ms_weightnorm._checkpoint import atomic
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = str(tmp_path / "model.safetensors")
    # The old predictable temporary name, and the next "random" name made predictable.
    os.symlink(victim, f"{path}.tmp{os.getpid()}")
    os.symlink(victim, str(tmp_path / ".model.safetensors.guessed.tmp"))
    tokens = iter(["guessed", "fresh"])
    monkeypatch.setattr(secrets_module, "token_hex", lambda n: next(tokens))
    assert atomic.secrets is secrets_module
    write_safetensors(path, {"w": np.ones(3, np.float32)})
    assert victim.read_bytes() == b"precious"
    assert safetensors.numpy.load_file(path)["w"].tolist() == [1.0, 1.0, 1.0]
    assert not os.path.islink(path)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_file_gets_a_new_files_permissions(umask, tmp_path):
    path = str(tmp_path / "m.safetensors")
    old = os.umask(umask)
    try:
        save_torch_state_dict(nn.SequentialCell([nn.Dense(2, 3)]), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "m.safetensors")
    write_safetensors(path, {"w": np.ones(3, np.float32)})
    old = open(path, "rb").read()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space") as info:
        save_torch_state_dict(nn.SequentialCell([nn.Dense(2, 3)]), path)
    assert info.value.filename == path and path in str(info.value)
    monkeypatch.undo()
    assert open(path, "rb").read() == old and os.listdir(tmp_path) == ["m.safetensors"]
    # A real write failure: the file size limit (what a full disk looks like to write()).
    reader = os.path.dirname(ms_weightnorm_file())
    script = textwrap.dedent(f"""
        import importlib.util, resource, signal, sys, numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        spec = importlib.util.spec_from_file_location("_w", {reader!r} + "/__init__.py",
                                                      submodule_search_locations=[{reader!r}])
        m = importlib.util.module_from_spec(spec); sys.modules["_w"] = m; spec.loader.exec_module(m)
        try:
            m.write_safetensors({path!r}, {{"w": np.ones(1 << 16, np.float32)}})
        except OSError as err:
            print("refused", err.errno, err.filename, str(err))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    # EFBIG comes from write(), which names no file: the error carries the target's path.
    assert done.stdout.strip().startswith(f"refused {errno.EFBIG} {path} "), done.stdout + done.stderr[-2000:]
    assert path in done.stdout.split(" ", 3)[3]
    assert open(path, "rb").read() == old and os.listdir(tmp_path) == ["m.safetensors"]


# --- values: what is cast silently and what is refused ------------------------------------------

class _Weights(nn.Cell):
    """A weight (1, 2) and a bias (1,) of ``dtype``, zeros (set_data would keep float32)."""

    def __init__(self, dtype=ms.float32):
        super().__init__()
        self.weight = ms.Parameter(ms.Tensor(np.zeros((1, 2), np.float32), dtype), name="weight")
        self.bias = ms.Parameter(ms.Tensor(np.zeros(1, np.float32), dtype), name="bias")


def _dense_net(dtype=ms.float32):
    net = _Weights(dtype)
    assert net.weight.dtype == dtype
    return net


@pytest.mark.parametrize("strict", [True, False])
def test_complex_into_a_real_parameter_is_refused(strict, tmp_path):
    net = _dense_net()
    state = {"weight": np.array([[1 + 2j, 3 - 1j]], np.complex64), "bias": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match="checkpoint 'weight' is complex") as info:
        load_torch_state_dict(net, state, strict=strict)
    assert "nothing was loaded" in str(info.value)
    assert np.all(net.weight.asnumpy() == 0)
    # The same from a torch.save file (PyTorch itself only warns and drops the imaginary part).
    path = str(tmp_path / "c.pt")
    torch.save({"weight": torch.tensor([[1 + 2j, 3 - 1j]]), "bias": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="is complex"):
        load_torch_state_dict(net, path, strict=strict)
    # ... and into a weight-normed cell, where the value is folded first.
    wn_net = nn.SequentialCell([weight_norm(nn.Dense(2, 1))])
    with pytest.raises(ValueError, match="is complex"):
        load_torch_state_dict(wn_net, {"0." + k: v for k, v in state.items()}, strict=strict)


@pytest.mark.parametrize("dtype,ok,bad", [
    # float16: max 65504; a value rounds to inf from 65504 + 16 (half its last place) on.
    (ms.float16, [65504.0, 65519.99, -65519.99], [65520.0, -65520.0, 1e6]),
    (ms.float32, [3.4028234663852886e38, 3.4028235677973366e38 - 1e23], [3.4028235677973366e38, 1e39]),
    # bfloat16 max (2 - 2**-7) * 2**127; inf from (2 - 2**-8) * 2**127 on (ties to even).
    (ms.bfloat16, [(2 - 2 ** -7) * 2.0 ** 127, 3.3961e38], [(2 - 2 ** -8) * 2.0 ** 127, 3.4e38]),
])
def test_a_narrowing_cast_that_overflows_to_inf_is_refused_naming_the_key(dtype, ok, bad):
    for value in ok:
        net = _dense_net(dtype)
        load_torch_state_dict(net, {"weight": np.array([[value, 1.0]], np.float64), "bias": np.zeros(1)})
        got = net.weight.astype(ms.float32).asnumpy()[0, 0]
        assert np.isfinite(got), (dtype, value)
    for value in bad:
        net = _dense_net(dtype)
        with pytest.raises(ValueError, match=r"checkpoint 'weight': 1 finite value\(s\).*overflow to inf"):
            load_torch_state_dict(net, {"weight": np.array([[value, 1.0]], np.float64), "bias": np.zeros(1)},
                                  strict=False)
        assert np.all(net.weight.astype(ms.float32).asnumpy() == 0)  # nothing loaded


def test_what_is_cast_silently():
    # inf and NaN stay; underflow goes to 0; floats into ints truncate; as PyTorch's copy_ does.
    net = _dense_net(ms.float16)
    load_torch_state_dict(net, {"weight": np.array([[np.inf, 1e-9]]), "bias": np.array([np.nan])})
    w = net.weight.asnumpy()
    assert np.isposinf(w[0, 0]) and w[0, 1] == 0 and np.isnan(net.bias.asnumpy()[0])
    ref = torch.zeros(1, 2, dtype=torch.float16).copy_(torch.tensor([[np.inf, 1e-9]], dtype=torch.float64))
    np.testing.assert_array_equal(w, ref.numpy())


# --- messages are bounded -------------------------------------------------------------------------

MAX_MESSAGE = 4000


def test_messages_stay_bounded_for_huge_keys_and_key_counts(tmp_path):
    net = nn.SequentialCell([nn.Dense(2, 1)])
    cases = {
        "4 MiB key": {"k" * (4 << 20): np.zeros(1, np.float32)},
        "300k unused keys": {f"unused.{i}": np.zeros(1, np.float32) for i in range(300_000)},
        "1M empty tensors": {f"e{i}": np.zeros(0, np.float32) for i in range(1_000_000)},
    }
    for name, state in cases.items():
        with pytest.raises(ValueError) as info:
            load_torch_state_dict(net, state)
        message = str(info.value)
        assert len(message) <= MAX_MESSAGE, (name, len(message))
        assert "unexpected" in message and "more" in message or "..." in message, name
    # A file of 300k unused keys: the same bound.
    path = str(tmp_path / "many.safetensors")
    write_safetensors(path, {f"unused.{i}": np.zeros(1, np.float32) for i in range(300_000)})
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(net, path)
    assert len(str(info.value)) <= MAX_MESSAGE and "299980 more" in str(info.value)


# --- numpy's own limits never escape raw ------------------------------------------------------------

def test_more_than_32_dims_is_a_checkpoint_error_on_every_path(tmp_path):
    net = nn.SequentialCell([nn.Dense(2, 1)])
    at = str(tmp_path / "d32.pt")
    torch.save({"x": torch.zeros((1,) * 32)}, at)
    assert read_torch_checkpoint(at)["x"].shape == (1,) * 32
    past = str(tmp_path / "d33.pt")
    torch.save({"x": torch.zeros((1,) * 33)}, past)
    for call in (lambda: read_torch_checkpoint(past), lambda: load_torch_state_dict(net, past, strict=False)):
        with pytest.raises(CheckpointError, match="at most 32") as info:
            call()
        assert past in str(info.value)
    for dims, ok in ((32, True), (33, False)):
        path = str(tmp_path / f"d{dims}.safetensors")
        header = json.dumps({"x": {"dtype": "F32", "shape": [1] * dims, "data_offsets": [0, 4]}}).encode()
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header + bytes(4))
        if ok:
            assert read_torch_checkpoint(path)["x"].shape == (1,) * 32
        else:
            for call in (lambda: read_torch_checkpoint(path), lambda: load_torch_state_dict(net, path, strict=False)):
                with pytest.raises(CheckpointError, match="33 dimensions \\(at most 32") as info:
                    call()
                assert path in str(info.value)


def test_element_count_bound_at_and_past_on_every_path(tmp_path):
    # 2**58 elements (stride-0 views of one element): described and loaded lazily; one more is refused
    # (numpy's "array is too big" never escapes).
    net = nn.SequentialCell([nn.Dense(2, 1)])
    at = str(tmp_path / "at.pt")
    torch.save({"x": torch.zeros(1).expand(1 << 29, 1 << 29)}, at)
    assert read_torch_checkpoint(at)["x"].shape == (1 << 29, 1 << 29)
    assert load_torch_state_dict(net, at, strict=False).unexpected == ["x"]
    past = str(tmp_path / "past.pt")
    torch.save({"x": torch.zeros(1).expand((1 << 58) + 1)}, past)  # one element past
    for call in (lambda: read_torch_checkpoint(past), lambda: load_torch_state_dict(net, past, strict=False)):
        with pytest.raises(CheckpointError, match="at most 2\\*\\*58") as info:
            call()
        assert past in str(info.value)
    # An empty tensor whose other dimensions multiply past numpy's range, in safetensors.
    path = str(tmp_path / "empty.safetensors")
    header = json.dumps({"x": {"dtype": "F32", "shape": [0, 1 << 40, 1 << 40], "data_offsets": [0, 0]}}).encode()
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="at most 2\\*\\*58") as info:
        load_torch_state_dict(net, path, strict=False)
    assert path in str(info.value)


def test_an_encrypted_member_is_a_checkpoint_error(tmp_path):
    path = str(tmp_path / "enc.pt")
    torch.save({"0.weight": torch.zeros(1, 2), "0.bias": torch.zeros(1)}, path)
    data = bytearray(open(path, "rb").read())
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 1
    data[6] |= 1  # the first local header too
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match="encrypted") as info:
        load_torch_state_dict(nn.SequentialCell([nn.Dense(2, 1)]), path)
    assert path in str(info.value) and "RuntimeError" not in str(info.value)


# --- saves: every legal name, killed saves, errors with the path ------------------------------------

@pytest.mark.parametrize("length", [233, 234, 240, 255])
def test_every_legal_file_name_can_be_saved(length, tmp_path):
    name = "m" * (length - len(".safetensors")) + ".safetensors"
    assert len(name.encode()) == length
    path = str(tmp_path / name)
    save_torch_state_dict(nn.SequentialCell([nn.Dense(2, 3)]), path)
    assert os.listdir(tmp_path) == [name]
    assert set(safetensors.numpy.load_file(path)) == {"0.weight", "0.bias"}


def test_the_temporary_name_fits_name_max_for_multibyte_names(tmp_path):
    from ms_weightnorm._checkpoint import atomic
    name = "é" * 121 + ".safetensors"  # 254 bytes
    for base in (name, "x" * 255):
        tmp = os.path.basename(atomic.temporary_name(str(tmp_path), base))
        assert len(tmp.encode()) <= 255 and tmp.startswith(".") and tmp.endswith(".tmp")
    write_safetensors(str(tmp_path / name), {"w": np.ones(2, np.float32)})
    assert os.listdir(tmp_path) == [name]


_KILLED_SAVE = textwrap.dedent("""
    import importlib.util, os, sys, time
    reader = sys.argv[1]
    spec = importlib.util.spec_from_file_location("_w", reader + "/__init__.py", submodule_search_locations=[reader])
    m = importlib.util.module_from_spec(spec); sys.modules["_w"] = m; spec.loader.exec_module(m)
    from _w import atomic
    if sys.argv[3] == "named":
        atomic._open_anonymous = lambda directory: -1  # the fallback: a named temporary file
    def chunks():
        for i in range(64):
            yield bytes(1 << 20)  # 64 MiB in all
            if i == 8:
                print("midway", flush=True)
                time.sleep(600)  # killed here
    atomic.atomic_write(sys.argv[2], chunks())
""")


@pytest.mark.parametrize("how", ["tmpfile", "named"])
def test_a_killed_save_leaves_the_target_and_says_what_else(how, tmp_path):
    import re
    import signal
    path = str(tmp_path / "model.safetensors")
    write_safetensors(path, {"w": np.ones(3, np.float32)})
    old = open(path, "rb").read()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, os.path.dirname(ms_weightnorm_file()), path, how],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "midway"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert open(path, "rb").read() == old
    left = sorted(set(os.listdir(tmp_path)) - {"model.safetensors"})
    if how == "tmpfile":
        assert left == []  # O_TMPFILE: the unfinished file never had a name
    else:
        # The documented fallback: one ".<name>.<16 hex>.tmp" file, 9 MiB of the 64 written.
        assert len(left) == 1 and re.fullmatch(r"\.model\.safetensors\.[0-9a-f]{16}\.tmp", left[0]), left
        assert os.path.getsize(tmp_path / left[0]) == 9 << 20


def test_save_errors_name_the_destination_not_the_temporary_file(tmp_path):
    path = str(tmp_path / "missing_dir" / "m.safetensors")
    with pytest.raises(FileNotFoundError) as info:
        write_safetensors(path, {"w": np.ones(2, np.float32)})
    assert info.value.filename == path and ".tmp" not in str(info.value)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    os.chmod(read_only, 0o500)
    try:
        if os.access(read_only, os.W_OK):  # root ignores permissions: nothing to test there
            return
        with pytest.raises(PermissionError) as info:
            write_safetensors(str(read_only / "m.safetensors"), {"w": np.ones(2, np.float32)})
        assert info.value.filename == str(read_only / "m.safetensors")
    finally:
        os.chmod(read_only, 0o700)


# --- the layout table ---------------------------------------------------------------------------

def test_one_layout_table_read_by_every_module():
    from mindspore import mint

    import importlib

    from ms_weightnorm import _layouts
    init = importlib.import_module("ms_weightnorm.init")
    sn_module = importlib.import_module("ms_weightnorm.spectral_norm")   # the package's names are the functions
    wn_module = importlib.import_module("ms_weightnorm.weight_norm")

    # MindSpore 2.10's mint has ConvTranspose2d only; the table takes whichever the build has.
    mint_transposed = [getattr(mint.nn, n) for n in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
                       if hasattr(mint.nn, n)]
    assert mint.nn.ConvTranspose2d in mint_transposed
    assert all(cls in _layouts.TRANSPOSED for cls in mint_transposed)
    assert init._TRANSPOSED is _layouts.TRANSPOSED   # init.py used to lack mint's classes
    # mint's transposed weight is (in, out/groups, kh, kw): its output axis is 1 everywhere.
    up = mint.nn.ConvTranspose2d(2, 3, 4)
    assert tuple(up.weight.shape) == (2, 3, 4, 4)
    assert sn_module.default_dim(up) == 1 and _layouts.output_axis(type(up)) == 1
    # Only nn's Conv1d classes have the extra axis; mint's Conv1d has PyTorch's 3-D layout.
    conv = nn.Conv1d(2, 3, 5)
    assert wn_module.torch_dim(conv, 2) == 3 and wn_module.torch_dim(mint.nn.Conv1d(2, 3, 5), 2) == 2
    assert _layouts.renames(nn.BatchNorm2d)["moving_variance"] == "running_var"
    assert _layouts.dropped(nn.BatchNorm1d) == ("num_batches_tracked",) and _layouts.dropped(nn.LayerNorm) == ()


def test_messages_name_the_cells_path():
    net = nn.SequentialCell(OrderedDict(body=nn.SequentialCell([weight_norm(nn.Dense(3, 2)), nn.Dense(2, 2)])))
    state = {"body.0.weight_g": np.ones((2, 2), np.float32), "body.0.weight_v": np.ones((2, 3), np.float32),
             "body.0.bias": np.zeros(2, np.float32), "body.1.weight": np.ones((2, 2), np.complex64),
             "body.1.bias": np.zeros(2, np.float32)}
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(net, state)
    assert ("cell 'body.1' (Dense), body.1.weight (MindSpore body.1.weight, shape (2, 2)): checkpoint "
            "'body.1.weight' is complex") in str(info.value)
    del state["body.1.weight"]
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(net, state)
    assert ("cell 'body.0' (Dense), body.0.weight (MindSpore body.0.weight_g, body.0.weight_v, shape (2, 3)): "
            "'body.0.weight_g': g of shape (2, 2) does not fit v of shape (2, 3)") in str(info.value)
