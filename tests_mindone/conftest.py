"""The mindone suite: real mindone 0.5 model ports against their transformers twins (no mocks).

Runs in its own venv (tools/mindone/run_tests.sh). The ops listed in cpu_kernels.py, which have
no CPU kernel in MindSpore 2.7.1, are replaced for the whole session by ops with identical math.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import cpu_kernels  # noqa: E402

cpu_kernels.install()


@pytest.fixture(scope="session", autouse=True)
def installed():
    """install() once for the session (tests that uninstall put it back)."""
    from ms_weightnorm.integrations import mindone as integration
    integration.install()
    yield integration
    integration.uninstall()
