"""The PyTorch reference, run by real torch in a subprocess (never imports mindnlp).

mindnlp redirects ``import torch`` to mindtorch in its own process, so the tests run this
script with the same venv's python: ``python torch_ref.py JOBS.json`` (a list of jobs, so that torch
and transformers are imported once for all of them). A job names a case of
cases.py, where its weights come from, and where to write the results (an npz):

- ``"source": "state"``: build from config, then load the weights the mindnlp model has (an npz
  of its state dict), so the mindnlp model stays exactly as mindnlp built it;
- ``"source": "pretrained"``: build from config with the seed, ``save_pretrained`` to
  ``save_dir`` (before ``apply_weight_norm()`` for the HiFi-GAN), then ``from_pretrained`` that
  directory as the mindnlp side will.

Results: ``out/<i>`` outputs, ``grad/<name>`` gradients of the loss, ``state/<name>`` the weights
used, ``loss/<k>`` and ``step/<name>`` the losses and the weights after cases.STEPS SGD steps.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import cases  # noqa: E402

assert "mindnlp" not in sys.modules and "mindtorch" not in sys.modules, "torch_ref.py must run real torch"


def run(job: dict) -> None:
    model, api = job["model"], job["api"]
    torch.manual_seed(0)
    if job["source"] == "pretrained":
        cases.build(model, api, seed=job.get("seed", 0), apply=False).save_pretrained(job["save_dir"])
        m = cases.build(model, api, pretrained=job["save_dir"])
    else:
        m = cases.build(model, api)
        with np.load(job["state"]) as state:
            m.load_state_dict({k: torch.tensor(state[k]) for k in state.files}, strict=True)
    data = {k: torch.tensor(v) for k, v in cases.inputs(model).items()}
    res = {f"state/{k}": cases.to_numpy(v) for k, v in m.state_dict().items()}
    res["param_names"] = np.array([n for n, _ in m.named_parameters()])
    fn = cases.loss_fn(model, m, data)
    m.zero_grad(set_to_none=True)
    outs = cases.outputs(model, m, data)
    for i, o in enumerate(outs):
        res[f"out/{i}"] = cases.to_numpy(o)
    fn().backward()
    for name, p in m.named_parameters():
        if p.grad is not None:
            res[f"grad/{name}"] = cases.to_numpy(p.grad)
    opt = torch.optim.SGD(m.parameters(), lr=cases.LR)  # the reference: torch's own optimizer
    for k in range(cases.STEPS):
        opt.zero_grad()
        loss = fn()
        loss.backward()
        opt.step()
        res[f"loss/{k}"] = np.array(float(loss))
    for name, p in m.named_parameters():
        res[f"step/{name}"] = cases.to_numpy(p)
    np.savez(job["out"], **res)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        for one in json.load(f):
            run(one)
