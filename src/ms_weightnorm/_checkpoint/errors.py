"""The reader's two exceptions and the bounded formatting of anything a file controls."""
from __future__ import annotations

import pickle
import reprlib
from typing import Any

from . import limits


class CheckpointError(ValueError):
    """A checkpoint file is malformed, truncated or exceeds a safety limit; nothing was loaded."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint's pickle asks for something a state dict never needs; nothing was run."""


_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxtuple = _repr.maxlist = _repr.maxarray = 6
_repr.maxdict = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 4
_repr.maxstring = 60
_repr.maxlong = 40
_repr.maxother = 60


def short(value: Any) -> str:
    """A bounded ``repr`` of a hostile value: a few levels, a few items, a few characters each.

    Formatting a crafted object in full can take exponential time (shared sub-tuples) or
    unbounded memory; this never looks at more than a few hundred of its parts.
    """
    try:
        text = _repr.repr(value)
    except Exception:  # a value whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    return clip(text)


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (the cut marked with ``...``)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip_message(text: str) -> str:
    """A whole error message cut to :data:`limits.MAX_MESSAGE` characters."""
    limit = limits.MAX_MESSAGE
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    for _ in range(3):  # the suffix's length depends on the count it states
        suffix = f"... [{cut} more characters]"
        cut = len(text) - (limit - len(suffix))
    return text[:limit - len(suffix)] + suffix


def names(items, limit: int = 20) -> str:
    """Up to ``limit`` names, each clipped, comma-separated, with the count of the rest."""
    items = list(items) if not isinstance(items, (list, tuple)) else items
    shown = ", ".join(clip(str(k), 120) for k in items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def error(source: str, message: str, unsafe: bool = False) -> CheckpointError:
    """A :class:`CheckpointError` (or the unsafe one) whose message names ``source``, clipped."""
    text = message if message.startswith(source) or f" {source}" in message[:len(source) + 40] \
        else f"{source}: {message}"
    return (UnsafeCheckpointError if unsafe else CheckpointError)(clip_message(text))
