"""``python -m ms_weightnorm.checkpoint``: see :mod:`ms_weightnorm.checkpoint`."""
import sys

from . import main

sys.exit(main())
