"""After install(): mindnlp's models against real torch, same weights, both weight-norm APIs.

For each case (built from config, or by from_pretrained of a checkpoint torch wrote): the
forward, every g and v gradient (<= 1e-4 relative), cases.STEPS SGD steps taken with mindnlp's
``mindtorch.autograd.value_and_grad(fn, model.trainable_params())`` idiom, and the parameter
names and state-dict keys, which must be torch's. The references come from torch_ref.py.
"""
import math

import pytest

import cases
from harness import Result, Spec, run_cases

NEW, OLD = cases.NEW, cases.OLD
FWD, GRAD, STEP = 1e-5, 1e-4, 1e-4
LAYERS = {"linear": 1, "conv2d": 1, "wav2vec2": 1, "encodec": 20, "hifigan": 12}

SPECS = ([Spec(m, api, "config") for m in ("linear", "conv2d") for api in (NEW, OLD)]
         + [Spec(m, NEW, src) for m in ("wav2vec2", "encodec", "hifigan") for src in ("config", "pretrained")]
         # transformers falls back to the old API when parametrizations.weight_norm is missing.
         + [Spec(m, OLD, "config") for m in ("wav2vec2", "encodec", "hifigan")]
         + [Spec("hifigan", OLD, "pretrained")])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_cases(SPECS, workdir=str(tmp_path_factory.mktemp("mindnlp_parity")))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_matches_torch(results, spec):
    r = results[spec]
    if isinstance(r, Exception):
        raise r
    assert isinstance(r, Result)
    assert r.notes == [], r.notes  # same weights on both sides, as many g as torch
    assert r.n_g == LAYERS[spec.model]
    assert r.zero_g == 0
    assert r.forward < FWD, r.forward
    assert r.g < GRAD and r.v < GRAD, (r.g, r.v)
    assert r.steps is not None and r.steps < STEP and r.losses < STEP, (r.steps, r.losses)
    assert not any(math.isnan(x) for x in (r.forward, r.g, r.v))
    # torch's names and keys, no extra computed "weight" next to weight_g/weight_v.
    assert r.names == r.torch_names
    assert r.keys == r.torch_keys
    extra = [k for k in r.keys if k.endswith("weight") and k[: -len("weight")] + "weight_g" in r.keys]
    assert extra == []
