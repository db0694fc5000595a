"""Run a case of cases.py in mindnlp and compare it with real torch (torch_ref.py, a subprocess).

Relative errors are ``||mindnlp - torch|| / ||torch||``: of the forward outputs, of every
``g`` and ``v`` gradient of ``sum(out * R)`` (the largest is kept), and of the weights after
cases.STEPS SGD steps taken with mindnlp's training idiom,
``mindtorch.autograd.value_and_grad(fn, model.trainable_params())`` then ``optimizer.step()``
(``loss.backward()`` does nothing in mindnlp 0.5.1).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

import cases
import standins

HERE = os.path.dirname(os.path.abspath(__file__))


def rel(a, b) -> float:
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def torch_reference(jobs: List[dict], workdir: str) -> None:
    """Run torch_ref.py on ``jobs`` (each writes its ``out`` npz) with this venv's python."""
    path = os.path.join(workdir, "jobs.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(jobs, f)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of ours needed there
    proc = subprocess.run([sys.executable, os.path.join(HERE, "torch_ref.py"), path], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"torch_ref.py failed:\n{proc.stderr[-3000:]}")


def _load(path: str) -> Dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@dataclass
class Result:
    model: str
    api: str
    source: str
    forward: float
    g: float  # largest relative error over the g gradients
    v: float
    n_g: int  # weight-normed layers (g Parameters) in torch's model
    zero_g: int  # g gradients that are exactly zero in mindnlp
    steps: Optional[float]  # largest relative error of g and v after the SGD steps (None: not run)
    losses: Optional[float]
    names: List[str]  # mindnlp's parameter names
    keys: List[str]  # mindnlp's state-dict keys
    torch_names: List[str]
    torch_keys: List[str]
    notes: List[str] = field(default_factory=list)


def _extra_weight_keys(state: Dict[str, np.ndarray]) -> List[str]:
    # The old API before install(): the computed weight is listed next to weight_g/weight_v.
    return [k for k in state if k.endswith("weight") and k[: -len("weight")] + "weight_g" in state]


@dataclass(frozen=True)
class Spec:
    model: str
    api: str
    source: str  # "config" or "pretrained"

    @property
    def label(self) -> str:
        return f"{self.model}-{self.api}-{self.source}"


def run_cases(specs: List[Spec], steps: bool = True, workdir: Optional[str] = None) -> Dict[Spec, object]:
    """Build every case in mindnlp, run torch once for all of them, compare; returns a Result, or
    the exception a case raised (the "before" side fails in places), per Spec."""
    workdir = workdir or tempfile.mkdtemp(prefix="ms_weightnorm_mindnlp_")
    models, jobs, out = {}, [], {}
    for spec in specs:
        job = {"model": spec.model, "api": spec.api, "out": os.path.join(workdir, f"{spec.label}.npz")}
        if spec.source == "pretrained":
            job.update(source="pretrained", save_dir=os.path.join(workdir, f"{spec.label}-checkpoint"))
        else:
            try:
                m = cases.build(spec.model, spec.api)
                state = {k: cases.to_numpy(v) for k, v in m.state_dict().items()}
            except Exception as err:  # noqa: BLE001 - recorded, reported by the caller
                out[spec] = err
                continue
            for k in _extra_weight_keys(state):
                del state[k]
            job.update(source="state", state=os.path.join(workdir, f"{spec.label}-state.npz"))
            np.savez(job["state"], **state)
            models[spec] = m
        jobs.append(job)
    torch_reference(jobs, workdir)
    for spec, job in zip([s for s in specs if s not in out], jobs):
        try:
            if spec.source == "pretrained":
                models[spec] = cases.build(spec.model, spec.api, pretrained=job["save_dir"])
                standins.resync_rnn_weights(models[spec])  # mindtorch's LSTM keeps the pre-load weights otherwise
            out[spec] = compare(spec, models[spec], _load(job["out"]), steps)
        except Exception as err:  # noqa: BLE001
            out[spec] = err
    return out


def compare(spec: Spec, m, ref: Dict[str, np.ndarray], steps: bool = True) -> Result:
    """Compare the mindnlp model ``m`` of ``spec`` with torch's results ``ref``."""
    import torch  # mindtorch here
    import mindtorch
    model = spec.model
    notes = []
    state = {k: cases.to_numpy(v) for k, v in m.state_dict().items()}
    torch_keys = sorted(k[len("state/"):] for k in ref if k.startswith("state/"))
    for k in torch_keys:  # the same weights on both sides, or the comparison means nothing
        if k in state and rel(state[k], ref[f"state/{k}"]) > 1e-6:
            notes.append(f"weights differ: {k}")
    data = {k: torch.tensor(v) for k, v in cases.inputs(model).items()}
    outs = cases.outputs(model, m, data)
    forward = max(rel(cases.to_numpy(o), ref[f"out/{i}"]) for i, o in enumerate(outs))
    fn = cases.loss_fn(model, m, data)
    named = list(m.named_parameters())
    _, grads = mindtorch.autograd.value_and_grad(fn, [p for _, p in named], attach_grads=False)()
    errs = {"g": [], "v": []}
    zero_g = 0
    for (name, _), grad in zip(named, grads):
        kind = "g" if cases.is_g(name) else "v" if cases.is_v(name) else None
        if kind is None:
            continue
        gn = grad.asnumpy()  # value_and_grad(attach_grads=False) returns MindSpore tensors
        tg = ref.get(f"grad/{name}")
        errs[kind].append(rel(gn, tg) if tg is not None else float("inf"))
        if kind == "g" and not np.any(gn):
            zero_g += 1
    n_g = sum(1 for k in ref if k.startswith("grad/") and cases.is_g(k))
    if len(errs["g"]) != n_g:
        notes.append(f"{len(errs['g'])} g Parameters in mindnlp, {n_g} in torch")
    step_err = loss_err = None
    if steps:
        losses = []
        for _ in range(cases.STEPS):
            # The module's zero_grad: the optimizer's needs mindtorch.autograd.profiler, absent in 0.5.1.
            m.zero_grad()
            loss = mindtorch.autograd.value_and_grad(fn, m.trainable_params())()
            cases.sgd_step(m)
            losses.append(float(loss))
        loss_err = rel(losses, [float(ref[f"loss/{k}"]) for k in range(cases.STEPS)])
        after = dict(m.named_parameters())
        step_err = max((rel(cases.to_numpy(after[k[len("step/"):]]), v) if k[len("step/"):] in after else float("inf"))
                       for k, v in ref.items() if k.startswith("step/") and (cases.is_g(k) or cases.is_v(k)))
    return Result(model, spec.api, spec.source, forward, max(errs["g"], default=float("nan")),
                  max(errs["v"], default=float("nan")), n_g, zero_g, step_err, loss_err,
                  sorted(n for n, _ in named), sorted(state), sorted(str(n) for n in ref["param_names"]),
                  torch_keys, notes)
