"""Outputs, weights and gradients equal PyTorch's weight_norm (torch 2.13 CPU, test-only)."""
import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import nn

import ms_weightnorm as wn

from helpers import SumSquares, grads

RTOL, ATOL = 1e-4, 1e-5


def torch_to_ms_array(a: np.ndarray, kind: str) -> np.ndarray:
    # PyTorch's 3-D Conv1d weight (out, in, k) is MindSpore's 4-D (out, in, 1, k).
    return a[:, :, None, :] if kind == "conv1d" and a.ndim == 3 else a


def make_pair(kind: str):
    """A torch layer, its MindSpore twin, the twin's parameter names for torch's, and an input."""
    rng = np.random.default_rng(0)
    if kind == "linear":
        t = torch.nn.Linear(5, 4)
        m = nn.Dense(5, 4)
        x = rng.standard_normal((3, 5))
        names = {"weight": "weight", "bias": "bias"}
    elif kind == "conv1d":
        t = torch.nn.Conv1d(3, 4, 3)
        m = nn.Conv1d(3, 4, 3, pad_mode="valid", has_bias=True)
        x = rng.standard_normal((2, 3, 9))
        names = {"weight": "weight", "bias": "bias"}
    elif kind == "conv2d":
        t = torch.nn.Conv2d(3, 4, 3)
        m = nn.Conv2d(3, 4, 3, pad_mode="valid", has_bias=True)
        x = rng.standard_normal((2, 3, 6, 5))
        names = {"weight": "weight", "bias": "bias"}
    elif kind == "convtranspose2d":
        t = torch.nn.ConvTranspose2d(3, 4, 3, stride=2)
        m = nn.Conv2dTranspose(3, 4, 3, stride=2, pad_mode="valid", has_bias=True)
        x = rng.standard_normal((2, 3, 4, 5))
        names = {"weight": "weight", "bias": "bias"}
    elif kind == "embedding":
        t = torch.nn.Embedding(10, 4)
        m = nn.Embedding(10, 4)
        x = rng.integers(0, 10, (3, 5))
        names = {"weight": "embedding_table"}
    elif kind == "lstm":
        t = torch.nn.LSTM(3, 4, num_layers=1)
        m = nn.LSTM(3, 4, num_layers=1)
        x = rng.standard_normal((5, 2, 3))
        names = {n: n for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")}
    else:
        raise ValueError(kind)
    for tname, mname in names.items():
        value = torch_to_ms_array(getattr(t, tname).detach().numpy(), kind)
        m._params[mname].set_data(ms.Tensor(value))
    if kind == "embedding":
        return t, m, names, torch.tensor(x), ms.Tensor(x.astype(np.int32))
    return t, m, names, torch.tensor(x, dtype=torch.float32), ms.Tensor(x.astype(np.float32))


def ms_dim(kind: str, dim):
    """PyTorch's dim on the torch layout -> dim on MindSpore's layout."""
    if kind == "conv1d" and dim == 2:
        return 3
    return dim


# (layer, torch parameter, dims): dims 0, 1, None and a middle one where the weight has one.
CASES = [
    ("linear", "weight", (0, 1, None)),
    ("conv1d", "weight", (0, 1, 2, None)),
    ("conv2d", "weight", (0, 1, 2, None)),
    ("convtranspose2d", "weight", (0, 1, 2, None)),
    ("embedding", "weight", (0, 1, None)),
    ("lstm", "weight_ih_l0", (0, 1, None)),
    ("lstm", "weight_hh_l0", (0,)),
]


@pytest.mark.parametrize("kind,tname,dim", [pytest.param(k, n, d, id=f"{k}-{n}-dim{d}")
                                            for k, n, ds in CASES for d in ds])
def test_matches_pytorch(kind, tname, dim, mode):
    t, m, names, xt, xm = make_pair(kind)
    mname = names[tname]
    # torch's new API; its old torch.nn.utils.weight_norm gives the same numbers.
    torch.nn.utils.parametrizations.weight_norm(t, tname, dim=dim)
    wn.weight_norm(m, mname, dim=ms_dim(kind, dim))

    tg = getattr(t.parametrizations, tname).original0
    tv = getattr(t.parametrizations, tname).original1
    mg, mv = getattr(m, f"{mname}_g"), getattr(m, f"{mname}_v")
    expected_g = tg.detach().numpy().reshape(mg.shape)  # g of a torch Conv1d is 3-D
    np.testing.assert_allclose(mg.asnumpy(), expected_g, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(mv.asnumpy(), torch_to_ms_array(tv.detach().numpy(), kind), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(getattr(m, mname).asnumpy(),
                               torch_to_ms_array(getattr(t, tname).detach().numpy(), kind), rtol=RTOL, atol=ATOL)

    # Gradients of sum(y^2) with respect to g, v and the (first) bias.
    yt = t(xt)
    yt = yt[0] if isinstance(yt, tuple) else yt
    (yt * yt).sum().backward()
    bias_name = next((n for n in names if n.startswith("bias")), None)
    ms_params = [mg, mv] + ([m._params[names[bias_name]]] if bias_name else [])
    loss, ms_grads = grads(SumSquares(m), xm, ms_params)
    assert loss == pytest.approx((yt * yt).sum().item(), rel=RTOL)
    ym = m(xm)
    ym = ym[0] if isinstance(ym, tuple) else ym
    np.testing.assert_allclose(ym.asnumpy(), yt.detach().numpy(), rtol=RTOL, atol=ATOL)
    torch_grads = [tg.grad.numpy().reshape(mg.shape), torch_to_ms_array(tv.grad.numpy(), kind)]
    if bias_name:
        torch_grads.append(getattr(t, bias_name).grad.numpy())
    for got, want in zip(ms_grads, torch_grads):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_old_and_new_pytorch_apis_agree_with_ours():
    """The deprecated torch.nn.utils.weight_norm gives the same g and v (names weight_g/_v)."""
    t, m, _, xt, xm = make_pair("conv1d")
    with pytest.warns(FutureWarning):
        torch.nn.utils.weight_norm(t, dim=2)
    wn.weight_norm(m, dim=3)
    np.testing.assert_allclose(m.weight_g.asnumpy(), t.weight_g.detach().numpy()[:, :, None, :], rtol=RTOL)
    np.testing.assert_allclose(m(xm).asnumpy(), t(xt).detach().numpy(), rtol=RTOL, atol=ATOL)
