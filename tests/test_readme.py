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
    try:
        for block in blocks:
            namespace = {}
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert namespace["m"].use_weight_norm is False
    assert namespace["layer"].weight_g.shape == (40, 1)
