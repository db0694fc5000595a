"""Griffe extension for the API pages: the docstrings' examples become code blocks.

The package's docstrings are written for ``help()`` and doctest: ``>>>`` sessions and
reST literal blocks (a paragraph ending in ``::``). Markdown would run them into the prose
(``net[0](x)`` reads as a link), so they are fenced here, at load time, without touching
the source. Used by mkdocstrings (see mkdocs.yml); nothing in the package imports it.
"""
from __future__ import annotations

import re
from typing import Any, List

import griffe

_PROMPT = re.compile(r"^(\s*)>>> ")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def fence(text: str) -> str:
    """``text`` with doctest sessions and ``::`` literal blocks fenced as Markdown code.

    >>> fence("Example::\\n\\n    x = 1\\n").splitlines()
    ['Example:', '', '```python', 'x = 1', '```', '']
    """
    lines = text.splitlines()
    out: List[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _PROMPT.match(line):
            # A session runs to the next blank line, as doctest reads it.
            base = _indent(line)
            out.append("```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i][base:] if _indent(lines[i]) >= base else lines[i].strip())
                i += 1
            out.append("```")
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            # reST literal block: the indented lines after a blank line.
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > base:
                out.append(line.rstrip()[:-1])  # "Example::" reads "Example:"
                out.append("")
                body: List[str] = []
                while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                    body.append(lines[j])
                    j += 1
                while body and not body[-1].strip():
                    body.pop()
                cut = min(_indent(b) for b in body if b.strip())
                out.append("```python")
                out.extend(b[cut:] for b in body)
                out.append("```")
                out.append("")
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


class DoctestFences(griffe.Extension):
    """Fences the examples of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence(obj.docstring.value)
