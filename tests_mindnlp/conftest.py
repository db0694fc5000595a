"""The mindnlp suite: mindnlp's real mindtorch and transformers' own model code against real
torch (a subprocess: mindnlp takes over ``import torch`` in this one). No mocks.

Runs in its own venv (tools/mindnlp/run_tests.sh). standins.py replaces two mindtorch functions
that are wrong for reasons other than weight norm, for the whole session, on both sides of every
comparison.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import mindnlp  # noqa: E402,F401  (sets up mindtorch and the torch redirect)

import standins  # noqa: E402

standins.install()


@pytest.fixture(scope="session", autouse=True)
def installed():
    """install() once for the session (tests that uninstall put it back)."""
    from ms_weightnorm.integrations import mindnlp as integration
    integration.install()
    yield integration
    integration.uninstall()
