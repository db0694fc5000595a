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


def save_checkpoint(torch_model, layout: str) -> str:
    """Write ``torch_model`` with save_pretrained; ``OLD`` renames weight norm to torch.nn.utils.weight_norm's keys."""
    out = tempfile.mkdtemp(prefix="ms_weightnorm_mindone_")
    torch_model.save_pretrained(out, safe_serialization=True)
    if layout == OLD:
        from safetensors.torch import load_file, save_file
        path = os.path.join(out, "model.safetensors")
        state = load_file(path)
        renamed = {}
        for k, v in state.items():
            k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                   "weight_v")
            renamed[k] = v
        assert renamed.keys() != state.keys() or not any("original0" in k for k in state)
        save_file(renamed, path, metadata={"format": "pt"})
    return out


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def torch_weight_norm_keys(torch_module) -> List[str]:
    """The torch Parameter names of g (``...original0``) of every weight-normed layer."""
    return [n for n, _ in torch_module.named_parameters() if n.endswith("parametrizations.weight.original0")]


def _ms_key(torch_g_key: str, ms_names: Sequence[str], suffix: str) -> Optional[str]:
    base = torch_g_key[: -len("parametrizations.weight.original0")]
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
        for gk in g_keys:
            for suffix, tk in (("g", gk), ("v", gk[:-1] + "1")):
                mk = _ms_key(gk, list(ms_params), suffix)
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
