"""mutmut 2 hooks for ``bash run.sh mutate`` (copied to the root of the scratch copy it runs in).

Each mutant runs only the fast tests that exercise its module (``MODULE_TESTS``), with ``-x``:
a mutant in functional.py does not wait for the unpickler's tests. Lines that are only the
text of an error message, a warning or a docstring are skipped: a mutant there changes
wording, not behaviour (the tests that match messages check the words that matter).
"""
import os
import sys

PKG = "src/ms_weightnorm/"

# Module -> tests (and doctests) that a mutant of it must fail. Ordered fastest first.
MODULE_TESTS = {
    "functional.py": [PKG + "functional.py", "tests/test_functional.py", "tests/test_fused.py"],
    "parametrize.py": [PKG + "parametrize.py", "tests/test_parametrize.py", "tests/test_weight_norm.py"],
    "weight_norm.py": [PKG + "weight_norm.py", "tests/test_weight_norm.py", "tests/test_parametrize.py"],
    "_torch_pickle.py": [PKG + "_torch_pickle.py", "tests/test_torch_io.py"],
    "init.py": [PKG + "init.py", "tests/test_init.py"],
    "distributed.py": [PKG + "distributed.py",
                       "tests/test_distributed.py::test_without_communication_helpers_are_the_identity",
                       "tests/test_distributed.py::test_all_reduce_sum_two_processes_every_dtype"],
}


def _message_only(line: str) -> bool:
    s = line.strip()
    # Continuation lines of messages and docstrings: a string literal alone on its line.
    return s.startswith(('f"', '"', "f'", "'", 'r"', 'rf"')) or s.startswith(("warnings.warn(", '"""'))


def pre_mutation(context):
    name = context.filename.rsplit("/", 1)[-1]
    if name not in MODULE_TESTS:
        context.skip = True
        return
    if _message_only(context.current_source_line):
        context.skip = True
        return
    python = os.environ.get("MUTATE_PYTHON", sys.executable)
    context.config.test_command = f"{python} tools/mutation/runner.py {name}"
