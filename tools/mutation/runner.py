"""Test command for one mutant: the fast tests relevant to the mutated module (see MODULE_TESTS).

mutmut 2 counts only exit code 1 as "killed"; pytest exits 2 on a collection error, which
a mutant that breaks an import causes. Any failure is therefore reported as 1.
Usage (from the scratch copy's root): python tools/mutation/runner.py functional.py
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from mutmut_config import MODULE_TESTS  # noqa: E402


def main(argv):
    module = argv[0] if argv else "all"
    if module == "all":
        selection = sorted({t for tests in MODULE_TESTS.values() for t in tests})
    else:
        selection = list(MODULE_TESTS[module])
    code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", "--no-header", "-W", "ignore", *selection])
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
