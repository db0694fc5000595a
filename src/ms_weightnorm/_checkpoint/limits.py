"""Every bound the checkpoint reader enforces, as one frozen record passed per call.

The defaults are far above what real state dicts need and low enough that no file costs more
than its cost model (docs/security.md) allows. A trusted file that needs more is read with a
bigger bound for that call only::

    with limits(max_depth=200):
        read_torch_checkpoint(path)

or ``read_torch_zip(path, limits=Limits(max_depth=200))``. Nothing global is assigned: the
record in force lives in a context variable, so threads and async tasks each see their own.

The upper-case module names (``MAX_DEPTH`` ...) are the defaults, kept readable for code that
read them; assigning one changes nothing.

>>> current().max_depth
100
>>> with limits(max_depth=7):
...     current().max_depth
7
>>> current().max_depth
100
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Iterator, Optional


@dataclasses.dataclass(frozen=True)
class Limits:
    """The reader's bounds (each pinned by a test at the bound and one past it)."""

    # -- the pickle (``<archive>/data.pkl``) --
    max_pickle_bytes: int = 64 << 20
    # The cost model: everything the unpickler builds is charged what it allocates or copies
    # (bytes, container slots, hash inserts; see unpickler.COSTS), cumulatively, never credited
    # back. The total may not exceed pickle_cost_per_byte * len(pickle) + pickle_cost_base, nor
    # max_pickle_cost. torch.save spends about 40 units per pickle byte (docs/security.md).
    pickle_cost_per_byte: int = 64
    pickle_cost_base: int = 16 << 20
    max_pickle_cost: int = 1 << 30
    max_depth: int = 100                 # nesting of marks and containers (a state dict needs 3-4)
    max_int_bytes: int = 32              # an integer's two's-complement size: 256-bit integers
    max_line: int = 4096                 # a text opcode's line (protocol 0/1 names, numbers, strings)
    # -- tensors --
    max_dims: int = 32                   # numpy's own limit on dimensions
    max_index: int = 1 << 62             # any size, stride, offset or storage element count
    # Elements of one tensor (the product of its non-zero dimensions): times the widest element
    # (16 bytes, complex128) this stays below 2**63, so numpy can describe every tensor accepted.
    max_elements: int = 1 << 58
    max_key_length: int = 1 << 16        # characters of a storage key
    # -- the zip container --
    max_zip_records: int = 1 << 17
    max_zip_name: int = 1 << 12          # bytes of a record's name
    max_small_record: int = 1 << 10      # the ``byteorder`` record
    max_deflated_record: int = 64 << 20  # a deflated record (only data.pkl and small records may be)
    # -- safetensors --
    safetensors_max_header: int = 100_000_000  # the reference implementation's limit
    # -- messages --
    max_message: int = 4000              # characters of any error message the reader or the loader raises

    def pickle_budget(self, pickle_bytes: int) -> int:
        """The cost units a pickle of ``pickle_bytes`` bytes may spend."""
        return min(self.pickle_cost_per_byte * pickle_bytes + self.pickle_cost_base, self.max_pickle_cost)


DEFAULT = Limits()
_CURRENT: contextvars.ContextVar[Limits] = contextvars.ContextVar("ms_weightnorm_reader_limits", default=DEFAULT)


def current() -> Limits:
    """The bounds in force for this thread or task."""
    return _CURRENT.get()


@contextlib.contextmanager
def limits(base: Optional[Limits] = None, **changes: int) -> Iterator[Limits]:
    """Read with other bounds inside the ``with`` block: ``base`` (or the bounds in force) with ``changes``."""
    value = dataclasses.replace(base if base is not None else current(), **changes)
    token = _CURRENT.set(value)
    try:
        yield value
    finally:
        _CURRENT.reset(token)


# The defaults under their former module-global names (read-only in effect).
MAX_PICKLE_BYTES = DEFAULT.max_pickle_bytes
MAX_DEPTH = DEFAULT.max_depth
MAX_INT_BYTES = DEFAULT.max_int_bytes
MAX_LINE = DEFAULT.max_line
MAX_DIMS = DEFAULT.max_dims
MAX_INDEX = DEFAULT.max_index
MAX_ELEMENTS = DEFAULT.max_elements
MAX_KEY_LENGTH = DEFAULT.max_key_length
MAX_ZIP_RECORDS = DEFAULT.max_zip_records
MAX_ZIP_NAME = DEFAULT.max_zip_name
MAX_SMALL_RECORD = DEFAULT.max_small_record
MAX_DEFLATED_RECORD = DEFAULT.max_deflated_record
SAFETENSORS_MAX_HEADER = DEFAULT.safetensors_max_header
MAX_MESSAGE = DEFAULT.max_message
