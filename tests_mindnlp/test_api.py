"""After install(): names and keys, remove_weight_norm / remove_parametrizations, deepcopy,
save and load, under both of mindtorch's APIs, on a Linear, a middle dim and the HiFi-GAN."""
import copy

import numpy as np
import pytest

import mindtorch
from mindtorch import nn
from mindtorch.nn.utils import parametrize

import cases

NEW, OLD = cases.NEW, cases.OLD
X = mindtorch.tensor(np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))


def _linear(api):
    return cases.build("linear", api)


def _names(m):
    return [n for n, _ in m.named_parameters()]


def _out(m, x=X):
    return cases.to_numpy(m(x))


def _grads(m, x=X):
    named = list(m.named_parameters())
    _, grads = mindtorch.autograd.value_and_grad(lambda: (m(x) ** 2).sum(), [p for _, p in named],
                                                 attach_grads=False)()
    return {n: g.asnumpy() for (n, _), g in zip(named, grads)}


def test_names_and_keys_are_torchs():
    old = _linear(OLD)
    assert _names(old) == ["bias", "weight_g", "weight_v"]
    assert list(old.state_dict()) == ["bias", "weight_g", "weight_v"]
    assert type(old.weight) is not nn.Parameter  # a computed tensor, not a fourth Parameter
    assert len(old.trainable_params()) == 3
    new = _linear(NEW)
    assert _names(new) == ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
    assert list(new.state_dict()) == _names(new)


@pytest.mark.parametrize("dim, shape", [(0, (3, 1)), (1, (1, 4)), (None, ()), (-1, ()), (-2, (3, 1))])
@pytest.mark.parametrize("api", [NEW, OLD])
def test_dims_follow_torch(api, dim, shape):
    """torch: None and -1 are the whole tensor (0-d g), other negative dims are indices."""
    m = nn.Linear(4, 3)
    w = cases.to_numpy(m.weight)
    (nn.utils.parametrizations.weight_norm if api == NEW else nn.utils.weight_norm)(m, dim=dim)
    g = m.parametrizations.weight.original0 if api == NEW else m.weight_g
    assert tuple(g.shape) == shape
    axis = None if dim in (None, -1) else dim % 2
    expected = np.sqrt((w ** 2).sum(axis=None if axis is None else 1 - axis, keepdims=axis is not None))
    np.testing.assert_allclose(cases.to_numpy(g), expected.reshape(shape), rtol=1e-6)
    np.testing.assert_allclose(cases.to_numpy(m.weight), w, rtol=1e-5, atol=1e-7)


def test_remove_weight_norm_old_api():
    m = _linear(OLD)
    before, g = _out(m), cases.to_numpy(m.weight_g)
    assert np.any(g)
    nn.utils.remove_weight_norm(m)
    assert _names(m) == ["bias", "weight"] and isinstance(m.weight, nn.Parameter)
    assert not m._forward_pre_hooks
    np.testing.assert_allclose(_out(m), before, rtol=1e-6, atol=1e-7)
    assert np.any(_grads(m)["weight"])  # a trainable Parameter again


def test_remove_parametrizations_new_api():
    m = _linear(NEW)
    before = _out(m)
    parametrize.remove_parametrizations(m, "weight")
    assert _names(m) == ["bias", "weight"] and type(m).__name__ == "Linear"
    np.testing.assert_allclose(_out(m), before, rtol=1e-6, atol=1e-7)
    assert np.any(_grads(m)["weight"])


@pytest.mark.parametrize("api", [NEW, OLD])
def test_hifigan_removal(api):
    """transformers' own remove_weight_norm() for the old API; remove_parametrizations for the new
    one (transformers' remove_weight_norm() raises there in torch as well)."""
    m = cases.build("hifigan", api)
    x = mindtorch.tensor(cases.inputs("hifigan")["x"])
    before = _out(m, x)
    if api == OLD:
        m.remove_weight_norm()
    else:
        for mod in m.modules():
            if parametrize.is_parametrized(mod, "weight"):
                parametrize.remove_parametrizations(mod, "weight")
    assert not [n for n in _names(m) if cases.is_g(n) or cases.is_v(n)]
    assert len([n for n in _names(m) if n.endswith("weight")]) == 12
    np.testing.assert_allclose(_out(m, x), before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("api", [NEW, OLD])
def test_deepcopy(api):
    m = _linear(api)
    twin = copy.deepcopy(m)
    assert _names(twin) == _names(m)
    np.testing.assert_allclose(_out(twin), _out(m), rtol=1e-6)
    gm, gt = _grads(m), _grads(twin)
    for name in gm:
        np.testing.assert_allclose(gt[name], gm[name], rtol=1e-6)
    g_name = [n for n in gm if cases.is_g(n)][0]
    assert np.any(gt[g_name])
    # The copy is independent: training it leaves the original alone.
    before = _out(m)
    twin.zero_grad()
    mindtorch.autograd.value_and_grad(lambda: (twin(X) ** 2).sum(), twin.trainable_params())()
    cases.sgd_step(twin)
    np.testing.assert_array_equal(_out(m), before)
    assert not np.allclose(_out(twin), before)


@pytest.mark.parametrize("api", [NEW, OLD])
def test_save_and_load(api, tmp_path):
    m = _linear(api)
    path = str(tmp_path / "model.pt")
    mindtorch.save(m.state_dict(), path)
    fresh = cases.build("linear", api, seed=1)  # other random weights
    assert not np.allclose(_out(fresh), _out(m))
    fresh.load_state_dict(mindtorch.load(path))
    np.testing.assert_allclose(_out(fresh), _out(m), rtol=1e-6)
    assert _names(fresh) == _names(m)
    g_name = [n for n in _names(fresh) if cases.is_g(n)][0]
    np.testing.assert_allclose(_grads(fresh)[g_name], _grads(m)[g_name], rtol=1e-6)
    assert np.any(_grads(fresh)[g_name])


def test_old_layout_keys_load_into_the_new_api():
    """parametrizations.weight_norm's load hook maps weight_g/weight_v keys (mindtorch's, kept)."""
    old = _linear(OLD)
    new = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3))
    new.load_state_dict(old.state_dict())
    np.testing.assert_allclose(_out(new), _out(old), rtol=1e-6)


def test_assigning_the_weight_re_splits_it():
    """``module.weight = X`` under the new API goes through right_inverse: g = ||X||, v = X."""
    m = _linear(NEW)
    target = np.arange(12, dtype=np.float32).reshape(3, 4) / 10 - 0.5
    m.weight = mindtorch.tensor(target)
    np.testing.assert_allclose(cases.to_numpy(m.weight), target, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cases.to_numpy(m.parametrizations.weight.original0),
                               np.sqrt((target ** 2).sum(axis=1, keepdims=True)), rtol=1e-6)
    assert np.any(_grads(m)["parametrizations.weight.original0"])
