"""Test command for one mutant: the fast tests relevant to the mutated module (MODULE_TESTS).

mutmut 2 counts only exit code 1 as "killed". pytest exits 2 on a collection error (a
mutant that breaks an import), and a mutant can crash the interpreter (a collective issued
without partners segfaults). pytest therefore runs in a child process, and any failure,
signal included, is reported as 1.
Usage (from the scratch copy's root): python tools/mutation/runner.py functional.py
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mutmut_config import MINDONE, MODULE_TESTS  # noqa: E402


def main(argv):
    python, options = sys.executable, []
    if argv[0] in MINDONE:
        # The mindone suite runs in its own venv, configured as tools/mindone/run_tests.sh does.
        python = os.environ.get("MUTATE_MINDONE_PYTHON") or sys.exit(
            f"{argv[0]}: set MUTATE_MINDONE_PYTHON to the mindone venv's python (tools/mindone/run_tests.sh makes it)")
        options = ["-o", "addopts=", "-c", os.devnull, "--rootdir", os.getcwd()]
    cmd = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header",
           "-W", "ignore", *options, *MODULE_TESTS[argv[0]]]
    return 0 if subprocess.call(cmd) == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
