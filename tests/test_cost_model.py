"""The cost model's claim, checked on the hostile patterns: peak memory per charged unit.

docs/security.md states that whatever a pickle builds costs at most about 1.1 bytes of memory
per unit charged. Tests that compute their expectations from ``unpickler.COSTS`` cannot see a
charge that is wrong (or gone); this measures what each pattern really allocates, in a fresh
process (peak RSS, as fuzz/cost_model.py does), against what the unpickler charged for it.
"""
import os
import sys

import pytest

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
sys.path.insert(0, FUZZ)
import cost_model  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
BYTES_PER_UNIT = 1.1           # the model's bound (docs/security.md: 1.03 measured at most)
SLACK = 8 << 20                # RSS noise of a fresh interpreter (allocator arenas, page granularity)
N = 400_000                    # large enough that what a pattern builds dwarfs the slack

_PATTERNS = [(name, data) for name, data in cost_model.patterns(N) if name != "torch.save 20k"]


@pytest.mark.parametrize("name,data", _PATTERNS, ids=[name for name, _ in _PATTERNS])
def test_peak_memory_is_within_the_cost_model(name, data):
    result = cost_model.measure(data, TESTS)
    assert result["outcome"] in ("loaded", "pickle.cost"), result  # built whole, or refused at its budget
    assert result["peak"] <= BYTES_PER_UNIT * result["spent"] + SLACK, (
        f"{name}: {result['peak']} bytes of peak memory for {result['spent']} units charged "
        f"({result['peak'] / max(result['spent'], 1):.2f} bytes/unit; the model allows {BYTES_PER_UNIT})")
