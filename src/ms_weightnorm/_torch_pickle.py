"""Former home of the checkpoint reader, kept so that old imports work: see :mod:`ms_weightnorm._checkpoint`.

The bounds are a :class:`~ms_weightnorm._checkpoint.limits.Limits` passed per call (``limits=``,
or ``with limits(...)``); the upper-case names here are their defaults, readable only.

>>> import ms_weightnorm._torch_pickle as old
>>> old.MAX_DEPTH == old.Limits().max_depth
True
"""
from ._checkpoint import (CheckpointError, LazyTensor, Limits, UnsafeCheckpointError, accepted_opcodes,  # noqa: F401
                          allowed_globals, atomic_write, bfloat16_bits_to_float32, float32_to_bfloat16_bits,
                          read_safetensors, read_torch_zip, write_safetensors)
from ._checkpoint.limits import limits  # noqa: F401
from ._checkpoint.errors import clip as _clip, fmt as _short  # noqa: F401
from ._checkpoint.files import open_regular as _open_regular  # noqa: F401
from ._checkpoint.limits import (MAX_DEFLATED_RECORD, MAX_DEPTH, MAX_DIMS, MAX_ELEMENTS, MAX_INDEX,  # noqa: F401
                                 MAX_INT_BYTES, MAX_KEY_LENGTH, MAX_LINE, MAX_MESSAGE, MAX_PICKLE_BYTES,
                                 MAX_SMALL_RECORD, MAX_ZIP_NAME, MAX_ZIP_RECORDS, SAFETENSORS_MAX_HEADER)
