"""The mindone integration's doctests need mindone, which the main test venv does not have (and
must not import). They run in the mindone venv: tools/mindone/run_tests.sh collects them there."""
import importlib.util

collect_ignore = [] if importlib.util.find_spec("mindone") else ["mindone.py"]
