"""DAC's encoder runs on the CPU with cpu_kernels.py's stand-ins (mint.nn.Conv1d among them) and
matches torch: forward and the g and v gradients of its 16 weight-normed convs, weight norm
applied by mindone's apply_weight_norm() after install(). DAC's decoder and UnivNet still need
mint.nn.ConvTranspose1d (kernel ConvTranspose2D), which has no CPU kernel and no stand-in here.
"""
import numpy as np
import mindspore as ms

import models
from harness import compare


def test_dac_encoder_matches_torch():
    tm, mm = models.dac()
    x = np.random.default_rng(2).standard_normal((1, 1, 32)).astype(np.float32)
    result = compare(mm.encoder, tm.encoder, [x], ms.PYNATIVE_MODE)
    assert result.layers == 16, result
    assert result.forward < 2e-5 and result.g < 2e-5 and result.v < 2e-5, result
