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


DISCRIMINATORS = os.path.join(os.path.dirname(EXAMPLE), "hifigan_discriminators.py")


@pytest.fixture(scope="module")
def gan_example(example):
    spec = importlib.util.spec_from_file_location("hifigan_discriminators", DISCRIMINATORS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hifigan_discriminators"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("hifigan_discriminators", None)


def test_discriminators_have_hifigans_norms(gan_example):
    from ms_weightnorm import is_spectral_normed
    dcfg = gan_example.DConfig()
    msd = gan_example.MSMultiScaleDiscriminator(dcfg)
    mpd = gan_example.MSMultiPeriodDiscriminator(dcfg)
    first, others = msd.discriminators[0], list(msd.discriminators)[1:]
    convs = lambda d: list(d.convs) + [d.conv_post]  # noqa: E731
    assert all(is_spectral_normed(c) and not is_weight_normed(c) for c in convs(first))
    assert all(is_weight_normed(c) for d in others for c in convs(d))
    assert all(is_weight_normed(c) for d in mpd.discriminators for c in convs(d))
    assert [d.period for d in mpd.discriminators] == [2, 3, 5, 7, 11]


def test_gan_port_and_training_steps_match_torch(gan_example, example, tmp_path, capfd):
    """Ported discriminators equal PyTorch's; D and G steps in GRAPH_MODE track PyTorch's.

    At MindSpore's default log level (this test's), compiling the loss cells once warned
    "Some side effect nodes were eliminated by mistake" for the feature maps the D loss leaves
    unused: the losses take only the outputs they use now, and the warning is gone."""
    # Graph compilation dominates the time here: fewer, shorter conv stacks than HiFi-GAN's.
    cfg = example.Config(upsample_initial_channel=16, upsample_rates=(8, 4), upsample_kernel_sizes=(16, 8),
                         resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))
    dcfg = gan_example.DConfig(periods=(2, 3), mpd_channels=(4, 8, 16), msd_channels=(8, 16, 16, 16),
                               msd_kernels=(15, 41, 41, 5), msd_strides=(1, 2, 4, 1), msd_groups=(1, 4, 4, 1))
    r = gan_example.run(str(tmp_path), cfg, dcfg, frames=4, steps=2)
    assert r["mpd"] < 1e-4 and r["msd"] < 1e-4
    for framework in ("torch", "ms"):
        assert r[f"{framework}_d"][1] != r[f"{framework}_d"][0]  # the steps did train
    np.testing.assert_allclose(r["ms_d"], r["torch_d"], rtol=1e-4)
    np.testing.assert_allclose(r["ms_g"], r["torch_g"], rtol=1e-4)
    # u, v advanced by 2 power steps per discriminator call (real and generated), 4 per
    # iteration, exactly as PyTorch's did.
    np.testing.assert_allclose(r["ms_u"], r["torch_u"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(r["ms_v"], r["torch_v"], rtol=1e-3, atol=1e-4)
    assert "eliminated by mistake" not in capfd.readouterr().err
