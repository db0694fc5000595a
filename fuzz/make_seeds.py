"""Write the fuzzers' seed corpora: real ``torch.save`` and safetensors files of every supported form.

    python fuzz/make_seeds.py OUT_DIR

writes OUT_DIR/zip/* (whole torch.save files), OUT_DIR/pickle/* (their data.pkl records, and
pickles of plain values at protocols 0-5) and OUT_DIR/safetensors/*. Every seed is a few KB.
Needs torch and safetensors (the test extra).
"""
import collections
import io
import os
import pickle
import sys
import zipfile

import numpy as np
import torch
from safetensors.torch import save as st_save


def torch_forms():
    torch.manual_seed(0)
    w = torch.randn(4, 6)
    shared = torch.arange(12, dtype=torch.float32)
    p = torch.nn.Parameter(torch.ones(3))
    yield "plain", collections.OrderedDict(weight=w, bias=torch.zeros(4))
    yield "views", collections.OrderedDict(w=w, t=w.t(), row=w[1], strided=w[::2, 1::3], narrow=w.narrow(1, 2, 3))
    yield "shared", collections.OrderedDict(a=shared, b=shared.view(3, 4), c=shared[4:8], d=shared.view(3, 4)[:, 1])
    yield "dtypes", collections.OrderedDict(
        bf16=torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16), f16=torch.tensor([0.5, 65504.0], dtype=torch.float16),
        f64=torch.tensor([1e300]), i64=torch.arange(3), i8=torch.tensor([-1, 2], dtype=torch.int8),
        u8=torch.tensor([255], dtype=torch.uint8), b=torch.tensor([True, False]),
        u16=torch.tensor([1, 2], dtype=torch.uint16), c64=torch.tensor([1 + 2j], dtype=torch.complex64),
        scalar=torch.tensor(3.0), empty=torch.zeros(0, 3))
    yield "parameter", {"p": p, "nested": {"generator": collections.OrderedDict(w=w[:2])}, "step": 7}
    yield "plain_values", {"raw": b"\x00\x01", "c": 1 + 2j, 5: "int key", "list": [1, 2.5, None, True], "tuple": (1, "x"), "big": 2 ** 70,
                           "size": torch.Size([2, 3]), "device": torch.device("cpu"), "dtype": torch.float16}
    sd = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).state_dict()
    yield "module", sd  # an OrderedDict with _metadata (BUILD)
    wn = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(2, 2, 3))
    yield "weight_norm", wn.state_dict()
    # A training checkpoint: a nested generator state dict and an optimizer's (int keys, tuples).
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    yield "training", {"generator": model.state_dict(), "optim": opt.state_dict(), "epoch": 3}


def main(out: str) -> None:
    for sub in ("zip", "pickle", "safetensors"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    count = 0
    for name, obj in torch_forms():
        for proto in (2, 4, 5):
            buf = io.BytesIO()
            torch.save(obj, buf, pickle_protocol=proto)
            data = buf.getvalue()
            with open(os.path.join(out, "zip", f"{name}_p{proto}.pt"), "wb") as f:
                f.write(data)
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                pkl = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
                with open(os.path.join(out, "pickle", f"{name}_p{proto}.pkl"), "wb") as f:
                    f.write(zf.read(pkl))
            count += 2
    plain = {"t": True, "f": False, "i": -7, "big": 2 ** 70 + 3, "neg": -(2 ** 65), "x": 1.5, "s": "é",
             "l": [1, [2]], "d": {"k": (1, 2, 3), 7: None}, "b": b"\x00\xff", "c": 1 - 2j}
    for proto in range(6):
        with open(os.path.join(out, "pickle", f"plain_p{proto}.pkl"), "wb") as f:
            f.write(pickle.dumps(plain, protocol=proto))
        count += 1
    tensors = {
        "f32": {"w": torch.randn(3, 4), "b": torch.zeros(3)},
        "mixed": {"bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16), "f16": torch.tensor([0.5], dtype=torch.float16),
                  "i64": torch.arange(4), "bool": torch.tensor([True]), "u8": torch.tensor([7], dtype=torch.uint8),
                  "scalar": torch.tensor(2.0), "empty": torch.zeros(0, 2)},
    }
    for name, value in tensors.items():
        for meta in (None, {"format": "pt"}):
            with open(os.path.join(out, "safetensors", f"{name}{'_meta' if meta else ''}.safetensors"), "wb") as f:
                f.write(st_save(value, metadata=meta))
            count += 1
    sizes = [os.path.getsize(os.path.join(out, d, n)) for d in ("zip", "pickle", "safetensors")
             for n in os.listdir(os.path.join(out, d))]
    print(f"make_seeds: {count} seeds in {out} (largest {max(sizes)} bytes)")
    assert max(sizes) < 16 << 10, "seeds must stay small"


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus"))
