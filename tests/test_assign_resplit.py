"""Setting a parametrized weight re-splits it into the trainable Parameters only (issue 28).

``assign_parametrized`` (behind ``cell.weight = X`` and ``cell.weight.set_data(X)``) sets the
trainable Parameters to ``split(X)`` and leaves a stateful parametrization's state Parameters
(spectral norm's ``u`` and ``v``) as they were, as PyTorch's ``right_inverse`` does. Spectral
norm itself has no inverse and refuses the assignment, changing nothing; a spectral norm given
PyTorch's inverse (orig = X) shows the state rule, since its ``split`` returns fresh u and v
that must not be written.
"""
from typing import ClassVar, Optional

import numpy as np
import pytest
from mindspore import Tensor, nn

from ms_weightnorm import parametrize as P
from ms_weightnorm import spectral_norm
from ms_weightnorm.spectral_norm import SpectralNormParametrization


class InvertibleSpectralNorm(SpectralNormParametrization):
    """PyTorch's spectral-norm ``right_inverse``: the value becomes ``orig``; u and v stay."""

    no_inverse: ClassVar[Optional[str]] = None


def _values(cell, names):
    return {n: getattr(cell, n).asnumpy().copy() for n in names}


def _assign(form, cell, value):
    if form == "attribute":
        cell.weight = value
    elif form == "set_data":
        cell.weight.set_data(value)
    elif form == "data.set_data":
        cell.weight.data.set_data(value)
    else:
        P.assign_parametrized(cell, "weight", value)


FORMS = ["attribute", "set_data", "data.set_data", "function"]


@pytest.mark.parametrize("form", FORMS)
def test_state_parameters_keep_their_values(form):
    layer = nn.Dense(5, 4)
    layer.set_train(False)  # a training read would run a power step and move u, v itself
    P.register_parametrization(layer, "weight", InvertibleSpectralNorm(dim=0))
    assert [n for n, _ in layer.parameters_and_names()][:3] == ["weight_orig", "weight_u", "weight_v"]
    state = _values(layer, ["weight_u", "weight_v"])
    value = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
    _assign(form, layer, Tensor(value))
    np.testing.assert_array_equal(layer.weight_orig.asnumpy(), value)  # the trainable part is set
    for name, before in state.items():
        np.testing.assert_array_equal(getattr(layer, name).asnumpy(), before, err_msg=name)
    # The split itself would have given other values: the test can tell them apart.
    _, u_split, v_split = InvertibleSpectralNorm(dim=0).split(Tensor(value))
    assert not np.array_equal(u_split.asnumpy(), state["weight_u"])
    assert not np.array_equal(v_split.asnumpy(), state["weight_v"])


@pytest.mark.parametrize("form", FORMS)
def test_spectral_norm_refuses_and_changes_nothing(form):
    layer = spectral_norm(nn.Dense(5, 4))
    layer.set_train(False)
    names = ["weight_orig", "weight_u", "weight_v"]
    before = _values(layer, names)
    with pytest.raises(AttributeError) as info:
        _assign(form, layer, Tensor(np.ones((4, 5), np.float32)))
    assert "spectral norm has no inverse" in str(info.value), str(info.value)
    for name, value in _values(layer, names).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
