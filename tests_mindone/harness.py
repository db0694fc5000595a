"""Compare a mindone model port with its transformers (torch) twin on the same weights.

Relative errors are ``||ms - torch|| / ||torch||``: of the forward output, and the largest over
every weight-normed layer of the ``g`` and of the ``v`` gradient of ``sum(out * R)`` (R fixed,
random). Both sides load one checkpoint written by the torch model, through mindone's own
``from_pretrained``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
import torch

NEW, OLD = "parametrizations", "weight_g/weight_v"


_NEW_G, _NEW_V = "parametrizations.weight.original0", "parametrizations.weight.original1"


def save_checkpoint(torch_model, layout: str) -> str:
    """Write ``torch_model`` with save_pretrained, its weight-norm keys renamed to ``layout``:
    ``OLD`` is torch.nn.utils.weight_norm's ``weight_g``/``weight_v``, ``NEW`` its
    parametrizations' ``original0``/``original1`` (same tensors, same shapes)."""
    import glob
    from safetensors.torch import load_file, save_file
    out = tempfile.mkdtemp(prefix="ms_weightnorm_mindone_")
    torch_model.save_pretrained(out, safe_serialization=True)
    (path,) = glob.glob(os.path.join(out, "*.safetensors"))
    state = load_file(path)
    renamed = {}
    for k, v in state.items():
        if layout == OLD:
            k = k.replace(_NEW_G, "weight_g").replace(_NEW_V, "weight_v")
        elif k.endswith(("weight_g", "weight_v")):
            k = k[: -len("weight_g")] + (_NEW_G if k.endswith("g") else _NEW_V)
        renamed[k] = v
    save_file(renamed, path, metadata={"format": "pt"})
    return out


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def torch_weight_norm_keys(torch_module) -> List[Tuple[str, str, str]]:
    """``(prefix, g key, v key)`` of every weight-normed layer, in either torch implementation."""
    found = []
    for n, _ in torch_module.named_parameters():
        if n.endswith(_NEW_G):
            found.append((n[: -len(_NEW_G)], n, n[: -len(_NEW_G)] + _NEW_V))
        elif n == "weight_g" or n.endswith(".weight_g"):
            found.append((n[: -len("weight_g")], n, n[: -len("weight_g")] + "weight_v"))
    return found


def _ms_key(base: str, ms_names: Sequence[str], suffix: str) -> Optional[str]:
    for cand in (f"{base}weight_{suffix}", f"{base}weight_norm_cell.weight_{suffix}"):
        if cand in ms_names:
            return cand
    return None


@dataclass
class Result:
    forward: float
    g: Optional[float]  # None: mindone has no g/v for these layers
    v: Optional[float]
    layers: int
    notes: List[str] = field(default_factory=list)


def compare(ms_cell, torch_cell, inputs: Sequence[np.ndarray], mode: int, out_index: Optional[int] = None) -> Result:
    """Forward and g/v gradients of ``ms_cell`` against ``torch_cell`` on ``inputs``, in ``mode``."""
    ms.set_context(mode=mode)
    torch_cell.zero_grad(set_to_none=True)
    try:
        t_in = [torch.tensor(x) for x in inputs]
        t_out = torch_cell(*t_in)
        if out_index is not None:
            t_out = t_out[out_index]
        rng = np.random.default_rng(123)
        r = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
        (t_out * torch.tensor(r)).sum().backward()
        t_params = dict(torch_cell.named_parameters())
        g_keys = torch_weight_norm_keys(torch_cell)
        ms_params = dict(ms_cell.parameters_and_names())
        pairs: List[Tuple[str, str, str]] = []  # (torch key, ms key, "g"/"v")
        for base, gk, vk in g_keys:
            for suffix, tk in (("g", gk), ("v", vk)):
                mk = _ms_key(base, list(ms_params), suffix)
                if mk is not None:
                    pairs.append((tk, mk, suffix))
        weights = [ms_params[mk] for _, mk, _ in pairs]
        r_ms = ms.Tensor(r)

        def loss_fn(*xs):
            out = ms_cell(*xs)
            if out_index is not None:
                out = out[out_index]
            return (out * r_ms).sum(), out

        ms_in = [ms.Tensor(x) for x in inputs]
        if weights:
            grad_fn = ms.value_and_grad(loss_fn, None, weights, has_aux=True)
            (_, out), grads = grad_fn(*ms_in)
        else:
            _, out = loss_fn(*ms_in)
            grads = []
        forward = rel(out.asnumpy(), t_out.detach().numpy())
        errs: Dict[str, List[float]] = {"g": [], "v": []}
        for (tk, _, suffix), grad in zip(pairs, grads):
            tg = t_params[tk].grad
            errs[suffix].append(rel(grad.asnumpy(), tg.numpy()) if tg is not None else float("nan"))
        return Result(forward, max(errs["g"]) if errs["g"] else None, max(errs["v"]) if errs["v"] else None,
                      len(g_keys) if pairs else 0)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
