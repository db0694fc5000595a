"""The reader's two exceptions, and the one bounded formatter every message goes through.

Anything a file controls (keys, names, values, the path it was given under) reaches a message
only through :func:`fmt`, :func:`clip` or :func:`fmt_path`: each looks at a bounded part of its
value (a few levels, a few items, a few characters each, whatever the value's size or sharing)
and escapes control characters, lone surrogates and bidirectional overrides, so that a message
can always be printed and cannot rewrite a terminal. :func:`clip_message` bounds the whole
message (``Limits.max_message``, 4000 characters) and escapes again, keeping only newlines.
"""
from __future__ import annotations

import collections
import os
import pickle
import re
from typing import Any, Iterable, Optional

from . import limits

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape_char(match: "re.Match[str]") -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, keep_newlines: bool = False) -> str:
    """``text`` with control characters, lone surrogates and bidi overrides written as escapes.

    >>> escape("a\\x1b[2Jb\\ud800")
    'a\\\\x1b[2Jb\\\\ud800'
    """
    return (_UNSAFE_BUT_NEWLINE if keep_newlines else _UNSAFE).sub(_escape_char, text)


def clip(text: Any, limit: int = 200) -> str:
    """``text`` (a string a file controls) escaped and cut to ``limit`` characters (the cut marked ``...``).

    Only ``limit`` characters of the input are looked at, whatever its length.

    >>> clip("k" * 10_000_000, 12)
    'kkkkkkkkk...'
    """
    if not isinstance(text, str):
        return fmt(text, limit)
    head = escape(str.__str__(text)[:limit + 1])
    if len(head) <= limit and len(text) <= limit:
        return head
    head = head[:limit - 3]
    cut = head.rfind("\\", max(0, len(head) - 5))  # never end inside an escape
    return (head[:cut] if cut >= 0 else head) + "..."


def fmt_path(path: Any, limit: int = 300) -> str:
    """A path for a message: escaped, and at most ``limit`` characters, keeping its end (the file name)."""
    try:
        text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    except Exception:
        return f"<{type(path).__name__}>"
    text = escape(text if len(text) <= 4 * limit else text[:limit] + text[-limit:])
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return text[:keep] + "..." + text[-(limit - 3 - keep):]


_ITEMS = 6        # items shown per container
_LEVELS = 3       # container levels shown
_STRING = 60      # characters shown per string or bytes value


def fmt(value: Any, limit: int = 200) -> str:
    """A bounded, escaped ``repr`` of anything the reader can build from a file.

    Visits at most ``_ITEMS`` items of each container on at most ``_LEVELS`` levels (so at
    most a few hundred parts, however the value shares itself), never calls a value's own
    ``repr`` (an OrderedDict's or a huge bytes' would format it whole) and never fails.

    >>> fmt({"a" * 100: [1, 2, 3, 4, 5, 6, 7, 8], "b": b"\\x00" * 10**6})
    "{'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...': [1, 2, 3, 4, 5, 6, ...], 'b': b'\\\\x00\\\\x00..."
    """
    try:
        text = _fmt(value, _LEVELS)
    except Exception:  # a value of a type nobody foresaw still gets a message
        text = f"<{type(value).__name__}>"
    return clip(text, limit) if len(text) > limit else text


def _fmt(value: Any, level: int) -> str:
    t = type(value)
    if value is None or t is bool:
        return "True" if value is True else "False" if value is False else "None"
    if t is int:
        return repr(value) if value.bit_length() <= 128 else f"<int of {value.bit_length()} bits>"
    if t in (float, complex):
        return repr(value)
    if isinstance(value, str):  # DType and StorageType are str subclasses: their name
        shown = str.__str__(value)[:_STRING + 1]
        return "'" + clip(shown, _STRING).replace("'", "\\'") + "'"
    if t in (bytes, bytearray, memoryview):
        raw = bytes(value[:_STRING // 4 + 1])
        text = repr(raw[:_STRING // 4]) + ("..." if len(value) > _STRING // 4 else "")
        return text if t is bytes else f"{t.__name__}({text})"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        if isinstance(value, dict):
            items = list(_first(value.items(), _ITEMS + 1))
        else:
            items = list(_first(value, _ITEMS + 1))
        more = len(items) > _ITEMS
        items = items[:_ITEMS]
        if level <= 0:
            return _brackets(value, "..." if len(value) else "")
        if isinstance(value, dict):
            parts = [f"{_fmt(k, level - 1)}: {_fmt(v, level - 1)}" for k, v in items]
        else:
            parts = [_fmt(v, level - 1) for v in items]
        inner = ", ".join(parts) + (", ..." if more else "")
        if t is tuple and len(value) == 1:
            inner += ","
        return _brackets(value, inner)
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if type(shape) is tuple and len(shape) <= 64:
        return f"<{t.__name__} shape={_fmt(shape, 1)} dtype={clip(str(dtype), 40)}>"
    return f"<{clip(t.__name__, 60)}>"


def _first(items: Iterable[Any], n: int) -> Iterable[Any]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item


def _brackets(value: Any, inner: str) -> str:
    if type(value) is collections.OrderedDict:
        return "OrderedDict({" + inner + "})"
    if isinstance(value, dict):
        return "{" + inner + "}"
    if isinstance(value, tuple):
        return "(" + inner + ")"
    if isinstance(value, list):
        return "[" + inner + "]"
    return f"{type(value).__name__}({{{inner}}})"


short = fmt  # the former name


def clip_message(text: str) -> str:
    """A whole error message escaped (newlines kept) and cut to ``Limits.max_message`` characters."""
    limit = limits.current().max_message
    head = escape(text[:limit], keep_newlines=True)  # only what can be shown is looked at
    if len(text) <= limit and len(head) <= limit:
        return head
    hidden = len(text) - min(len(text), limit)  # characters of the input never looked at
    suffix = ""
    for _ in range(3):  # the suffix's length depends on the count it states
        room = limit - len(suffix)
        suffix = f"... [{len(head) - room + hidden} more characters]"
    room = limit - len(suffix)
    return head[:room] + suffix


def names(items: Iterable[Any], limit: int = 20) -> str:
    """Up to ``limit`` names, each clipped and escaped, comma-separated, with the count of the rest."""
    items = list(items) if not isinstance(items, (list, tuple)) else items
    shown = ", ".join(clip(k if isinstance(k, str) else fmt(k), 120) for k in items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


class CheckpointError(ValueError):
    """A checkpoint file is malformed, truncated or exceeds a safety limit; nothing was loaded.

    ``path`` is the file (or ``None``), ``reason`` the message without the path, and ``rule`` a
    short stable identifier of the rule the file broke (``"zip.directory_offset"``,
    ``"pickle.cost"`` ...; ``None`` where none applies), for code and tests to dispatch on.

    >>> err = CheckpointError("w.pt: bad", path="w.pt", reason="bad", rule="zip.eocd")
    >>> err.path, err.reason, err.rule, str(err)
    ('w.pt', 'bad', 'zip.eocd', 'w.pt: bad')
    """

    def __init__(self, message: str = "", *, path: Optional[str] = None, reason: Optional[str] = None,
                 rule: Optional[str] = None):
        message = clip_message(str(message))
        super().__init__(message)
        self.path = path
        self.reason = clip_message(reason) if reason is not None else message
        self.rule = rule

    def __reduce__(self):
        return _rebuild_error, (type(self), str(self), self.path, self.reason, self.rule)


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint's pickle asks for something a state dict never needs; nothing was run."""


def _rebuild_error(cls, message, path, reason, rule):
    return cls(message, path=path, reason=reason, rule=rule)


# Public under the package's name (the traceback shows ``ms_weightnorm.CheckpointError``).
CheckpointError.__module__ = UnsafeCheckpointError.__module__ = "ms_weightnorm"


def error(source: Optional[str], reason: str, rule: Optional[str] = None, unsafe: bool = False) -> CheckpointError:
    """A :class:`CheckpointError` (or the unsafe one) ``"<source>: <reason>"``, clipped, with its fields."""
    text = reason if source is None else f"{fmt_path(source)}: {reason}"
    return (UnsafeCheckpointError if unsafe else CheckpointError)(text, path=source, reason=reason, rule=rule)


def with_path(err: CheckpointError, path: str) -> CheckpointError:
    """``err`` (raised where the file's name was not known) naming ``path``, same type, reason and rule."""
    if err.path == path:
        return err
    out = error(path, err.reason, err.rule, isinstance(err, UnsafeCheckpointError))
    if type(out) is not type(err):
        out = type(err)(str(out), path=path, reason=err.reason, rule=err.rule)
    return out
