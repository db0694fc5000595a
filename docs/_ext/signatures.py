"""Griffe extension for the API pages: signatures show the real defaults, not sentinels.

``weight_norm(module=_UNSET, ..., *, cell=_ALIAS)`` takes the layer as PyTorch's ``module=`` or
as this library's earlier ``cell=``; the two sentinels (instances of a private ``_Unset``
class, ``_Unset("<required>")`` and ``_Unset("<alias of module>")``) let the function tell
which was given. Their names mean nothing to a reader, so here the signature is shown as
the call is meant: a ``"<required>"`` parameter has no default, and an ``"<alias of ...>"``
parameter is left out (the docstring says it is accepted). The source keeps the sentinels.

Used by mkdocstrings (see mkdocs.yml); nothing in the package imports it.
"""
from __future__ import annotations

import re
from typing import Any, Optional

import griffe

_SENTINEL = re.compile(r"""^_Unset\((['"])<(?P<shown>[^>]*)>\1\)$""")


def sentinel(func: griffe.Function, default: object) -> Optional[str]:
    """What a default that names an ``_Unset`` sentinel shows (``required``, ``alias of module``), else None."""
    name = str(default)
    if not name.isidentifier():
        return None
    attribute = func.module.members.get(name)
    if attribute is None or attribute.is_alias or not isinstance(attribute, griffe.Attribute):
        return None
    match = _SENTINEL.match(str(attribute.value))
    return match["shown"] if match else None


class SentinelDefaults(griffe.Extension):
    """Drops the defaults and parameters that only carry an ``_Unset`` sentinel."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        stack = [pkg]
        while stack:
            obj = stack.pop()
            stack.extend(m for m in obj.members.values() if not m.is_alias)
            if isinstance(obj, griffe.Function):
                self._fix(obj)

    @staticmethod
    def _fix(func: griffe.Function) -> None:
        for parameter in list(func.parameters):
            shown = sentinel(func, parameter.default) if parameter.default is not None else None
            if shown == "required":
                parameter.default = None
            elif shown is not None and shown.startswith("alias of "):
                del func.parameters[parameter.name]
