"""mindone's SEW and SEW-D after install(): built, initialised and compared with torch (issue 29).

Their weight init calls ``module.weight.data.set_data(...)`` on the weight-normed positional
conv; ``.data`` of the computed weight re-splits like ``weight.set_data``, so the models build
(before, AttributeError). Their weight-normed layer, the positional conv embedding, is compared
with transformers' torch model on the same checkpoint (both torch layouts): forward, and the
g and v gradients, in PyNative and (the conv alone) GRAPH_MODE. The whole models' forward
reaches kernels the CPU lacks beyond the stand-ins of cpu_kernels.py (RandExt, Arange).
"""
import numpy as np
import mindspore as ms
import pytest

from harness import NEW, OLD, compare
from models import _build

FWD, GRAD = 2e-5, 2e-5
_SHARED = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               conv_dim=(8, 8), conv_stride=(2, 2), conv_kernel=(3, 3), num_conv_pos_embeddings=8,
               num_conv_pos_embedding_groups=2, squeeze_factor=2, feat_extract_activation="relu",
               hidden_act="relu")


def sew(layout):
    import transformers
    import mindone.transformers as mt
    return _build(transformers.SEWModel, mt.SEWModel, transformers.SEWConfig(**_SHARED), layout)


def sew_d(layout):
    import transformers
    import mindone.transformers as mt
    cfg = transformers.SEWDConfig(**_SHARED, max_position_embeddings=64, position_buckets=16)
    return _build(transformers.SEWDModel, mt.SEWDModel, cfg, layout)


MODELS = {"SEW": sew, "SEW-D": sew_d}


def _check(result):
    assert result.layers == 1, result
    assert result.forward < FWD and result.g < GRAD and result.v < GRAD, result


@pytest.mark.parametrize("layout", [NEW, OLD])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_builds_and_its_weight_normed_layer_matches_torch(name, layout):
    tm, mm = MODELS[name](layout)
    conv = mm.encoder.pos_conv_embed.conv.weight_norm_cell
    t_conv = tm.encoder.pos_conv_embed.conv
    t_g = t_conv.parametrizations.weight.original0.detach().numpy()
    t_v = t_conv.parametrizations.weight.original1.detach().numpy()
    # torch's dim=2 (the kernel axis), with MindSpore's extra size-1 axis; torch's values loaded.
    assert tuple(conv.weight_g.shape) == (1, 1, 1, 8)
    np.testing.assert_allclose(conv.weight_g.asnumpy().reshape(t_g.shape), t_g, rtol=1e-6)
    np.testing.assert_allclose(conv.weight_v.asnumpy().reshape(t_v.shape), t_v, rtol=1e-6)
    x = np.random.default_rng(2).standard_normal((1, 16, 12)).astype(np.float32)
    _check(compare(mm.encoder.pos_conv_embed, tm.encoder.pos_conv_embed, [x], ms.PYNATIVE_MODE))
    _check(compare(mm.encoder.pos_conv_embed.conv, t_conv, [x], ms.GRAPH_MODE))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mindone_init_through_data_re_splits(name):
    # mindone's _init_weights on the conv itself: module.weight.data.set_data(HeNormal draw).
    _, mm = MODELS[name](NEW)
    conv = mm.encoder.pos_conv_embed.conv.weight_norm_cell
    v_before = conv.weight_v.asnumpy().copy()
    mm._init_weights(conv)
    w = conv.weight.asnumpy().astype(np.float64)
    g, v = conv.weight_g.asnumpy(), conv.weight_v.asnumpy()
    assert not np.allclose(v, v_before)  # a new draw went in
    np.testing.assert_allclose(w, v, rtol=1e-5, atol=1e-7)  # g * v / ||v|| with g = ||v||: the value itself
    norms = np.sqrt((v.astype(np.float64) ** 2).sum(axis=(0, 1, 2), keepdims=True))  # all axes but the kernel's
    np.testing.assert_allclose(g, norms, rtol=1e-5)
    np.testing.assert_array_equal(conv.bias.asnumpy(), 0)
