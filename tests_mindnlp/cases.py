"""The models under test, written once for both sides.

``import torch`` gives real PyTorch in torch_ref.py's process and mindtorch in a process that
imported mindnlp, so the same builders and loss run on both. Each case: a tiny config, how to
build it (weight norm applied the way transformers does), inputs, and the outputs whose
``sum(out * R)`` is the loss. Dropout is off and models are in eval mode, so both sides compute
the same function.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List

import numpy as np

NEW, OLD = "parametrizations", "weight_norm"  # torch.nn.utils.parametrizations.weight_norm / the old API
MODELS = ("linear", "conv2d", "wav2vec2", "encodec", "hifigan")
STEPS, LR = 3, 0.05  # plain SGD steps compared with torch's


def sgd_step(m) -> None:
    """``p -= LR * p.grad`` for every parameter with a gradient: torch.optim.SGD(lr=LR)'s step,
    by hand because mindtorch 0.5.1's optimizers have no CPU kernels (SGD needs "raw_sgd", Adam
    and AdamW "addcdiv")."""
    import torch
    with torch.no_grad():
        for p in m.parameters():
            if p.grad is not None:
                p.copy_(p - LR * p.grad)


def to_numpy(t) -> np.ndarray:
    return np.array(t.detach().cpu().numpy(), copy=True)  # a copy: torch's numpy() shares memory


@contextlib.contextmanager
def weight_norm_api(api: str):
    """Make transformers pick ``api``: it uses parametrizations.weight_norm when that name exists
    (torch >= 2.1) and falls back to the old nn.utils.weight_norm otherwise."""
    import torch
    mod = torch.nn.utils.parametrizations
    saved = vars(mod).get("weight_norm")
    if api == OLD and saved is not None:
        delattr(mod, "weight_norm")
    try:
        yield
    finally:
        if api == OLD and saved is not None:
            setattr(mod, "weight_norm", saved)


def _configs():
    import transformers
    return {
        "wav2vec2": (transformers.Wav2Vec2Model, transformers.Wav2Vec2Config(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            conv_dim=(8, 8), conv_stride=(2, 2), conv_kernel=(3, 3), num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=2, feat_extract_activation="relu", hidden_act="relu",
            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
            final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, do_stable_layer_norm=False)),
        "encodec": (transformers.EncodecModel, transformers.EncodecConfig(
            num_filters=4, hidden_size=8, codebook_size=16, codebook_dim=8, upsampling_ratios=[2, 2],
            num_lstm_layers=1, num_residual_layers=1)),
        "hifigan": (transformers.SpeechT5HifiGan, transformers.SpeechT5HifiGanConfig(
            model_in_dim=8, upsample_initial_channel=16, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False)),
    }


def build(model: str, api: str, seed: int = 0, pretrained: str = "", apply: bool = True):
    """Build ``model`` from its config (``pretrained`` empty) or from_pretrained(``pretrained``),
    with weight norm from ``api``. The HiFi-GAN gets ``apply_weight_norm()`` after building
    (unless ``apply`` is false), as its users do: it is built without."""
    import torch
    torch.manual_seed(seed)
    with weight_norm_api(api):
        if model == "linear":
            m = torch.nn.Linear(4, 3)
            if api == NEW:
                torch.nn.utils.parametrizations.weight_norm(m)
            else:
                torch.nn.utils.weight_norm(m)
            return m.eval()
        if model == "conv2d":  # dim=1: a middle axis (mindtorch's own norm recursed without end)
            m = torch.nn.Conv2d(3, 4, 3)
            (torch.nn.utils.parametrizations.weight_norm if api == NEW else torch.nn.utils.weight_norm)(m, dim=1)
            return m.eval()
        cls, config = _configs()[model]
        m = cls.from_pretrained(pretrained) if pretrained else cls(config)
        if model == "hifigan" and apply:
            m.apply_weight_norm()
        return m.eval()


def inputs(model: str) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng({"linear": 1, "wav2vec2": 2, "encodec": 3, "hifigan": 4, "conv2d": 5}[model])
    shapes = {"linear": {"x": (2, 4)}, "conv2d": {"x": (1, 3, 6, 6)}, "wav2vec2": {"x": (1, 64)},
              "encodec": {"x": (1, 1, 32), "z": (1, 8, 8)}, "hifigan": {"x": (1, 6, 8)}}[model]
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def outputs(model: str, m, xs: Dict) -> List:
    """The tensors compared (and summed into the loss). Encodec: its encoder and its decoder
    (the quantizer between them has no gradient in either framework)."""
    if model in ("linear", "conv2d"):
        return [m(xs["x"])]
    if model == "wav2vec2":
        return [m(xs["x"]).last_hidden_state]
    if model == "encodec":
        return [m.encoder(xs["x"]), m.decoder(xs["z"])]
    return [m(xs["x"])]


def weighting(index: int, shape) -> np.ndarray:
    """The fixed random R of output ``index`` (same on both sides for the same shape)."""
    return np.random.default_rng(100 + index).standard_normal(tuple(shape)).astype(np.float32)


def loss_fn(model: str, m, xs: Dict) -> Callable[[], object]:
    """``sum_i sum(out_i * R_i)`` over :func:`outputs`; ``xs`` holds the framework's tensors."""
    import torch

    def fn():
        total = None
        for i, out in enumerate(outputs(model, m, xs)):
            term = (out * torch.tensor(weighting(i, out.shape))).sum()
            total = term if total is None else total + term
        return total
    return fn


def is_g(name: str) -> bool:
    return name.endswith(("parametrizations.weight.original0", "weight_g"))


def is_v(name: str) -> bool:
    return name.endswith(("parametrizations.weight.original1", "weight_v"))
