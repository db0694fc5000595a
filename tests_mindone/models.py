"""Tiny configurations of the mindone ports under test and their transformers twins.

Each builder returns ``(torch_model, mindone_model)`` loaded from one checkpoint written by the
torch model (``layout``: the torch weight-norm key layout in that checkpoint). Vocoders, which
torch builds without weight norm, get ``apply_weight_norm()`` on both sides after loading.
"""
from __future__ import annotations

import numpy as np
import torch

from harness import NEW, save_checkpoint


def _build(torch_cls, ms_cls, config, layout, seed=0, vocoder=False):
    torch.manual_seed(seed)
    tm = torch_cls(config).eval()
    path = save_checkpoint(tm, layout)
    mm = ms_cls.from_pretrained(path)
    mm.set_train(False)
    if vocoder:
        tm.apply_weight_norm()
        mm.apply_weight_norm()
    return tm, mm


def encodec(layout=NEW):
    import transformers
    import mindone.transformers as mt
    cfg = transformers.EncodecConfig(num_filters=4, hidden_size=8, codebook_size=16, codebook_dim=8,
                                     upsampling_ratios=[2, 2], num_lstm_layers=1, num_residual_layers=1)
    return _build(transformers.EncodecModel, mt.EncodecModel, cfg, layout)


def encodec_inputs():
    rng = np.random.default_rng(1)
    return {"encoder": [rng.standard_normal((1, 1, 32)).astype(np.float32)],
            "decoder": [rng.standard_normal((1, 8, 8)).astype(np.float32)]}


def wav2vec2(layout=NEW):
    import transformers
    import mindone.transformers as mt
    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                      conv_dim=(8, 8), conv_stride=(2, 2), conv_kernel=(3, 3),
                                      num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                                      feat_extract_activation="relu", hidden_act="relu")
    return _build(transformers.Wav2Vec2Model, mt.Wav2Vec2Model, cfg, layout)


def wav2vec2_inputs():
    return [np.random.default_rng(2).standard_normal((1, 12, 16)).astype(np.float32)]


def speecht5_hifigan(layout=NEW):
    import transformers
    import mindone.transformers as mt
    cfg = transformers.SpeechT5HifiGanConfig(model_in_dim=8, upsample_initial_channel=16, upsample_rates=[2, 2],
                                             upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3],
                                             resblock_dilation_sizes=[[1, 3]], normalize_before=False)
    return _build(transformers.SpeechT5HifiGan, mt.SpeechT5HifiGan, cfg, layout, vocoder=True)


def speecht5_hifigan_inputs():
    return [np.random.default_rng(3).standard_normal((1, 6, 8)).astype(np.float32)]


def fastspeech2_hifigan(layout=NEW):
    """mindone's apply_weight_norm() here called its WeightNorm and dropped the result: a no-op."""
    import transformers
    import mindone.transformers as mt
    cfg = transformers.FastSpeech2ConformerHifiGanConfig(
        model_in_dim=8, upsample_initial_channel=16, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False)
    return _build(transformers.FastSpeech2ConformerHifiGan, mt.FastSpeech2ConformerHifiGan, cfg, layout,
                  vocoder=True)


def fastspeech2_hifigan_inputs():
    return [np.random.default_rng(4).standard_normal((1, 6, 8)).astype(np.float32)]


def oobleck(layout=NEW):
    """diffusers' AutoencoderOobleck: torch.nn.utils.weight_norm in torch, mindone's WeightNorm in
    the port, both in the constructors; loaded through mindone.diffusers' from_pretrained."""
    import diffusers
    import mindone.diffusers as md
    kwargs = dict(encoder_hidden_size=4, downsampling_ratios=[2, 2], channel_multiples=[1, 2], decoder_channels=4,
                  decoder_input_channels=4, audio_channels=1)
    torch.manual_seed(0)
    tm = diffusers.AutoencoderOobleck(**kwargs).eval()
    path = save_checkpoint(tm, layout)
    mm = md.AutoencoderOobleck.from_pretrained(path)
    mm.set_train(False)
    return tm, mm


def oobleck_inputs():
    return [np.random.default_rng(7).standard_normal((1, 1, 32)).astype(np.float32)]


def dac(layout=NEW):
    import transformers
    import mindone.transformers as mt
    cfg = transformers.DacConfig(encoder_hidden_size=4, downsampling_ratios=[2, 2], decoder_hidden_size=8, n_codebooks=2,
                                 codebook_size=16, codebook_dim=4, hidden_size=8)
    return _build(transformers.DacModel, mt.DacModel, cfg, layout, vocoder=True)


def univnet(layout=NEW):
    import transformers
    import mindone.transformers as mt
    cfg = transformers.UnivNetConfig(model_in_channels=4, model_hidden_channels=4, num_mel_bins=4,
                                     resblock_kernel_sizes=[3], resblock_stride_sizes=[2],
                                     resblock_dilation_sizes=[[1, 3]], kernel_predictor_num_blocks=1,
                                     kernel_predictor_hidden_channels=4, kernel_predictor_conv_size=3)
    return _build(transformers.UnivNetModel, mt.UnivNetModel, cfg, layout, vocoder=True)
