"""bfloat16 <-> float32, bit for bit (numpy has no bfloat16 dtype)."""
from __future__ import annotations

import numpy as np


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 values, given as their uint16 bit patterns, to float32 (exact).

    >>> bfloat16_bits_to_float32(np.array([0x3FC0, 0xC000], np.uint16)).tolist()
    [1.5, -2.0]
    """
    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even); return the uint16 bit patterns.

    >>> float32_to_bfloat16_bits(np.array([1.5, -2.0], np.float32)).tolist()
    [16320, 49152]
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, np.float32))
    bits = rounded.astype(np.uint16)
    # Rounding could carry a NaN's payload into the infinity pattern: keep NaNs quiet NaNs.
    bits[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return bits
