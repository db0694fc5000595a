"""The HiFi-GAN porting example, end to end: PyTorch == MindSpore == folded == MINDIR."""
import importlib.util
import os
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from ms_weightnorm import is_weight_normed

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "hifigan_port.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("hifigan_port", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module executes.
    sys.modules["hifigan_port"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("hifigan_port", None)


def test_twin_has_weight_norm_on_every_conv(example):
    cfg = example.Config(upsample_initial_channel=16)
    net = example.MSGenerator(cfg)
    convs = [c for _, c in net.cells_and_names() if isinstance(c, (nn.Conv1d, nn.Conv1dTranspose))]
    # conv_pre + 4 upsamplers + 4 stages x 3 resblocks x 6 convs + conv_post
    assert len(convs) == 1 + 4 + 4 * 3 * 6 + 1
    assert all(is_weight_normed(c, "weight") for c in convs)


def test_port_matches_torch_before_and_after_removal_and_from_mindir(example, tmp_path):
    frames = 16
    outputs = example.run(str(tmp_path), example.Config(upsample_initial_channel=32), frames=frames)
    reference = outputs["torch"]
    assert reference.shape == (1, 1, frames * 8 * 8 * 2 * 2)
    assert np.abs(reference).max() > 1e-3  # a real signal, not a vanishing one
    for stage in ("mindspore", "removed", "mindir"):
        np.testing.assert_allclose(outputs[stage], reference, rtol=1e-4, atol=1e-6, err_msg=stage)
    # The exported graph carries the folded weights only.
    graph = nn.GraphCell(ms.load(os.path.join(str(tmp_path), "generator.mindir")))
    names = [p.name for p in graph.get_parameters()]
    assert "conv_pre.weight" in names and "resblocks.11.convs2.2.weight" in names
    assert not [n for n in names if n.endswith(("_g", "_v"))]
