"""Every bound the checkpoint reader enforces, in one place (each is pinned by a test at the bound
and one past it).

Far above what real state dicts need, low enough that no file costs more than about 150 MB or a
few seconds to reject. The readers look these up at call time, so raising one (for a trusted
file that needs more) is ``ms_weightnorm._checkpoint.limits.MAX_PICKLE_OPS = ...``.
"""

# -- the pickle (``<archive>/data.pkl``) --
MAX_PICKLE_BYTES = 64 << 20
# Opcodes are counted in units of about 56 bytes of memory they can allocate (an empty set
# costs 4, a memo entry 2, most others 1). torch.save spends about 45 units per tensor, so
# this admits state dicts of some 40k tensors.
MAX_PICKLE_OPS = 2 << 20
MAX_DEPTH = 100                 # nesting of marks and containers (a state dict needs 3-4)
MAX_INT_BYTES = 32              # an integer's two's-complement size: 256-bit integers
MAX_LINE = 4096                 # a text opcode's line (protocol 0/1 names, numbers, strings)

# -- tensors --
MAX_DIMS = 32                   # numpy's own limit on dimensions
MAX_INDEX = 1 << 62             # any size, stride, offset or storage element count
# Elements of one tensor (the product of its non-zero dimensions): times the widest element
# (16 bytes, complex128) this stays below 2**63, so numpy can describe every tensor accepted
# (a larger one is numpy's "array is too big", even with another dimension 0).
MAX_ELEMENTS = 1 << 58
MAX_KEY_LENGTH = 1 << 16        # characters of a storage key

# -- the zip container --
# One record per storage plus 6; MAX_PICKLE_OPS admits about 40k tensors, so this is not
# what limits a real checkpoint. Checked against the end record before the directory is read.
MAX_ZIP_RECORDS = 1 << 17
MAX_ZIP_NAME = 1 << 12          # bytes of a record's name
MAX_SMALL_RECORD = 1 << 10      # the ``byteorder`` record
MAX_DEFLATED_RECORD = MAX_PICKLE_BYTES  # a deflated record (only data.pkl and small records may be)

# -- safetensors --
SAFETENSORS_MAX_HEADER = 100_000_000  # the reference implementation's limit

# -- messages --
MAX_MESSAGE = 4000              # characters of any error message the reader or the loader raises
