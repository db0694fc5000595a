"""Before/after table: mindtorch's own weight norm vs after ms_weightnorm's install(), against torch.

Run in the mindnlp venv (tools/mindnlp/run_tests.sh creates it):
    PYTHONPATH=src .venv-mindnlp/bin/python tools/mindnlp/measure.py
Prints a Markdown table of relative errors against real torch (run in a subprocess) on the same
weights: the forward, the largest g and the largest v gradient error over the weight-normed
layers, how many g gradients are exactly zero, and the largest g/v error after 3 SGD steps
taken with mindnlp's value_and_grad idiom. "before" is mindnlp 0.5.1 as installed; "after" the
same code after ms_weightnorm.integrations.mindnlp.install(). The test stand-ins of
tests_mindnlp/standins.py (conv_transpose1d, leaky_relu's default, LSTM weight lists) are used in
both.
"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "tests_mindnlp"))

import mindnlp  # noqa: E402,F401

import standins  # noqa: E402

standins.install()

import cases  # noqa: E402
from harness import Spec, run_cases  # noqa: E402

from ms_weightnorm.integrations import mindnlp as integration  # noqa: E402

NAMES = {"linear": "Linear(4, 3)", "conv2d": "Conv2d(3, 4, 3), dim=1", "wav2vec2": "Wav2Vec2Model",
         "encodec": "EncodecModel", "hifigan": "SpeechT5HifiGan + apply_weight_norm()"}
SPECS = [Spec(m, api, src) for m in ("linear", "conv2d", "wav2vec2", "encodec", "hifigan")
         for api in (cases.NEW, cases.OLD) for src in ("config", "pretrained")
         if not (m in ("linear", "conv2d") and src == "pretrained")]


def _cells(r):
    if isinstance(r, Exception):
        msg = str(r).strip().splitlines()[0][:80] if str(r).strip() else ""
        return [f"fails: {type(r).__name__}: {msg}", "", "", "", ""]
    steps = "n/a" if r.steps is None else f"{r.steps:.1e}"
    return [f"{r.forward:.1e}", f"{r.g:.1e}", f"{r.v:.1e}", f"{r.zero_g} of {r.n_g}", steps]


def main():
    integration.uninstall()
    before = run_cases(SPECS)
    # The steps of the old API before install() crash in MindSpore (the stale "weight" Parameter);
    # measure what can be measured without them.
    for spec, r in list(before.items()):
        if isinstance(r, Exception):
            before.update(run_cases([spec], steps=False))
            if not isinstance(before[spec], Exception):
                before[spec].notes.append(f"steps fail: {type(r).__name__}: {str(r).strip().splitlines()[0][:60]}")
    integration.install()
    after = run_cases(SPECS)
    print("| model | API | built | before: forward | g grad | v grad | zero g grads | 3 steps: g, v |"
          " after: forward | g grad | v grad | zero g grads | 3 steps: g, v |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in SPECS:
        b = _cells(before[spec])
        if not isinstance(before[spec], Exception) and before[spec].steps is None:
            b[4] = "fails: " + before[spec].notes[-1].split(": ", 1)[1] if before[spec].notes else "n/a"
        api = "parametrizations" if spec.api == cases.NEW else "weight_norm (old)"
        print(f"| {NAMES[spec.model]} | {api} | {spec.source} | " + " | ".join(b + _cells(after[spec])) + " |")
        for side, r in (("before", before[spec]), ("after", after[spec])):
            if not isinstance(r, Exception) and r.notes:
                print(f"<!-- {spec.label} {side}: {'; '.join(r.notes)} -->")
            if not isinstance(r, Exception) and (r.names != r.torch_names or r.keys != r.torch_keys):
                extra = sorted(set(r.keys) - set(r.torch_keys))
                print(f"<!-- {spec.label} {side}: state-dict keys differ from torch's, extra: {extra[:3]} -->")


if __name__ == "__main__":
    main()
