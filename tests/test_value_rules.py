"""The loader's value rules (issue 28): a key whose values would change silently is refused.

- complex into real is refused for every complex width (complex64 and complex128): PyTorch's
  ``copy_`` would keep the real part;
- a value finite in the checkpoint that becomes inf in the Parameter's float type is refused
  whatever the source type, integers included (int64 100000 into float16);
- the refusal of many keys is clipped to the loader's message bound (4000 characters).
Each refusal leaves the network untouched.
"""
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

import mindspore as ms
from ms_weightnorm import load_torch_state_dict

# The documented bound of every message the reader and loader raise (limits.MAX_MESSAGE), written
# out: a test reading the constant would follow a changed one.
MAX_MESSAGE = 4000


class Holder(nn.Cell):
    def __init__(self, dtype=np.float32, n=3):
        super().__init__()
        self.w = Parameter(Tensor(np.arange(n).astype(dtype)), name="w")


def _refused(net, state):
    before = net.w.asnumpy().copy()
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(net, state)
    np.testing.assert_array_equal(net.w.asnumpy(), before)  # nothing was loaded
    return str(info.value)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_of_every_width_is_refused(dtype):
    value = np.array([1 + 2j, 3 - 1j, 0.5 + 0j], dtype)
    message = _refused(Holder(), {"w": value})
    # The key and its dtype, as the complex rule states them.
    assert "'w' is complex" in message and f"({np.dtype(dtype).name})" in message, message


def test_real_values_of_the_same_key_load():
    net = Holder()
    load_torch_state_dict(net, {"w": np.array([1.5, -2.0, 3.0], np.float64)})
    np.testing.assert_array_equal(net.w.asnumpy(), [1.5, -2.0, 3.0])


@pytest.mark.parametrize("src", [np.int64, np.int32, np.uint32, np.float32, np.float64])
def test_overflow_to_inf_is_refused_for_integer_and_float_sources(src):
    value = np.array([1, 100000, -70000], src) if src != np.uint32 else np.array([1, 100000, 70000], src)
    message = _refused(Holder(np.float16), {"w": value})
    # The overflow rule's own values: how many, the largest magnitude, the float16 bound.
    assert "'w': 2 finite value(s)" in message, message
    assert "largest magnitude 100000)" in message and "largest finite 65504)" in message, message


@pytest.mark.parametrize("src", [np.int64, np.float64])
def test_values_that_fit_float16_load(src):
    net = Holder(np.float16)
    load_torch_state_dict(net, {"w": np.array([1, 65504, -2048], src)})
    np.testing.assert_array_equal(net.w.asnumpy(), np.array([1, 65504, -2048], np.float16))


def test_integer_to_bfloat16_overflow_is_refused_too():
    net = Holder()
    net.w.set_dtype(ms.bfloat16)
    before = net.w.astype(ms.float32).asnumpy()
    big = np.array([0, 1, 2], np.float64)
    big[1] = 3.5e38  # past bfloat16's largest finite (about 3.39e38), inside float64
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(net, {"w": big})
    assert "'w': 1 finite value(s)" in str(info.value), str(info.value)
    np.testing.assert_array_equal(net.w.astype(ms.float32).asnumpy(), before)


def test_many_refused_keys_give_one_clipped_message():
    # 40 layers with complex weights: about 16,700 characters unclipped.
    net = nn.SequentialCell([nn.Dense(2, 2) for _ in range(40)])
    state = {}
    for i in range(40):
        state[f"{i}.weight"] = np.ones((2, 2), np.complex128)
        state[f"{i}.bias"] = np.zeros(2, np.float32)
    before = net[0].weight.asnumpy().copy()
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(net, state)
    message = str(info.value)
    assert len(message) <= MAX_MESSAGE, len(message)
    assert len(message) > MAX_MESSAGE - 100  # clipped, not short: it holds as much as fits
    assert "40 key(s)" in message and "'0.weight' is complex" in message, message[:400]
    np.testing.assert_array_equal(net[0].weight.asnumpy(), before)
