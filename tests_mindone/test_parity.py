"""mindone's real model classes after install() against transformers' torch models, same weights.

Forward and the g and v gradients of every weight-normed layer, both torch checkpoint layouts
loaded through mindone's own from_pretrained, removal, PyNative and GRAPH_MODE (GRAPH_MODE on
the parts whose mindone code compiles on MindSpore 2.7.1: whole models fail in mindone's own
code, e.g. ``transpose(1, 2)`` and nn.LSTM, so single weight-normed layers and blocks there).
"""
import numpy as np
import mindspore as ms
import pytest
import torch

import ms_weightnorm as wn
from harness import NEW, OLD, compare, rel, save_checkpoint
import models

FWD, GRAD = 2e-5, 2e-5


def _check(result, layers=None):
    assert result.forward < FWD, result
    assert result.g is not None and result.g < GRAD, result
    assert result.v is not None and result.v < GRAD, result
    if layers is not None:
        assert result.layers == layers, result


def _torch_remove_all(module):
    for m in module.modules():
        if torch.nn.utils.parametrize.is_parametrized(m, "weight"):
            torch.nn.utils.parametrize.remove_parametrizations(m, "weight")


def _no_weight_norm_left(cell):
    return not any(n.endswith(("weight_g", "weight_v")) for n, _ in cell.parameters_and_names())


@pytest.mark.parametrize("layout", [NEW, OLD])
def test_encodec(layout):
    tm, mm = models.encodec(layout)
    ins = models.encodec_inputs()
    assert sum(1 for n, _ in mm.parameters_and_names() if n.endswith("weight_g")) == 20
    names = [p.name for p in mm.trainable_params()]
    assert len(names) == len(set(names))
    _check(compare(mm.encoder, tm.encoder, ins["encoder"], ms.PYNATIVE_MODE), layers=10)
    _check(compare(mm.decoder, tm.decoder, ins["decoder"], ms.PYNATIVE_MODE), layers=10)
    # GRAPH_MODE: the weight-normed convs (the encoder fails to compile in mindone's nn.LSTM code, and
    # EncodecConv1d's padding needs a kernel the CPU lacks, whose stand-in takes constant paddings only).
    rng = np.random.default_rng(5)
    _check(compare(mm.encoder.layers[0].conv, tm.encoder.layers[0].conv, ins["encoder"], ms.GRAPH_MODE), layers=1)
    _check(compare(mm.decoder.layers[-1].conv, tm.decoder.layers[-1].conv,
                   [rng.standard_normal((1, 4, 16)).astype(np.float32)], ms.GRAPH_MODE), layers=1)
    # Removal folds the weights: outputs unchanged, plain Parameters again.
    with torch.no_grad():
        t_before = tm.encoder(torch.tensor(ins["encoder"][0])).numpy()
    assert len(wn.remove_all_weight_norm(mm)) == 20
    _torch_remove_all(tm)
    assert _no_weight_norm_left(mm)
    with torch.no_grad():
        t_after = tm.encoder(torch.tensor(ins["encoder"][0])).numpy()
    m_after = mm.encoder(ms.Tensor(ins["encoder"][0])).asnumpy()
    assert rel(m_after, t_after) < FWD and rel(t_after, t_before) < FWD


@pytest.mark.parametrize("layout", [NEW, OLD])
def test_wav2vec2_positional_conv(layout):
    tm, mm = models.wav2vec2(layout)
    conv = mm.encoder.pos_conv_embed.conv
    layer = conv.weight_norm_cell
    # torch's dim=2 (the kernel axis): g has torch's values, with MindSpore's extra size-1 axis.
    t_g = tm.encoder.pos_conv_embed.conv.parametrizations.weight.original0.detach().numpy()
    assert t_g.shape == (1, 1, 8) and tuple(layer.weight_g.shape) == (1, 1, 1, 8)
    np.testing.assert_allclose(layer.weight_g.asnumpy().reshape(t_g.shape), t_g, rtol=1e-6)
    _check(compare(mm.encoder.pos_conv_embed, tm.encoder.pos_conv_embed, models.wav2vec2_inputs(),
                   ms.PYNATIVE_MODE), layers=1)
    x = models.wav2vec2_inputs()[0].transpose(0, 2, 1).copy()
    _check(compare(conv, tm.encoder.pos_conv_embed.conv, [x], ms.GRAPH_MODE), layers=1)
    # mindone's form: remove_weight_norm() on the wrapper.
    conv.remove_weight_norm()
    _torch_remove_all(tm.encoder.pos_conv_embed)
    assert _no_weight_norm_left(mm.encoder.pos_conv_embed)
    with torch.no_grad():
        t_out = tm.encoder.pos_conv_embed(torch.tensor(models.wav2vec2_inputs()[0])).numpy()
    assert rel(mm.encoder.pos_conv_embed(ms.Tensor(models.wav2vec2_inputs()[0])).asnumpy(), t_out) < FWD


def _vocoder(build, inputs):
    tm, mm = build(NEW)
    n_torch = len([n for n, _ in tm.named_parameters() if n.endswith("original0")])
    n_ms = len([n for n, _ in mm.parameters_and_names() if n.endswith("weight_g")])
    assert n_ms == n_torch == 12
    names = [p.name for p in mm.trainable_params()]
    assert len(names) == len(set(names))  # GRAPH_MODE and optimizers need unique names
    _check(compare(mm, tm, inputs, ms.PYNATIVE_MODE), layers=12)
    # GRAPH_MODE on a residual block (the whole model fails in mindone's own transpose(1, 2)).
    x = np.random.default_rng(6).standard_normal((1, 8, 10)).astype(np.float32)
    _check(compare(mm.resblocks[0], tm.resblocks[0], [x], ms.GRAPH_MODE), layers=4)
    # The model's own remove_weight_norm(): mindone's code path for each model.
    mm.remove_weight_norm()
    tm.remove_weight_norm() if not any("parametrizations" in n for n, _ in tm.named_parameters()) else _torch_remove_all(tm)
    assert _no_weight_norm_left(mm)
    with torch.no_grad():
        t_out = tm(torch.tensor(inputs[0])).numpy()
    assert rel(mm(ms.Tensor(inputs[0])).asnumpy(), t_out) < FWD


def test_speecht5_hifigan():
    """SpeechT5 calls mindspore.nn.utils.weight_norm / remove_weight_norm, absent from MindSpore."""
    _vocoder(models.speecht5_hifigan, models.speecht5_hifigan_inputs())


def test_fastspeech2_hifigan_apply_weight_norm_is_no_longer_a_no_op():
    """mindone's apply_weight_norm() drops its WeightNorm's result; remove_weight_norm() calls
    layer.remove_weight_norm() on the bare layers."""
    _vocoder(models.fastspeech2_hifigan, models.fastspeech2_hifigan_inputs())


def test_from_pretrained_reports_no_weight_norm_key_missing_or_unexpected():
    import transformers
    import mindone.transformers as mt
    for layout in (NEW, OLD):
        tm, _ = models.encodec(layout)
        _, info = mt.EncodecModel.from_pretrained(save_checkpoint(tm, layout), output_loading_info=True)
        wn_keys = [k for k in list(info["missing_keys"]) + list(info["unexpected_keys"])
                   if "weight_g" in k or "weight_v" in k or "original" in k]
        assert wn_keys == [], (layout, info)


@pytest.mark.parametrize("layout", [NEW, OLD])
def test_diffusers_autoencoder_oobleck(layout):
    """Through mindone.diffusers' own loader (built under no_init_parameters); torch uses the old
    torch.nn.utils.weight_norm here."""
    tm, mm = models.oobleck(layout)
    _check(compare(mm.encoder, tm.encoder, models.oobleck_inputs(), ms.PYNATIVE_MODE), layers=16)
    x = np.random.default_rng(8).standard_normal((1, 4, 12)).astype(np.float32)
    _check(compare(mm.encoder.block[0].res_unit1.conv1, tm.encoder.block[0].res_unit1.conv1, [x], ms.GRAPH_MODE),
           layers=1)


@pytest.mark.parametrize("build, n, own_remover", [(models.dac, 36, False), (models.univnet, 10, True)],
                         ids=["DAC", "UnivNet"])
def test_apply_weight_norm_that_was_a_no_op_gives_torchs_g_and_v(build, n, own_remover):
    """DAC and UnivNet (mint.nn.Conv1d, 3-D weights) use kernels the CPU lacks in their forward, so
    this compares what apply_weight_norm() builds: the same layers as torch, with torch's g and v.
    UnivNet's remove_weight_norm calls WeightNorm.remove_weight_norm(layer) on the class; DAC's
    remove_weight_norm body is commented out in mindone 0.5.0, so remove_all_weight_norm stands in.)"""
    from harness import torch_weight_norm_keys, _ms_key
    tm, mm = build(NEW)
    keys = torch_weight_norm_keys(tm)
    ms_params = dict(mm.parameters_and_names())
    assert len(keys) == n and sum(1 for k in ms_params if k.endswith("weight_g")) == n
    t_params = dict(tm.named_parameters())
    for base, gk, vk in keys:
        for suffix, tk in (("g", gk), ("v", vk)):
            mk = _ms_key(base, list(ms_params), suffix)
            assert mk is not None, (base, suffix)
            t = t_params[tk].detach().numpy()
            m = ms_params[mk].asnumpy()
            assert m.size == t.size
            np.testing.assert_allclose(m.reshape(t.shape), t, rtol=1e-5, atol=1e-7)
    if own_remover:
        mm.remove_weight_norm()
    else:
        assert len(wn.remove_all_weight_norm(mm)) == n
    assert _no_weight_norm_left(mm)
