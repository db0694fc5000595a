"""The README and the documentation work as written: their shell commands run.

Shell commands are the lines of the ```bash blocks (continuation lines joined, comments
dropped) and the inline code spans that start with ``bash run.sh``, in README.md, the pages
of docs/ and benchmarks/README.md. Every one of them must have an entry in ``PLANS``, which
says how this test runs it:

- ``full``: exactly as written (the msrun command gets a free port instead of 8118, so that
  parallel runs do not collide);
- ``cheap``: as written, with options appended that the command documents (``--help``,
  fewer steps, a smaller network, ``--collect-only`` for the test suite, which must not run
  itself from inside itself).

They run in a copy of the repository with ``MS_WEIGHTNORM_VENV`` set to the environment that
runs these tests, so ``run.sh`` uses it as it is and installs nothing. The Python blocks are
run by test_docs.py. The optional-dependency tests at the end hide packages from a subprocess
(a ``sitecustomize`` import blocker) to check what a plain ``pip install .`` user sees.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SOURCES = [README] + sorted((ROOT / "docs").glob("*.md")) + [ROOT / "benchmarks" / "README.md"]


# --------------------------------------------------------------------------- the README itself

def _sections(text: str) -> List[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def test_readme_is_short_and_in_a_newcomers_order():
    text = README.read_text(encoding="utf-8")
    assert 100 <= len(text.splitlines()) <= 160
    assert _sections(text) == ["Install", "Quick start", "Usage", "Features", "Documentation", "Security", "License"]
    install = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "**`mindspore-weightnorm`**" in install and "**`ms_weightnorm`**" in install
    assert "pip show mindspore-weightnorm" in install
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert shell_commands(quick.split("```bash", 1)[1].split("```", 1)[0].join(["```bash", "```"])) == [
        "bash run.sh demo", "bash run.sh test"]
    assert "Python 3.11" in quick
    usage = re.search(r"## Usage\n\n```python\n(.*?)```", text, flags=re.S).group(1)
    assert len(usage.splitlines()) <= 22


def _run_sh_size(extras: str) -> str:
    """The venv size run.sh announces for ``extras`` (its size_of), e.g. "4.1 GB"."""
    text = (ROOT / "run.sh").read_text(encoding="utf-8")
    return re.search(rf'\b{extras}\) echo "about (\d+\.\d GB)"', text).group(1)


def test_readme_disk_and_time_figures_agree_with_run_sh():
    """The README, the getting-started page and run.sh's install message state one measured
    venv size, and the README states how long the test suite takes."""
    readme = README.read_text(encoding="utf-8")
    started = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    test_size, demo_size = _run_sh_size("test"), _run_sh_size("demo")
    assert f"`.venv` then takes {test_size}\n(`du -sh .venv`; {demo_size} with the demo's libraries only)" in readme
    assert f"then takes {test_size} as `du -sh .venv` counts it" in started
    free = float(re.search(r"about (\d+) GB of free disk", readme).group(1))
    # the suite's own venv for the older-torch test (test_torch_save) comes on top of .venv
    old_torch = float(re.search(r"`\.venv-torch-old`, (\d+\.\d) GB", readme).group(1))
    assert f"`.venv-torch-old` ({old_torch} GB)" in started
    assert free > float(test_size.split()[0]) + old_torch + 0.5  # and pip's temporary files
    assert f"about {free:g} GB of free disk" in started
    assert ("16 to 20 minutes on a 2-core machine with nothing else running (971 to\n1,187 s for `bash run.sh test` "
            "over four fresh clones, 1,745 tests)") in readme
    assert "the suite: 16 to 20 minutes on a\n2-core machine" in started


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    links = [t.split("#", 1)[0] for t in re.findall(r"\]\(([^)]+)\)", text) if "://" not in t]
    assert "docs/security.md" in links and "docs/mindone.md" in links and "CHANGELOG.md" in links
    for link in links:
        assert (ROOT / link).exists(), link
    docs = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert docs <= set(links) | {"docs/changelog.md"}, docs - set(links)  # every page is reachable


# --------------------------------------------------------------------------- shell commands

def shell_commands(text: str) -> List[str]:
    """The shell commands of a Markdown text, in order, each once.

    >>> shell_commands("```bash\\nbash run.sh a \\\\\\n   --x 1   # note\\n# only a comment\\n```\\n"
    ...                "Then `bash run.sh b --help` or `X=2 bash run.sh c`, not `pip install .`.")
    ['bash run.sh a --x 1', 'bash run.sh b --help', 'X=2 bash run.sh c']
    """
    found: List[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            # The commands hold no quoted '#', so everything after one is a comment.
            command = line.split("#", 1)[0].strip()
            if command:
                found.append(" ".join(command.split()))
    # Inline spans, with any VAR=value prefixes: `bash run.sh ...`, `X=1 bash run.sh ...`.
    for span in re.findall(r"`((?:[A-Za-z_]+=\S+ )*bash run\.sh [^`]*)`", text):
        found.append(" ".join(span.split()))
    return list(dict.fromkeys(found))


def all_commands() -> List[str]:
    found: List[str] = []
    for source in SOURCES:
        found += shell_commands(source.read_text(encoding="utf-8"))
    return list(dict.fromkeys(found))


class Result(NamedTuple):
    returncode: int
    out: str  # stdout and stderr, interleaved as the user sees them
    cwd: Path


class Plan(NamedTuple):
    how: str  # "full" or "cheap"
    append: str  # options added after the command as written
    check: Callable[[Result], None]


MSRUN = ("bash run.sh exec msrun --worker_num=2 --local_worker_num=2 --master_addr=127.0.0.1 --master_port=8118 "
         "--log_dir=msrun_log --join=True examples/train_data_parallel.py --steps 20 --data-init --out dp_out")
DEMO_QUICK = " --data digits --steps 20 --window 5 --seeds 1 --no-progress"
DEMO_LABELS = ("plain", "weight norm", "weight norm + data init", "weight norm + mean-only BN", "batch norm")


def _no_mindspore_warnings(r: Result) -> None:
    warnings = [ln for ln in r.out.splitlines() if "[WARNING]" in ln]
    assert not warnings, "\n".join(warnings)


def _check_quick_start_demo(r: Result) -> None:
    for label in DEMO_LABELS:
        assert f"| {label} |" in r.out
    # The quick start says where the outputs go.
    out = r.cwd / "ms_weightnorm_demo"
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().startswith("# Weight norm demo: results\n")


def _check_docs_demo(r: Result) -> None:
    text = (r.cwd / "docs" / "demo" / "results.md").read_text()
    assert text.startswith("# Weight norm demo: results\n\nMade by `ms-weightnorm-demo --data digits --steps 20 ")
    assert "--setups plain,wn --out docs/demo`" in text and "| weight norm |" in text
    assert (r.cwd / "docs" / "demo" / "loss_curves.png").stat().st_size > 1000


def _check_test_suite_collects(r: Result) -> None:
    # The command reaches pytest with this project's configuration and its whole suite,
    # this test included; --collect-only runs none of it.
    assert "tests/test_readme.py::test_readme_shell_commands" in r.out
    assert "tests/test_docs.py::test_site_builds_strictly" in r.out
    assert "src/ms_weightnorm/demo.py::ms_weightnorm.demo.steps_to_threshold" in r.out  # doctests too
    collected = re.search(r"(\d+) tests? collected", r.out)
    assert collected and int(collected.group(1)) > 100, r.out[-2000:]


def _check_test_docs_collects(r: Result) -> None:
    assert "tests/test_docs.py::test_site_builds_strictly" in r.out and "test_readme" not in r.out


def _check_bench_help(r: Result) -> None:
    assert "--quick" in r.out and "bench_weight_norm" in r.out
    assert re.search(r"--quick +fewer repetitions, noisier \(measured: \d+-\d+ s", r.out), r.out


def _check_kernel_launch(r: Result) -> None:
    rows = re.findall(r"^\| \((\d+), (\d+)\) \| (\d+\.\d) \| (-?\d+\.\d) \|$", r.out, flags=re.M)
    assert [(int(a), int(b)) for a, b, _, _ in rows] == [(256, 1), (256, 768)], r.out
    assert all(float(whole) > 0 for _, _, whole, _ in rows), r.out
    _no_mindspore_warnings(r)


def _check_checkpoint_load(r: Result) -> None:
    rows = re.findall(r"^8 MB (\.pt|\.safetensors) +(all|one) +(this|torch mmap|torch|safetensors) +(\d+\.\d+) ",
                      r.out, flags=re.M)
    assert sorted({(fmt, use, reader) for fmt, use, reader, _ in rows}) == sorted(
        (fmt, use, reader) for use in ("all", "one") for fmt, reader in
        ((".pt", "this"), (".pt", "torch"), (".pt", "torch mmap"), (".safetensors", "this"),
         (".safetensors", "safetensors"))), r.out[-3000:]
    assert all(float(seconds) > 0 for *_, seconds in rows), r.out[-3000:]


def _check_added_cost_only(r: Result) -> None:
    assert "### What weight norm adds over a network's weights" in r.out, r.out[-2000:]
    assert "| 24 x (256, 256, 1, 3) | 0 |" in r.out
    assert "### Kernels per" not in r.out and "### Training step" not in r.out  # skipped sections
    # Printed once, row by row: no second copy of the table, no MindSpore warnings in between.
    assert r.out.count("| 24 x (256, 256, 1, 3) | 0 |") == 1 and r.out.count("| weights in one step |") == 1
    _no_mindspore_warnings(r)


def _check_demo_help(r: Result) -> None:
    for option in ("--data", "--steps", "--seeds", "--out", "--no-progress", "--overwrite-tracked"):
        assert option in r.out


def _check_hifigan_help(r: Result) -> None:
    # Every option has help text and shows its default.
    options = re.findall(r"^  (--[a-z-]+)", r.out, flags=re.M)
    assert sorted(options) == ["--channels", "--frames", "--out-dir", "--style"], r.out
    assert r.out.count("(default:") == len(options), r.out


def _check_hifigan_port(r: Result) -> None:
    errors = dict(re.findall(r"^\s*(\w+) vs torch: max relative error (\S+)$", r.out, flags=re.M))
    assert sorted(errors) == ["mindir", "mindspore", "removed"], r.out
    assert all(float(e) < 1e-4 for e in errors.values()), errors
    assert (r.cwd / "hifigan_port_out" / "generator.mindir").exists()
    _no_mindspore_warnings(r)


def _check_gan_example(r: Result) -> None:
    assert re.search(r"^step 0: D loss torch \S+ mindspore \S+", r.out, flags=re.M), r.out
    assert "spectral-norm u after the steps: max relative error" in r.out
    # Neither MindSpore's optimizer deprecation nor "side effect nodes were eliminated".
    _no_mindspore_warnings(r)
    assert "eliminated by mistake" not in r.out


def _check_single_process(r: Result) -> None:
    assert "rank 0/1: done, 10 steps" in r.out
    assert re.search(r"^  step   10/10  loss \d+\.\d{4}$", r.out, flags=re.M), r.out


def _check_pip_show(r: Result) -> None:
    assert re.search(r"^Name: mindspore-weightnorm$", r.out, flags=re.M), r.out


def _check_docs_build(r: Result) -> None:
    # Pages are files (site/api.html), so the site works opened from disk as the README says.
    assert (r.cwd / "site" / "index.html").exists() and (r.cwd / "site" / "api.html").exists()
    assert "WARNING" not in r.out and "Documentation built" in r.out, r.out[-2000:]


def _check_fuzz(r: Result) -> None:
    row = re.search(r"^pickle +(\d+) +(\d+) +(\d+) +\S+ -> \S+ +(\d+) ", r.out, flags=re.M)
    assert row and int(row.group(1)) > 0 and int(row.group(2)) > 0, r.out[-3000:]
    assert int(row.group(4)) == 0 and "fuzz: 0 finding(s)" in r.out and r.returncode == 0, r.out[-3000:]


def _check_msrun(r: Result) -> None:
    # Rank 0 prints the global-batch loss as it trains, then a summary; rank 1 its last line.
    # msrun echoes each worker's log with its own `tail -f`, so one rank's line can land in the
    # middle of another's: match the pieces, not whole lines.
    steps = re.findall(r"step +(\d+)/20  loss (\d+\.\d{4})", r.out)
    assert [int(s) for s, _ in steps] == list(range(2, 21, 2)), r.out
    summary = re.search(r"rank 0/2: done, 20 steps in .*? global-batch loss (\S+) -> (\d+\.\d{4}); wrote dp_out/final\.ckpt",
                        r.out)
    assert summary and float(summary.group(2)) == float(steps[-1][1]), r.out
    assert "rank 1/2: done, 20 steps" in r.out
    assert (r.cwd / "dp_out" / "final.ckpt").exists() and (r.cwd / "msrun_log" / "worker_1.log").exists()
    # Quiet by default: only msrun's own "Distributed job is spawned" warning is left (the
    # page explains it); the workers' connection retries are gone.
    warnings = [ln for ln in r.out.splitlines() if "[WARNING]" in ln]
    assert len(warnings) <= 1 and all("Distributed job is spawned" in w for w in warnings), "\n".join(warnings)
    assert "Failed to connect" not in r.out and "Topology build timed out" not in r.out


# Spans that show run.sh's syntax in prose rather than a command to type.
SYNTAX = {"bash run.sh exec COMMAND [args]", "GLOG_v=3 bash run.sh exec msrun ..."}
# Commands this test does not run, and why.
NOT_RUN = {
    "bash run.sh mutate [--budget-minutes 60] [--sample 0.15] [--modules functional.py,...]":
        "mutation testing: about an hour, and it installs mutmut, which run.sh does not do in a given venv",
    "MS_WEIGHTNORM_MINDSPORE=2.7.0 bash run.sh test":
        "creates a venv with another MindSpore release: a 3 GB download; CI runs it (.ci/run)",
    "pip install .": "installs into the environment running the tests; run.sh's own install (pip install -e) "
                     "is what every command here runs on, and CI makes it in a fresh clone",
    'pip install ".[demo]"': "as pip install .; the demo extras are what bash run.sh demo installs",
    "bash run.sh bench --quick": "about 4 minutes; its help (bash run.sh bench --help, run) states the measured time",
}

PLANS: Dict[str, Plan] = {
    "pip show mindspore-weightnorm": Plan("full", "", _check_pip_show),
    "bash run.sh demo": Plan("cheap", DEMO_QUICK, _check_quick_start_demo),
    "bash run.sh test": Plan("cheap", " --collect-only", _check_test_suite_collects),
    "bash run.sh test tests/test_docs.py": Plan("cheap", " --collect-only", _check_test_docs_collects),
    "bash run.sh docs": Plan("full", "", _check_docs_build),
    "bash run.sh fuzz": Plan("cheap", " --seconds 3 --fuzzers pickle", _check_fuzz),
    "bash run.sh exec python examples/hifigan_port.py --help": Plan("full", "", _check_hifigan_help),
    "bash run.sh bench": Plan("cheap", " --help", _check_bench_help),
    "bash run.sh bench --skip kernels,reparam,train,infer": Plan("cheap", " --quick", _check_added_cost_only),
    "bash run.sh exec python benchmarks/bench_kernel_launch.py": Plan("full", "", _check_kernel_launch),
    "bash run.sh exec python benchmarks/bench_checkpoint_load.py": Plan("cheap", " --megabytes 8 --rounds 1",
                                                                        _check_checkpoint_load),
    "bash run.sh demo --out docs/demo --overwrite-tracked": Plan("cheap", DEMO_QUICK + " --setups plain,wn",
                                                                 _check_docs_demo),
    "bash run.sh demo --help": Plan("full", "", _check_demo_help),
    MSRUN: Plan("full", "", _check_msrun),
    "bash run.sh exec python examples/train_data_parallel.py": Plan("full", "", _check_single_process),
    "bash run.sh exec python examples/hifigan_port.py": Plan("cheap", " --channels 16 --frames 4", _check_hifigan_port),
    "bash run.sh exec python examples/hifigan_discriminators.py --steps 3": Plan("cheap", " --steps 1",
                                                                                _check_gan_example),
}


def test_every_documented_command_has_a_plan():
    commands = [c for c in all_commands() if c not in SYNTAX and c not in NOT_RUN]
    assert MSRUN in commands  # the msrun page's command, word for word
    unplanned = [c for c in commands if c not in PLANS]
    assert not unplanned, f"documented commands this test does not run yet; add them to PLANS: {unplanned}"
    stale = [c for c in PLANS if c not in commands]
    assert not stale, f"PLANS has commands the documentation no longer shows: {stale}"
    assert not [c for c in NOT_RUN if c not in all_commands()], "NOT_RUN lists commands no page shows"


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """This checkout without its venvs (.venv and run.sh's .venv-mindspore-*, 3 GB each), git
    data and outputs: the fresh clone the README assumes."""
    dest = tmp_path_factory.mktemp("readme") / "repo"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", ".hypothesis", "ms_weightnorm_demo", "msrun_log",
        "dp_out", "hifigan_port_out", "hifigan_gan_out", "site", "rank_0", "kernel_meta", "*.ckpt", "*.mindir", "*.ir"))
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_tagged(tag: str) -> None:
    """Kill every process carrying ``tag`` in its environment (msrun's workers start new sessions)."""
    needle = f"MS_WEIGHTNORM_README_RUN={tag}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                continue


def run_command(command: str, cwd: Path, timeout: float = 600.0) -> Result:
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("GLOG_v", "MS_WEIGHTNORM_BACKEND")}
    # The environment running this test, used as it is: run.sh installs nothing into it.
    env.update(MS_WEIGHTNORM_VENV=sys.prefix, MS_WEIGHTNORM_README_RUN=tag)
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _kill_tagged(tag)
        out, _ = proc.communicate()
        pytest.fail(f"{command!r} did not finish within {timeout:.0f} s:\n{out[-3000:]}")
    finally:
        _kill_tagged(tag)
    return Result(proc.returncode, out, cwd)


@pytest.mark.parametrize("command", list(PLANS), ids=lambda c: c.replace(" ", "_")[:60])
def test_readme_shell_commands(command, repo_copy):
    plan = PLANS[command]
    assert (Path(sys.prefix) / "bin" / "python").exists(), "run the tests from a venv (bash run.sh test)"
    line = command + plan.append
    if command == MSRUN:
        line = line.replace("--master_port=8118", f"--master_port={_free_port()}")
    result = run_command(line, repo_copy)
    assert result.returncode == 0, f"{line!r} exited with {result.returncode}:\n{result.out[-4000:]}"
    plan.check(result)


# --------------------------------------------------------------------------- optional dependencies

def hide_modules(tmp_path: Path, *names: str) -> Dict[str, str]:
    """An environment in which ``names`` cannot be imported, as if they were not installed."""
    site = tmp_path / "hide"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n\n\n"
        "class _NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {set(names)!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n\n\n"
        "sys.meta_path.insert(0, _NotInstalled())\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "src")] + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _run_python(args: List[str], env: Dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable] + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_blocker_hides_only_what_it_is_told(tmp_path):
    env = hide_modules(tmp_path, "mlxtend")
    r = _run_python(["-c", "import matplotlib, sklearn\ntry:\n import mlxtend\nexcept ModuleNotFoundError as e:\n"
                           " print('hidden', e.name)"], env, tmp_path)
    assert r.returncode == 0 and r.stdout == "hidden mlxtend\n", r.stderr


@pytest.mark.parametrize("hidden, argv, named", [
    (("mlxtend", "sklearn", "matplotlib", "tqdm"), [], "mlxtend, matplotlib, tqdm"),  # a plain `pip install .`
    (("mlxtend", "sklearn", "matplotlib", "tqdm"), ["--data", "digits", "--no-progress"], "sklearn, matplotlib"),
    (("matplotlib",), ["--data", "digits", "--steps", "5", "--window", "2"], "matplotlib"),
])
def test_demo_without_its_extras_names_the_extra(tmp_path, hidden, argv, named):
    env = hide_modules(tmp_path, *hidden)
    # ms-weightnorm-demo is ms_weightnorm.demo:main (checked below); -m runs the same main.
    r = _run_python(["-m", "ms_weightnorm.demo"] + argv, env, tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "[WARNING]" not in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"(missing: {named})" in lines[0]
    assert 'pip install "mindspore-weightnorm[demo]"' in lines[0]
    # Checked before training: nothing was trained or written.
    assert r.stdout == "" and not (tmp_path / "ms_weightnorm_demo").exists()
    # --help needs none of the extras.
    assert _run_python(["-m", "ms_weightnorm.demo", "--help"], env, tmp_path).returncode == 0


def test_demo_console_script_is_the_checked_main():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^ms-weightnorm-demo = "ms_weightnorm\.demo:main"$', text, flags=re.M)


def test_hifigan_example_without_torch_says_how_to_install_it(tmp_path):
    env = hide_modules(tmp_path, "torch")
    r = _run_python([str(ROOT / "examples" / "hifigan_port.py"), "--out-dir", str(tmp_path / "out")], env, tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "[WARNING]" not in ln]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "needs PyTorch" in lines[0] and "pip install torch==2.13.0" in lines[0]
    assert not (tmp_path / "out").exists()
    # --help still works: it documents the options without torch.
    assert "--channels" in _run_python([str(ROOT / "examples" / "hifigan_port.py"), "--help"], env, tmp_path).stdout


# --------------------------------------------------------------------------- run.sh's set-up

STUB_PYTHON = r"""#!/usr/bin/env bash
# Stands in for python: `-m venv DIR` makes DIR/bin/python (this stub), `-m pip ...` is logged.
log="${STUB_LOG:?}"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && echo "venv $3" >> "$log"; exit 0
elif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  shift 2; echo "pip $*" >> "$log"; exit "${STUB_PIP_EXIT:-0}"
elif [ "$1" = "--version" ]; then
  echo "Python 3.11.0 (stub)"; exit 0
fi
echo "python $*" >> "$log"
"""


@pytest.fixture
def stub_repo(tmp_path):
    """run.sh and pyproject.toml in a folder of their own, and a stub python that installs nothing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("run.sh", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    stub = tmp_path / "stub-python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MS_WEIGHTNORM_VENV", "PYTHONPATH")}
    env.update(PYTHON=str(stub), STUB_LOG=str(tmp_path / "log"))
    return repo, env, tmp_path / "log"


def _sh(repo: Path, env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(repo / "run.sh"), *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=60)


def test_run_sh_announces_each_install_once_before_it_starts(stub_repo):
    repo, env, log = stub_repo
    r = _sh(repo, env, "demo", "--steps", "3")
    assert r.returncode == 0, r.stderr
    # What is installed, how big, how long: said before pip runs (stderr is unbuffered, in order).
    assert "installing MindSpore 2.10 + numpy + the demo extras" in r.stderr and "about 3.0 GB on disk" in r.stderr
    assert "2-3 minutes" in r.stderr
    calls = log.read_text().splitlines()
    assert calls == [f"venv {repo / '.venv'}", "pip install -q --upgrade pip", f"pip install -q -e {repo}[demo]",
                     "python -m ms_weightnorm.demo --steps 3"]
    # Nothing to install the second time: no message, no pip.
    r = _sh(repo, env, "demo")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert log.read_text().splitlines()[4:] == ["python -m ms_weightnorm.demo"]
    # The test extras are more: announced with the size they grow to, then covered for demo too.
    r = _sh(repo, env, "exec", "python", "x.py")
    assert "the demo, docs and test extras" in r.stderr and "about 4.1 GB" in r.stderr
    assert log.read_text().splitlines()[5:] == ["pip install -q --upgrade pip", f"pip install -q -e {repo}[test]",
                                                "python x.py"]
    r = _sh(repo, env, "demo")
    assert r.stderr == "" and log.read_text().splitlines()[8:] == ["python -m ms_weightnorm.demo"]
    # A changed pyproject.toml installs again.
    with open(repo / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    _sh(repo, env, "demo")
    assert log.read_text().splitlines()[9:] == ["pip install -q --upgrade pip", f"pip install -q -e {repo}[demo]",
                                                "python -m ms_weightnorm.demo"]


def test_run_sh_exec_puts_the_venv_first_on_path(stub_repo):
    repo, env, log = stub_repo
    r = _sh(repo, env, "exec", "bash", "-c", 'echo "$(command -v python) $VIRTUAL_ENV $PYTHONPATH"')
    assert r.returncode == 0, r.stderr
    venv = repo / ".venv"
    # msrun finds its workers' python this way.
    assert r.stdout.split() == [str(venv / "bin" / "python"), str(venv), str(repo / "src")]


def test_run_sh_failed_install_says_what_to_do_and_retries_next_time(stub_repo):
    repo, env, log = stub_repo
    r = _sh(repo, dict(env, STUB_PIP_EXIT="1"), "demo")
    assert r.returncode == 1
    assert "installing failed" in r.stderr and "then re-run the same command" in r.stderr
    assert not (repo / ".venv" / ".ms_weightnorm_installed").exists()
    r = _sh(repo, env, "demo")
    assert r.returncode == 0 and "installing" in r.stderr


@pytest.mark.parametrize("args, env_extra, expected", [
    ((), {}, "usage: bash run.sh {demo|test|bench|docs"),
    (("nope",), {}, "usage: bash run.sh {demo|test|bench|docs"),
    (("exec",), {}, "exec needs a command to run, e.g.: bash run.sh exec python"),
    (("demo",), {"MS_WEIGHTNORM_VENV": "/nonexistent/venv"}, "has no bin/python. Point it at an existing venv"),
])
def test_run_sh_usage_errors_say_what_to_do(stub_repo, args, env_extra, expected):
    repo, env, log = stub_repo
    r = _sh(repo, dict(env, **env_extra), *args)
    assert r.returncode == 2 and expected in r.stderr, r.stderr
    assert not log.exists() and not (repo / ".venv").exists()  # nothing was set up


def test_run_sh_uses_a_given_venv_as_it_is(stub_repo, tmp_path):
    repo, env, log = stub_repo
    venv = tmp_path / "given"
    (venv / "bin").mkdir(parents=True)
    shutil.copy(tmp_path / "stub-python", venv / "bin" / "python")
    r = _sh(repo, dict(env, MS_WEIGHTNORM_VENV=str(venv)), "test", "-k", "x")
    assert r.returncode == 0 and r.stderr == ""
    assert log.read_text().splitlines() == ["python -m pytest -q -k x"]  # no venv made, no pip
    r = _sh(repo, dict(env, MS_WEIGHTNORM_VENV=str(venv)), "exec", "no-such-command")
    assert r.returncode == 127 and "'no-such-command' is neither in" in r.stderr


def test_run_sh_install_shows_pips_progress_on_a_terminal(stub_repo):
    """On a terminal the long install is not silent: pip's own progress is shown (no -q)."""
    repo, env, log = stub_repo
    assert shutil.which("script"), "util-linux's script(1) provides the terminal for this test"
    r = subprocess.run(["script", "-qec", f"bash {repo / 'run.sh'} demo --steps 3", "/dev/null"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = log.read_text().splitlines()
    assert f"pip install -e {repo}[demo]" in calls, calls  # the package install, without -q
    assert "pip install -q --upgrade pip" in calls  # upgrading pip itself stays a quiet second


def test_run_sh_docs_is_covered_by_the_test_extras(stub_repo):
    repo, env, log = stub_repo
    assert _sh(repo, env, "docs").returncode == 0
    assert log.read_text().splitlines()[-2:] == [f"pip install -q -e {repo}[docs]", "python -m mkdocs build --strict"]
    assert _sh(repo, env, "test").returncode == 0  # test installs its extras on top
    assert _sh(repo, env, "docs").returncode == 0
    assert log.read_text().splitlines()[-1] == "python -m mkdocs build --strict"
    assert (repo / ".venv" / ".ms_weightnorm_installed").read_text().split()[1:] == ["docs", "test"]
    after_test = log.read_text().splitlines()
    assert "pip install -q -e " + str(repo) + "[docs]" not in after_test[after_test.index(
        f"pip install -q -e {repo}[test]"):]  # nothing reinstalled for docs after test
