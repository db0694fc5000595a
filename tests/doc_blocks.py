"""The ```python blocks of a Markdown page, with the environment each needs.

A block preceded by the line ``<!-- run-in: NAME -->`` needs that integration (mindone,
mindnlp): the main suite leaves it out and the integration's own suite, in its own venv, runs
it. One reader for all three suites, so a page is split the same way everywhere.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_MARK = re.compile(r"<!-- run-in: ([a-z]+) -->")


def python_blocks(text: str) -> List[Tuple[int, str, Optional[str]]]:
    """``(line number, code, run-in name or None)`` of each ```python block of ``text``.

    >>> python_blocks("a\\n<!-- run-in: mindone -->\\n\\n```python\\nx = 1\\n```\\n```python\\ny = 2\\n```\\n")
    [(4, 'x = 1\\n', 'mindone'), (7, 'y = 2\\n', None)]
    """
    found = []
    for match in _BLOCK.finditer(text):
        before = [ln.strip() for ln in text[:match.start()].splitlines() if ln.strip()]
        mark = _MARK.fullmatch(before[-1]) if before else None
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, match.group(1), mark.group(1) if mark else None))
    return found


def blocks_for(text: str, name: Optional[str]) -> List[Tuple[int, str]]:
    """``(line number, code)`` of the blocks marked ``run-in: name`` (``None``: the unmarked ones)."""
    return [(line, code) for line, code, mark in python_blocks(text) if mark == name]
