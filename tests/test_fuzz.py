"""The fuzzing property, in the ordinary test run: real torch.save / safetensors seeds of every
supported form load exactly as PyTorch loads them; every input kept in ``fuzz/regressions``
(each a past finding) and a few thousand seeded mutations of the seeds either load with every
array inside the input or raise ``CheckpointError``, each within a time and memory bound.

The coverage-guided run is ``bash run.sh fuzz`` (``fuzz/run.py``, atheris); this file needs no
atheris.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
TARGETS = ("zip", "pickle", "safetensors")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("seeds"))
    subprocess.run([sys.executable, os.path.join(FUZZ, "make_seeds.py"), out], check=True, capture_output=True)
    return out


def test_every_seed_form_is_there_and_small(seeds):
    names = {t: sorted(os.listdir(os.path.join(seeds, t))) for t in TARGETS}
    for form in ("plain", "views", "shared", "dtypes", "parameter", "plain_values", "module", "weight_norm",
                 "training"):
        for proto in (2, 4, 5):
            assert f"{form}_p{proto}.pt" in names["zip"] and f"{form}_p{proto}.pkl" in names["pickle"]
    assert {f"plain_p{p}.pkl" for p in range(6)} <= set(names["pickle"])
    assert len(names["safetensors"]) == 4
    assert max(os.path.getsize(os.path.join(seeds, t, n)) for t in TARGETS for n in names[t]) < 16 << 10


def _same(ours, ref):
    import torch
    if isinstance(ref, torch.Tensor):
        want = (ref.float() if ref.dtype == torch.bfloat16 else ref).detach().numpy()
        assert isinstance(ours, np.ndarray) and ours.dtype == want.dtype and ours.shape == want.shape
        np.testing.assert_array_equal(ours, want)
    elif isinstance(ref, dict):
        assert list(ours) == list(ref)
        for k in ref:
            _same(ours[k], ref[k])
    elif isinstance(ref, (list, tuple)) and not isinstance(ref, torch.Size):
        assert len(ours) == len(ref)
        for a, b in zip(ours, ref):
            _same(a, b)
    elif isinstance(ref, torch.dtype):
        assert ours == str(ref)
    elif isinstance(ref, torch.device):
        assert ours == str(ref)
    else:
        assert ours == ref and type(ours) is type(ref) or (isinstance(ref, torch.Size) and ours == tuple(ref))


def test_every_torch_seed_loads_as_torch_loads_it(seeds):
    torch = pytest.importorskip("torch")
    from ms_weightnorm._checkpoint import read_torch_zip, read_safetensors
    for name in sorted(os.listdir(os.path.join(seeds, "zip"))):
        path = os.path.join(seeds, "zip", name)
        # Trusted seeds: weights_only=False, because torch's weights-only unpickler has no FRAME
        # (protocol 4); the values are the reference.
        _same(read_torch_zip(path), torch.load(path, weights_only=False))
    from safetensors.torch import load_file
    for name in sorted(os.listdir(os.path.join(seeds, "safetensors"))):
        path = os.path.join(seeds, "safetensors", name)
        _same(read_safetensors(path), load_file(path))


_CHILD = textwrap.dedent("""
    import json, os, random, resource, sys, time, traceback
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
    sys.path.insert(0, sys.argv[1])
    import properties
    target, dirs, mutants = sys.argv[2], sys.argv[3].split(os.pathsep), int(sys.argv[4])
    check = properties.TARGETS[target]
    rng = random.Random(20261205)

    def mutate(data):
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            if kind < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif kind < 0.7 and data:
                at = rng.randrange(len(data))
                data[at:at + 8] = rng.choice([b"\\xff" * 8, b"\\x00" * 8, b"\\x7f\\xff\\xff\\xff\\xff\\xff\\xff\\xff"])
            elif kind < 0.85:
                data = data[:rng.randrange(len(data) + 1)]
            else:
                at = rng.randrange(len(data) + 1)
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        return bytes(data)

    inputs = []
    for d in dirs:
        if os.path.isdir(d):
            inputs += [open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))]
    base = list(inputs)
    inputs += [mutate(rng.choice(base)) for _ in range(mutants if base else 0)]
    failures, slowest = [], 0.0
    for data in inputs:
        start = time.perf_counter()
        try:
            check(data)
        except BaseException as err:
            failures.append({"input": data[:400].hex(), "error": type(err).__name__, "message": str(err)[:300]})
        slowest = max(slowest, time.perf_counter() - start)
    with open("/proc/self/status") as f:
        peak = int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024
    print(json.dumps({"inputs": len(inputs), "failures": failures[:5], "n_failures": len(failures),
                      "slowest": slowest, "peak_mb": peak}))
""")


def _replay(target, dirs, mutants=0):
    done = subprocess.run([sys.executable, "-c", _CHILD, FUZZ, target, os.pathsep.join(dirs), str(mutants)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("target", TARGETS)
def test_regressions_and_mutated_seeds_keep_the_property(target, seeds):
    out = _replay(target, [os.path.join(FUZZ, "regressions", target), os.path.join(seeds, target)],
                  mutants=1500 if target != "safetensors" else 500)
    assert out["inputs"] > (1500 if target != "safetensors" else 500), out
    assert out["n_failures"] == 0, out["failures"]
    # Each input within a time bound, all of them within a memory bound (numpy itself is ~35 MB).
    assert out["slowest"] < 5 and out["peak_mb"] < 400, out
