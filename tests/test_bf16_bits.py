"""bfloat16 rounding, bit for bit: the unpickler's converter and the tests' own numpy helper
against a reference that picks the nearest bfloat16 by float64 arithmetic (ties to even)."""
import numpy as np

from ms_weightnorm._checkpoint import bf16 as T
from ms_weightnorm._checkpoint.tensors import element_dtype

from helpers import bf16_round_nearest_even


def _reference_bits(x: np.ndarray) -> np.ndarray:
    """Nearest bfloat16 of each finite float32, ties to the even significand, by comparing the two
    candidates (the truncation and the next bfloat16 away from zero) in float64."""
    u = x.view(np.uint32)
    low = (u >> np.uint32(16)).astype(np.uint32)  # truncated toward zero (same sign)
    high = low + np.uint32(1)
    as_f64 = [(b << np.uint32(16)).view(np.float32).astype(np.float64) for b in (low, high)]
    d_low = np.abs(x.astype(np.float64) - as_f64[0])
    d_high = np.abs(as_f64[1] - x.astype(np.float64))
    pick_high = (d_high < d_low) | ((d_high == d_low) & (low % 2 == 1))
    return np.where(pick_high, high, low).astype(np.uint16)


def _samples(rng) -> np.ndarray:
    random_bits = rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32)
    # Exact ties (low half 0x8000) on even and odd significands, one below and one above them.
    ties = (rng.integers(0, 2 ** 16, 4000, dtype=np.uint64).astype(np.uint32) << np.uint32(16))
    bits = np.concatenate([random_bits, ties | 0x8000, ties | 0x7FFF, ties | 0x8001])
    x = bits.view(np.float32)
    finite = np.isfinite(x) & np.isfinite((_reference_bits(np.where(np.isfinite(x), x, 0)).astype(np.uint32)
                                           << np.uint32(16)).view(np.float32))
    return x[finite]


def test_float32_to_bfloat16_bits_rounds_to_nearest_even():
    x = _samples(np.random.default_rng(0))
    assert (x.view(np.uint32) & 0xFFFF == 0x8000).sum() > 3000  # many exact ties are covered
    np.testing.assert_array_equal(T.float32_to_bfloat16_bits(x), _reference_bits(x))


def test_the_tests_rne_helper_agrees_with_the_reference():
    x = _samples(np.random.default_rng(1))
    got = bf16_round_nearest_even(x).view(np.uint32) >> np.uint32(16)
    np.testing.assert_array_equal(got.astype(np.uint16), _reference_bits(x))


def test_infinities_overflow_and_nans():
    big = np.array([np.inf, -np.inf, np.finfo(np.float32).max], np.float32)
    np.testing.assert_array_equal(T.float32_to_bfloat16_bits(big), [0x7F80, 0xFF80, 0x7F80])
    # NaNs whose payload sits only in the low half, or would carry into the exponent.
    nan_bits = np.array([0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FC00000, 0xFFBFFFFF], np.uint32)
    out = T.float32_to_bfloat16_bits(nan_bits.view(np.float32))
    back = T.bfloat16_bits_to_float32(out)
    assert np.isnan(back).all(), out
    np.testing.assert_array_equal(out >> 15, nan_bits >> 31)  # the sign is kept
    np.testing.assert_array_equal(out & 0x7F80, 0x7F80)  # still an all-ones exponent
    np.testing.assert_array_equal(out & 0x40, 0x40)  # quiet


def test_widening_is_exact_and_element_dtypes():
    bits = np.arange(0, 2 ** 16, 7, dtype=np.uint16)
    wide = T.bfloat16_bits_to_float32(bits)
    np.testing.assert_array_equal(wide.view(np.uint32), bits.astype(np.uint32) << np.uint32(16))
    finite = np.isfinite(wide)
    np.testing.assert_array_equal(T.float32_to_bfloat16_bits(wide[finite]), bits[finite])
    assert element_dtype("bfloat16") == np.dtype("<u2")
    for code in ("float32", "float16", "float64", "int64", "uint8", "bool", "complex64"):
        assert element_dtype(code) == np.dtype(code)
