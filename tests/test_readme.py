"""The README's code runs as written."""
import pathlib
import re

import mindspore as ms

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_usage_runs():
    blocks = python_blocks()
    assert blocks, "README has no python example"
    namespaces = []
    try:
        for block in blocks:
            namespaces.append({})
            exec(compile(block, str(README), "exec"), namespaces[-1])  # noqa: S102 - our own README
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    usage = namespaces[0]
    assert usage["m"].use_weight_norm is False
    assert usage["layer"].weight_g.shape == (40, 1)
