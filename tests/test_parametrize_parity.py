"""The parametrization kit against PyTorch 2.13: orthogonal (each map) and a chain of two custom
cells, one with its own Parameter. Checked in PyNative and GRAPH_MODE: the weights after
registration, the checkpoint keys (torch's state_dict loads with nothing missing or left over),
the forward, the loss and the gradient of every trainable Parameter."""
import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import Parameter, Tensor, nn, ops

from ms_weightnorm import load_torch_state_dict, orthogonal, parametrize, to_torch_state_dict


class Softplus(nn.Cell):
    def construct(self, X):
        return ops.log(1 + ops.exp(X))


class Scale(nn.Cell):
    def __init__(self):
        super().__init__()
        self.s = Parameter(Tensor(np.float32(1.5)), name="s")

    def construct(self, X):
        return X * self.s


class TorchSoftplus(torch.nn.Module):
    def forward(self, X):
        return torch.nn.functional.softplus(X)


class TorchScale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.s = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, X):
        return X * self.s


def torch_model(orthogonal_map):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 6), torch.nn.Tanh(),
                              torch.nn.Linear(6, 3))
    return net


def ms_model(net_t):
    net = nn.SequentialCell([nn.Dense(4, 4), nn.Tanh(), nn.Dense(4, 6), nn.Tanh(), nn.Dense(6, 3)])
    result = load_torch_state_dict(net, {k: v.detach() for k, v in net_t.state_dict().items()})
    assert not result.missing and not result.unexpected
    return net


def parametrize_torch(net, orthogonal_map):
    P = torch.nn.utils.parametrize
    torch.nn.utils.parametrizations.orthogonal(net[0], "weight", orthogonal_map)
    torch.nn.utils.parametrizations.orthogonal(net[2], "weight", orthogonal_map)  # tall (6, 4)
    P.register_parametrization(net[4], "weight", TorchSoftplus())
    P.register_parametrization(net[4], "weight", TorchScale())


def parametrize_ms(net, orthogonal_map):
    orthogonal(net[0], "weight", orthogonal_map)
    orthogonal(net[2], "weight", orthogonal_map)
    parametrize.register_parametrization(net[4], "weight", Softplus())
    parametrize.register_parametrization(net[4], "weight", Scale())


class Loss(nn.Cell):
    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, x):
        y = self.net(x)
        return (y * y).sum()


class Weights(nn.Cell):
    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self):
        return self.net[0].weight * 1, self.net[2].weight * 1, self.net[4].weight * 1


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley", "householder"])
def test_kit_matches_torch(mode, orthogonal_map):
    net_t = torch_model(orthogonal_map)
    net = ms_model(net_t)
    parametrize_torch(net_t, orthogonal_map)
    parametrize_ms(net, orthogonal_map)

    # the weights after registration: the square one exactly (a QR of the same weight); the tall
    # one too (its base is completed with random columns that the weight does not use)
    for ours, theirs in zip(Weights(net)(), (net_t[0].weight, net_t[2].weight, net_t[4].weight)):
        np.testing.assert_allclose(ours.asnumpy(), theirs.detach().numpy(), atol=2e-6)

    # torch's checkpoint keys, both ways; loading also gives the tall base torch drew
    state = {k: v.detach() for k, v in net_t.state_dict().items()}
    assert set(to_torch_state_dict(net)) == set(state)
    assert {"0.parametrizations.weight.original", "0.parametrizations.weight.0.base",
            "4.parametrizations.weight.original", "4.parametrizations.weight.1.s"} <= set(state)
    result = load_torch_state_dict(net, state)
    assert not result.missing and not result.unexpected
    parametrize.invalidate_compiled_graphs()

    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    out_t = net_t(torch.tensor(x))
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), out_t.detach().numpy(), atol=2e-5)
    loss_t = (out_t ** 2).sum()
    loss_t.backward()
    params = net.trainable_params()
    torch_params = dict(net_t.named_parameters())
    assert sorted(p.name for p in params) == sorted(torch_params)  # every original, and s
    loss, grads = ms.value_and_grad(Loss(net), None, params)(Tensor(x))
    np.testing.assert_allclose(float(loss), loss_t.item(), rtol=1e-5)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(g.asnumpy(), torch_params[p.name].grad.numpy(), atol=5e-5, rtol=1e-4,
                                   err_msg=p.name)
