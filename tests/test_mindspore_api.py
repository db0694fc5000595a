"""The opt-in PyTorch names under mindspore.nn.utils / mindspore.mint.nn.utils (no mindone needed)."""
import numpy as np
import mindspore as ms
import pytest
import torch
from mindspore import mint, nn

import ms_weightnorm as wn
from ms_weightnorm.integrations import mindspore_api


@pytest.fixture
def api():
    added = mindspore_api.install()
    try:
        yield added
    finally:
        mindspore_api.uninstall()


def test_install_adds_the_missing_names_and_uninstall_removes_them(api):
    assert set(api) >= {"mindspore.nn.utils.weight_norm", "mindspore.nn.utils.remove_weight_norm",
                        "mindspore.nn.utils.parametrizations", "mindspore.mint.nn.utils"}
    assert nn.utils.weight_norm is mint.nn.utils.weight_norm is nn.utils.parametrizations.weight_norm
    assert mindspore_api.install() == api  # idempotent
    assert mindspore_api.uninstall() == api
    assert not hasattr(nn.utils, "weight_norm") and not hasattr(mint.nn, "utils")
    assert not hasattr(nn.utils, "parametrizations")
    assert mindspore_api.uninstall() == []


def test_names_mindspore_has_are_never_replaced():
    sentinel = object()
    nn.utils.weight_norm = sentinel
    try:
        added = mindspore_api.install()
        assert nn.utils.weight_norm is sentinel and "mindspore.nn.utils.weight_norm" not in added
        assert mint.nn.utils.weight_norm is mindspore_api.weight_norm
        mindspore_api.uninstall()
        assert nn.utils.weight_norm is sentinel
    finally:
        del nn.utils.weight_norm


# The reference is torch.nn.utils.weight_norm itself, which torch marks deprecated.
@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("dim", [0, 1, 2, -1, None])
def test_torch_signature_and_dim_match_pytorch_on_conv1d(api, dim):
    """weight_norm(module, name, dim) with PyTorch's dim: g has torch's values on MindSpore's 4-D weight."""
    tconv = torch.nn.Conv1d(4, 6, 5)
    w = np.random.default_rng(0).standard_normal((6, 4, 5)).astype(np.float32)
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(w))
    tconv = torch.nn.utils.weight_norm(tconv, name="weight", dim=dim)
    conv = nn.Conv1d(4, 6, 5)
    conv.weight.set_data(ms.Tensor(w[:, :, None, :]))
    out = nn.utils.weight_norm(conv, "weight", dim)
    assert out is conv
    t_g = tconv.weight_g.detach().numpy()
    g = conv.weight_g.asnumpy()
    assert g.size == t_g.size
    np.testing.assert_allclose(g.ravel(), t_g.ravel(), rtol=1e-6)
    assert mint.nn.utils.remove_weight_norm(conv, name="weight") is conv
    assert not wn.is_weight_normed(conv)


def test_axis_is_another_name_for_dim(api):
    conv = nn.utils.weight_norm(nn.Conv1d(4, 4, 3), name="weight", axis=2)
    assert tuple(conv.weight_g.shape) == (1, 1, 1, 3)
    with pytest.raises(TypeError, match="dim=1 and axis=2; pass one of them"):
        nn.utils.weight_norm(nn.Conv1d(4, 4, 3), dim=1, axis=2)
