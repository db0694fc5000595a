"""The mindone and mindnlp integrations' doctests need those packages, which the main test venv
does not have (and must not import). They run in their own venvs: tools/mindone/run_tests.sh and
tools/mindnlp/run_tests.sh collect them there."""
import importlib.util

collect_ignore = [] if importlib.util.find_spec("mindone") else ["mindone.py"]
if not importlib.util.find_spec("mindnlp"):
    collect_ignore += ["mindnlp.py", "_mindtorch.py"]
