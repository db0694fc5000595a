"""install(): where it binds, mindone's call forms, idempotence, reversal and refusal."""
import sys

import numpy as np
import mindspore as ms
import pytest
from mindspore import nn

import ms_weightnorm as wn
from ms_weightnorm.integrations import mindone as integration
from ms_weightnorm.integrations import mindspore_api

import mindone
import mindone.utils
import mindone.utils.weight_norm as mindone_wn


def _bindings(value):
    return sorted(f"{name}.{key}" for name, mod in list(sys.modules.items())
                  if isinstance(getattr(mod, "__dict__", None), dict) and not name.startswith("ms_weightnorm")
                  for key, v in list(vars(mod).items()) if v is value)


def test_every_binding_is_replaced_and_restored():
    assert integration.is_installed()
    ours = _bindings(integration.WeightNorm)
    # The class, its alias in mindone.utils, and the names modeling modules imported, including
    # the two that import it as weight_norm.
    for name in ("mindone.utils.WeightNorm", "mindone.utils.weight_norm.WeightNorm",
                 "mindone.transformers.models.encodec.modeling_encodec.WeightNorm",
                 "mindone.transformers.models.fastspeech2_conformer.modeling_fastspeech2_conformer.weight_norm",
                 "mindone.transformers.models.seamless_m4t_v2.modeling_seamless_m4t_v2.weight_norm",
                 "mindone.transformers.models.dac.modeling_dac.WeightNorm",
                 "mindone.transformers.models.vits.modeling_vits.WeightNorm"):
        assert name in ours
    import mindone.transformers.modeling_utils as tmu
    import mindone.diffusers.models.modeling_utils as dmu
    assert tmu._get_pt2ms_mappings._ms_weightnorm and dmu._get_pt2ms_mappings._ms_weightnorm
    assert integration.install() == integration.install()  # idempotent
    try:
        restored = integration.uninstall()
        assert not integration.is_installed() and integration.uninstall() == []
        original = mindone_wn.WeightNorm
        assert original is not integration.WeightNorm
        assert _bindings(integration.WeightNorm) == []
        assert sorted(_bindings(original)) == ours
        assert not hasattr(tmu._get_pt2ms_mappings, "_ms_weightnorm")
        assert not hasattr(ms.nn.utils, "weight_norm") and not hasattr(ms.mint.nn, "utils")
        assert "mindone.utils.WeightNorm" in restored
    finally:
        integration.install()
    assert _bindings(integration.WeightNorm) == ours


def test_untested_version_is_refused_before_anything_changes(monkeypatch):
    integration.uninstall()
    try:
        before = mindone_wn.WeightNorm
        monkeypatch.setattr(mindone, "__version__", "0.6.0")
        with pytest.raises(RuntimeError, match=r"mindone 0.6.0 is not a tested release \(tested: 0.5.0\); nothing "
                                               r"was changed"):
            integration.install()
        assert mindone_wn.WeightNorm is before and mindone.utils.WeightNorm is before
        assert not integration.is_installed() and not hasattr(ms.nn.utils, "weight_norm")
    finally:
        monkeypatch.undo()
        integration.install()


def test_mindone_call_forms():
    W = mindone.utils.WeightNorm
    conv = nn.Conv1d(4, 6, 5)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 4, 9)).astype(np.float32))
    before = conv(x).asnumpy()
    wrapper = W(conv, dim=2)  # torch's dim: the kernel axis
    assert wrapper.weight_norm_cell is conv and tuple(conv.weight_g.shape) == (1, 1, 1, 5)
    assert wrapper.kernel_size == conv.kernel_size and wrapper.stride == conv.stride
    np.testing.assert_allclose(wrapper(x).asnumpy(), before, rtol=1e-5, atol=1e-6)
    wrapper.remove_weight_norm()
    assert not wn.is_weight_normed(conv) and wrapper.use_weight_norm is False
    # name= and axis= (SpeechT5's positional conv passes axis=2).
    conv2 = nn.Conv1d(4, 6, 5)
    W(conv2, name="weight", axis=2)
    assert tuple(conv2.weight_g.shape) == (1, 1, 1, 5)
    dense = nn.Dense(3, 4)
    W(dense, dim=None)  # mindone's None: the whole tensor
    assert tuple(dense.weight_g.shape) == ()
    # The result thrown away: the layer stays weight-normed, and gets remove_weight_norm().
    layer = nn.Conv1d(2, 2, 3)
    W(layer)
    assert wn.is_weight_normed(layer)
    import copy
    twin = copy.deepcopy(layer)  # the method given to the layer follows a copy
    twin.remove_weight_norm()
    assert not wn.is_weight_normed(twin) and wn.is_weight_normed(layer)
    layer.remove_weight_norm()
    assert not wn.is_weight_normed(layer) and "remove_weight_norm" not in vars(layer)
    # The class-call form of UnivNet and Xcodec.
    layer2 = nn.Conv1d(2, 2, 3)
    W(layer2)
    W.remove_weight_norm(layer2, name="weight")
    assert not wn.is_weight_normed(layer2)


def test_model_init_after_weight_norm_re_splits():
    """Wav2Vec2's _init_weights sets module.conv.weight_norm_cell.weight to an initializer tensor."""
    import transformers
    import mindone.transformers as mt
    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, conv_dim=(8, 8), conv_stride=(2, 2), conv_kernel=(3, 3),
                                      num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                                      feat_extract_activation="relu", hidden_act="relu")
    model = mt.Wav2Vec2Model(cfg)  # runs post_init -> _init_weights
    layer = model.encoder.pos_conv_embed.conv.weight_norm_cell
    v = layer.weight_v.asnumpy()
    np.testing.assert_allclose(layer.weight_g.asnumpy(), np.sqrt((v ** 2).sum(axis=(0, 1, 2), keepdims=True)),
                               rtol=1e-5)
    # mindone's init draws std 2*sqrt(1/(kernel_size[0]*in)), and kernel_size[0] of MindSpore's Conv1d
    # is its size-1 axis: 2*sqrt(1/16) = 0.5. The layer's own init (HeUniform) has std 0.18.
    assert 0.4 < float(v.std()) < 0.6


def test_mindspore_api_names_are_added_only_where_missing():
    from mindspore import mint
    assert ms.nn.utils.weight_norm is mindspore_api.weight_norm
    assert mint.nn.utils.weight_norm is mindspore_api.weight_norm
    assert ms.nn.utils.parametrizations.weight_norm is mindspore_api.weight_norm
    assert mint.nn.utils.remove_weight_norm is mindspore_api.remove_weight_norm
    integration.uninstall()
    sentinel = object()
    ms.nn.utils.weight_norm = sentinel
    try:
        integration.install()
        assert ms.nn.utils.weight_norm is sentinel  # never replaced
        integration.uninstall()
        assert ms.nn.utils.weight_norm is sentinel  # and not removed
    finally:
        del ms.nn.utils.weight_norm
        integration.install()


def test_speecht5_positional_conv_call_sequence():
    """SpeechT5's positional conv tests hasattr(nn.utils.parametrizations, "weight_norm") and calls
    weight_norm(conv, name="weight", axis=2): neither exists in MindSpore. (Its constructor fails
    earlier in mindone's own code: nn.Conv1d(..., groups=) is not MindSpore's signature;
    SeamlessM4T's passes group= and builds. This runs SpeechT5's weight-norm lines on a conv
    built with group=.)"""
    conv = nn.Conv1d(16, 16, 8, pad_mode="pad", padding=4, group=2, has_bias=True)
    weight_norm = nn.utils.weight_norm
    if hasattr(nn.utils.parametrizations, "weight_norm"):
        weight_norm = nn.utils.parametrizations.weight_norm
    conv = weight_norm(conv, name="weight", axis=2)
    assert tuple(conv.weight_g.shape) == (1, 1, 1, 8)
    ms.mint.nn.utils.remove_weight_norm(conv)
    assert not wn.is_weight_normed(conv)
