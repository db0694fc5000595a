"""Before/after table: mindone's own weight norm vs this library's (install()), against torch.

Run in the mindone venv (tools/mindone/run_tests.sh creates it):
    PYTHONPATH=src .venv-mindone/bin/python tools/mindone/measure.py
Prints a Markdown table of relative errors (forward, and the largest g and v gradient error
over the weight-normed layers) per model, checkpoint layout and mode. "before" is mindone
0.5.0 as installed; "after" is the same code after ms_weightnorm.integrations.mindone.install().
The CPU stand-ins of tests_mindone/cpu_kernels.py are used in both.
"""
import os
import sys
import traceback

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "tests_mindone"))

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402

import cpu_kernels  # noqa: E402

cpu_kernels.install()

import harness  # noqa: E402
import models  # noqa: E402
from harness import NEW, OLD  # noqa: E402

P, G = ms.PYNATIVE_MODE, ms.GRAPH_MODE


def _cases():
    enc_in = models.encodec_inputs()
    w2v_in = models.wav2vec2_inputs()
    block_in = [np.random.default_rng(6).standard_normal((1, 8, 10)).astype(np.float32)]
    for layout in (NEW, OLD):
        yield ("Encodec encoder+decoder (20 convs)", layout, "PyNative", lambda layout=layout: models.encodec(layout),
               lambda tm, mm: [(mm.encoder, tm.encoder, enc_in["encoder"]), (mm.decoder, tm.decoder, enc_in["decoder"])], P)
        yield ("Encodec (first encoder conv)", layout, "GRAPH", lambda layout=layout: models.encodec(layout),
               lambda tm, mm: [(mm.encoder.layers[0].conv, tm.encoder.layers[0].conv, enc_in["encoder"])], G)
        yield ("Wav2Vec2 positional conv (dim=2)", layout, "PyNative", lambda layout=layout: models.wav2vec2(layout),
               lambda tm, mm: [(mm.encoder.pos_conv_embed, tm.encoder.pos_conv_embed, w2v_in)], P)
        yield ("Wav2Vec2 positional conv (dim=2)", layout, "GRAPH", lambda layout=layout: models.wav2vec2(layout),
               lambda tm, mm: [(mm.encoder.pos_conv_embed.conv, tm.encoder.pos_conv_embed.conv,
                                [w2v_in[0].transpose(0, 2, 1).copy()])], G)
    oob_in = models.oobleck_inputs()
    oob_x = [np.random.default_rng(8).standard_normal((1, 4, 12)).astype(np.float32)]
    for layout in (NEW, OLD):
        yield ("diffusers AutoencoderOobleck encoder (16 convs)", layout, "PyNative",
               lambda layout=layout: models.oobleck(layout), lambda tm, mm: [(mm.encoder, tm.encoder, oob_in)], P)
        yield ("diffusers AutoencoderOobleck (one residual-unit conv)", layout, "GRAPH",
               lambda layout=layout: models.oobleck(layout),
               lambda tm, mm: [(mm.encoder.block[0].res_unit1.conv1, tm.encoder.block[0].res_unit1.conv1, oob_x)], G)
    for name, build, ins in (("SpeechT5HifiGan (12 convs)", models.speecht5_hifigan, models.speecht5_hifigan_inputs()),
                             ("FastSpeech2ConformerHifiGan (12 convs)", models.fastspeech2_hifigan,
                              models.fastspeech2_hifigan_inputs())):
        yield (name, "plain + apply_weight_norm()", "PyNative", build, lambda tm, mm, ins=ins: [(mm, tm, ins)], P)
        yield (name.split(" (")[0] + " (residual block, 4 convs)", "plain + apply_weight_norm()", "GRAPH", build,
               lambda tm, mm: [(mm.resblocks[0], tm.resblocks[0], block_in)], G)


def _fmt(x):
    return "n/a" if x is None else f"{x:.1e}"


def measure():
    rows = []
    for name, layout, mode_name, build, parts, mode in _cases():
        try:
            tm, mm = build()
            results = [harness.compare(m, t, i, mode) for m, t, i in parts(tm, mm)]
            fwd = max(r.forward for r in results)
            gs = [r.g for r in results if r.g is not None]
            vs = [r.v for r in results if r.v is not None]
            layers = sum(r.layers for r in results)
            cell = (f"{fwd:.1e}", _fmt(max(gs) if gs else None), _fmt(max(vs) if vs else None),
                    str(layers) if layers else "0 (no g, v)")
        except Exception as err:  # the "before" side fails in several places; record how
            msg = str(err).strip().splitlines()[0][:90] if str(err).strip() else ""
            cell = (f"fails: {type(err).__name__}: {msg}", "", "", "")
        rows.append(((name, layout, mode_name), cell))
    return rows


def main():
    before = measure()
    from ms_weightnorm.integrations import mindone as integration
    integration.install()
    after = measure()
    print("| model | checkpoint | mode | before: forward | g grad | v grad | g/v layers | after: forward | g grad | v grad | g/v layers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (key, b), (_, a) in zip(before, after):
        print("| " + " | ".join(key + b + a) + " |")


if __name__ == "__main__":
    main()
