"""Former home of the checkpoint reader, kept so that old imports work: see :mod:`ms_weightnorm._checkpoint`.

The limits live in :mod:`ms_weightnorm._checkpoint.limits` (values here are copies: raise a
limit there).
"""
from ._checkpoint import (CheckpointError, LazyTensor, UnsafeCheckpointError, accepted_opcodes,  # noqa: F401
                          allowed_globals, atomic_write, bfloat16_bits_to_float32, float32_to_bfloat16_bits,
                          read_safetensors, read_torch_zip, write_safetensors)
from ._checkpoint.files import open_regular as _open_regular  # noqa: F401
from ._checkpoint.errors import short as _short, clip as _clip  # noqa: F401
from ._checkpoint.limits import *  # noqa: F401,F403
