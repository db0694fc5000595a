"""Former home of the checkpoint reader, kept so that old imports work: see :mod:`ms_weightnorm._checkpoint`.

The limits live in :mod:`ms_weightnorm._checkpoint.limits`; reading or setting one here
(``ms_weightnorm._torch_pickle.MAX_PICKLE_OPS = ...``) reads or sets it there.

>>> import ms_weightnorm._torch_pickle as old
>>> from ms_weightnorm._checkpoint import limits
>>> old.MAX_DEPTH == limits.MAX_DEPTH
True
"""
import sys
import types

from ._checkpoint import (CheckpointError, LazyTensor, UnsafeCheckpointError, accepted_opcodes,  # noqa: F401
                          allowed_globals, atomic_write, bfloat16_bits_to_float32, float32_to_bfloat16_bits,
                          limits, read_safetensors, read_torch_zip, write_safetensors)
from ._checkpoint.errors import clip as _clip, short as _short  # noqa: F401
from ._checkpoint.files import open_regular as _open_regular  # noqa: F401


class _ForwardLimits(types.ModuleType):
    """Upper-case names are the limits module's: read and written there."""

    def __getattr__(self, name):
        if name.isupper() and hasattr(limits, name):
            return getattr(limits, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name.isupper() and hasattr(limits, name):
            setattr(limits, name, value)
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ForwardLimits
