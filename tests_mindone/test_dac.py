"""DAC runs on the CPU with cpu_kernels.py's stand-ins (mint.nn.Conv1d and mindone's
ConvTranspose1d among them) and matches torch: forward and the g and v gradients of the 16
weight-normed convs of its encoder and the 16 of its decoder, weight norm applied by mindone's
apply_weight_norm() after install(). UnivNet still stops on the CPU at mindone's einsum, which
MindSpore 2.7.1 runs on Ascend only.
"""
import numpy as np
import mindspore as ms

import models
from harness import compare


def test_dac_encoder_and_decoder_match_torch():
    tm, mm = models.dac()
    rng = np.random.default_rng(2)
    for part, x in (("encoder", rng.standard_normal((1, 1, 32))), ("decoder", rng.standard_normal((1, 8, 8)))):
        result = compare(getattr(mm, part), getattr(tm, part), [x.astype(np.float32)], ms.PYNATIVE_MODE)
        assert result.layers == 16, (part, result)
        assert result.forward < 2e-5 and result.g < 2e-5 and result.v < 2e-5, (part, result)
