"""mutmut 2 hooks for ``bash run.sh mutate`` (copied to the root of the scratch copy it runs in).

Each mutant runs only the fast tests that exercise its module (``MODULE_TESTS``), with ``-x``:
a mutant in functional.py does not wait for the unpickler's tests. Lines that are only the
continued text of an error message, or a warning call, are skipped: a mutant there changes
wording, not behaviour (the tests that match messages check the words that matter).
"""
import os
import re
import sys
import zlib

PKG = "src/ms_weightnorm/"

# Module -> pytest arguments: tests (and doctests) that a mutant of it must fail, fastest
# first. The per-layer sweep of test_weight_norm (80 s) runs for a few layer kinds only.
_WN_SUBSET = ["-k", "not test_layer_outputs_and_gradients or Dense-weight or LSTM or Conv1d-weight"]
MODULE_TESTS = {
    "distributed.py": [PKG + "distributed.py",
                       "tests/test_distributed.py::test_without_communication_helpers_are_the_identity",
                       "tests/test_distributed.py::test_all_reduce_sum_two_processes_every_dtype"],
    "weight_norm.py": [PKG + "weight_norm.py", "tests/test_parametrize_edges.py", "tests/test_weight_norm.py",
                       "tests/test_parametrize.py",
                       *_WN_SUBSET],
    # test_spectral_norm: the only stateful parametrization, whose getters and add_flags hook
    # nothing else reaches (parametrize #236 and #295 survived without it, 2026-12-05).
    "parametrize.py": [PKG + "parametrize.py", "tests/test_parametrize.py", "tests/test_parametrize_edges.py",
                       "tests/test_spectral_norm.py", "tests/test_weight_norm.py",
                       *_WN_SUBSET],
    "init.py": [PKG + "init.py", "tests/test_init.py"],
    # test_composed too: the other two run on the default (fused) path on CPU, so the composed
    # cells' mutants survived them (4 of the 7 survivors of the 2026-12-05 run).
    "functional.py": [PKG + "functional.py", "tests/test_functional.py", "tests/test_fused.py",
                      "tests/test_composed.py"],
}
# The checkpoint reader, one module per format: fastest tests first (the package alone, no
# MindSpore), then the loader's. limits.py is mutated too: every bound must be pinned.
_READER_TESTS = ["tests/test_bf16_bits.py", "tests/test_unpickler.py", "tests/test_cost_kinds.py",
                 "tests/test_zip_reader.py", "tests/test_zip_rules.py", "tests/test_atomic.py",
                 "tests/test_safetensors_writer.py", "tests/test_hostile_files.py", "tests/test_fuzz.py",
                 "tests/test_torch_io.py"]
for _module in ("limits", "errors", "zipfile_reader", "unpickler", "tensors", "torch_zip", "safetensors_io",
                "atomic", "bf16", "files", "__init__"):
    MODULE_TESTS[f"_checkpoint/{_module}.py"] = [PKG + f"_checkpoint/{_module}.py", *_READER_TESTS]
# Modules whose own tests are enough, first, then the loader's that also reach them.
MODULE_TESTS["_checkpoint/atomic.py"] = [PKG + "_checkpoint/atomic.py", "tests/test_atomic.py",
                                         "tests/test_safetensors_writer.py", "tests/test_torch_io.py"]
MODULE_TESTS["_checkpoint/zipfile_reader.py"] = [PKG + "_checkpoint/zipfile_reader.py", "tests/test_zip_rules.py",
                                                 "tests/test_zip_reader.py", "tests/test_hostile_files.py"]
MODULE_TESTS["_checkpoint/safetensors_io.py"] = [PKG + "_checkpoint/safetensors_io.py",
                                                 "tests/test_safetensors_writer.py", "tests/test_hostile_files.py",
                                                 "tests/test_torch_io.py"]
# The loader's value rules (complex, overflow to inf, the clipped refusal) live in torch_io.py.
MODULE_TESTS["torch_io.py"] = [PKG + "torch_io.py", "tests/test_value_rules.py", "tests/test_torch_io.py",
                               "tests/test_hostile_files.py"]
# The integrations. mindone's runs its suite's install tests in the mindone venv
# (MUTATE_MINDONE_PYTHON, e.g. .venv-mindone/bin/python; see MINDONE below).
MODULE_TESTS["integrations/mindspore_api.py"] = [PKG + "integrations/mindspore_api.py",
                                                 "tests/test_mindspore_api.py"]
# The install rules first, then one model loaded in both torch layouts through from_pretrained
# (the key-mapping code that the install tests do not reach).
MODULE_TESTS["integrations/mindone.py"] = ["tests_mindone/test_install_rules.py", "tests_mindone/test_install.py",
                                           "tests_mindone/test_parity.py::test_wav2vec2_positional_conv"]
# The re-binding both integrations share (found, journaled, undone): mindone's install tests reach all of it.
MODULE_TESTS["integrations/_rebind.py"] = ["tests_mindone/test_install_rules.py", "tests_mindone/test_install.py"]
MINDONE = {"integrations/mindone.py", "integrations/_rebind.py"}
# The assignment path alone: the functions of parametrize.py behind ``cell.weight = X``,
# ``weight.set_data(X)`` and ``weight.data.set_data(X)``, against the tests of that path. A target
# is (file, names of its top-level functions and classes whose lines are mutated).
TARGETS = {"assignment": ("parametrize.py", ("_concrete", "assign_parametrized", "_assigner", "ComputedTensor",
                                             "_ComputedProperty"))}
MODULE_TESTS["assignment"] = ["tests/test_assign_resplit.py", "tests/test_computed_data.py",
                              "tests/test_parametrize.py", "-k", "assign or set_data or data or resplit or split"]


def target_file(module: str) -> str:
    """The file a module key or target mutates, under the package."""
    return TARGETS[module][0] if module in TARGETS else module


_SPANS: dict = {}


def _in_target(filename: str, line_number: int, target: str) -> bool:
    """Whether 0-based ``line_number`` of ``filename`` is inside one of the target's definitions."""
    if target not in _SPANS:
        import ast
        with open(filename) as f:
            tree = ast.parse(f.read())
        _SPANS[target] = [(node.lineno - 1 - len(getattr(node, "decorator_list", ())), node.end_lineno - 1)
                          for node in tree.body if getattr(node, "name", None) in TARGETS[target][1]]
    return any(start <= line_number <= end for start, end in _SPANS[target])
# Fraction of mutants to run (MUTATE_SAMPLE, default all): a deterministic sample spread over
# every line, so a short budget still measures the whole module rather than its first lines.
SAMPLE = float(os.environ.get("MUTATE_SAMPLE", "1"))


def _sampled_out(filename: str, line_number: int, index: int) -> bool:
    if SAMPLE >= 1:
        return False
    key = zlib.crc32(f"{filename.rsplit('/', 1)[-1]}:{line_number}:{index}".encode())
    return key % 10000 >= SAMPLE * 10000


# A line that is nothing but string literals (an f-string continuation of an error message),
# closing brackets and a comma. Literals separated by commas or colons (tuples, dict tables such
# as the unpickler's dtype map) are code, and are mutated.
_LITERALS_ONLY = re.compile(r"""^(?:[rRfFbBuU]{0,2}(?:"[^"]*"|'[^']*')\s*)+[),]*\s*$""")


def _message_only(line: str) -> bool:
    s = line.strip()
    return bool(_LITERALS_ONLY.match(s)) or s.startswith("warnings.warn(")


def pre_mutation(context):
    # The module's path under the package (``_checkpoint/unpickler.py``, ``functional.py``).
    name = context.filename.split(PKG, 1)[-1] if PKG in context.filename else context.filename.rsplit("/", 1)[-1]
    target = os.environ.get("MUTATE_TARGET")
    if target in TARGETS:
        if name != TARGETS[target][0] or not _in_target(context.filename, context.mutation_id.line_number, target):
            context.skip = True
            return
        name = target
    if name not in MODULE_TESTS:
        context.skip = True
        return
    if _message_only(context.current_source_line):
        context.skip = True
        return
    mid = context.mutation_id
    if _sampled_out(context.filename, mid.line_number, mid.index):
        context.skip = True
        return
    python = os.environ.get("MUTATE_PYTHON", sys.executable)
    context.config.test_command = f"{python} tools/mutation/runner.py {name}"
