#!/usr/bin/env bash
# One entry point that sets itself up: creates .venv (once), installs the package with the
# extras the chosen command needs (again only when pyproject.toml changes), then runs it. Usage:
#   bash run.sh demo [demo options]   # train with and without weight norm, print a table, write a PNG
#   bash run.sh test [pytest options] # the full test suite (installs torch 2.13.0 CPU as a reference)
#   bash run.sh bench [options]       # the speed benchmark
#   bash run.sh docs [mkdocs options] # the documentation site: mkdocs build --strict into site/
#   bash run.sh mutate [options]      # mutation testing of the core modules (mutmut 2; ~1 h; not in CI)
#   bash run.sh fuzz [--seconds N]    # coverage-guided fuzzing of the checkpoint reader (atheris; default
#                                     #   300 s per target); prints executions, coverage and findings
#   bash run.sh exec COMMAND [args]   # any command inside the venv (its bin first on PATH), e.g.
#                                     #   bash run.sh exec python examples/hifigan_port.py
#                                     #   bash run.sh exec msrun --worker_num=2 ... examples/train_data_parallel.py
# Environment:
#   MS_WEIGHTNORM_VENV=DIR  use the existing venv DIR as it is: nothing is created or installed
#                           (it must already hold mindspore and the extras the command needs).
#   MS_WEIGHTNORM_MINDSPORE=2.7.0  that MindSpore release (any in the supported window, see the
#                           README), in a venv of its own: .venv-mindspore-2.7.0 instead of .venv.
#   PYTHON=python3.11       the interpreter that creates .venv (default: python3.11, python3, python).
# Commands run with this checkout's src/ first on PYTHONPATH, so they use this checkout's code
# whichever venv they run in.
set -euo pipefail
repo="$(cd "$(dirname "$0")" && pwd)"

say() { echo "run.sh: $*" >&2; }
usage() {
  echo "usage: bash run.sh {demo|test|bench|docs|fuzz|mutate} [options]   or   bash run.sh exec COMMAND [args...]" >&2
  echo "  e.g. bash run.sh demo --help; bash run.sh exec python examples/hifigan_port.py --help" >&2
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
# Extras per command. "test" includes "demo"; exec gets everything the README's commands use.
case "$cmd" in
  demo) extras="demo" ;;
  docs) extras="docs" ;;
  fuzz) extras="test" ;;
  test|bench|exec|mutate) extras="test" ;;
  -h|--help|help) usage; exit 0 ;;
  *) usage; exit 2 ;;
esac
if [ "$cmd" = exec ] && [ $# -eq 0 ]; then
  say "exec needs a command to run, e.g.: bash run.sh exec python examples/hifigan_port.py --help"
  exit 2
fi

# Times measured with `time` on a fresh clone (Python 3.11, MindSpore 2.10.0, PyTorch 2.13.0+cpu,
# 2 cores, 2026-11-29): demo set-up 2 min 26 s, test extras 1 min 22 s more. Sizes as `du -sh`
# reports them (2026-12-07): 4.1 GB for a venv with the test extras; demo and docs from the
# installed files of each extra's packages, scaled by the same du-to-file-size ratio (1.06).
ms_release="MindSpore ${MS_WEIGHTNORM_MINDSPORE:-2.10}"
size_of() { case "$1" in demo) echo "about 3.0 GB" ;; test) echo "about 4.1 GB" ;; docs) echo "about 2.9 GB" ;; esac; }
what_of() {
  case "$1" in
    demo) echo "$ms_release + numpy + the demo extras (matplotlib, scikit-learn, mlxtend, tqdm)" ;;
    test) echo "$ms_release + numpy + the demo, docs and test extras (PyTorch 2.13.0 CPU as a test reference, pytest, hypothesis, mkdocs)" ;;
    docs) echo "$ms_release + numpy + the docs extras (mkdocs, mkdocs-material, mkdocstrings)" ;;
  esac
}

if [ -n "${MS_WEIGHTNORM_VENV:-}" ]; then
  venv="$MS_WEIGHTNORM_VENV"
  if [ -n "${MS_WEIGHTNORM_MINDSPORE:-}" ]; then
    say "MS_WEIGHTNORM_MINDSPORE installs into a venv run.sh creates; MS_WEIGHTNORM_VENV is used as it is."
    say "Unset one of them."
    exit 2
  fi
  if [ ! -x "$venv/bin/python" ]; then
    say "MS_WEIGHTNORM_VENV=$venv has no bin/python. Point it at an existing venv that has mindspore installed,"
    say "or unset it to let run.sh create and fill .venv in $repo."
    exit 2
  fi
else
  venv="$repo/.venv"
  ms_pin=()
  if [ -n "${MS_WEIGHTNORM_MINDSPORE:-}" ]; then
    venv="$repo/.venv-mindspore-$MS_WEIGHTNORM_MINDSPORE"
    ms_pin=("mindspore==$MS_WEIGHTNORM_MINDSPORE")
  fi
  stamp="$venv/.ms_weightnorm_installed"
  # The stamp records the pyproject.toml the extras came from, then the extras installed from
  # it: "test" covers "demo" and "docs".
  want="$(cksum < "$repo/pyproject.toml" | cut -d' ' -f1)"
  have="$(cat "$stamp" 2>/dev/null || true)"
  installed=""
  [ "${have%% *}" = "$want" ] && installed=" ${have#* } "
  covered=no
  case "$installed" in *" $extras "*) covered=yes ;; esac
  [ "$extras" != test ] && case "$installed" in *" test "*) covered=yes ;; esac
  if [ "$covered" = no ]; then
    if [ ! -x "$venv/bin/python" ]; then
      python="${PYTHON:-}"
      if [ -z "$python" ]; then
        python=$(command -v python3.11 || command -v python3 || command -v python || true)
      fi
      if [ -z "$python" ]; then
        say "no Python found. Install Python 3.9-3.11 (3.11 tested), or set PYTHON=/path/to/python3.11."
        exit 1
      fi
      say "first run: creating $venv with $("$python" --version 2>&1) ($python)"
      if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        say "could not create a venv with $python. On Debian/Ubuntu: sudo apt install python3-venv;"
        say "or set PYTHON=/path/to/another/python3.11 and re-run."
        exit 1
      fi
    fi
    if [ -z "$have" ]; then
      say "installing $(what_of "$extras") into $venv: $(size_of "$extras") on disk;"
      say "this downloads about 1 GB (MindSpore's wheel is 0.8 GB) and takes 2-3 minutes on a fast connection. Once only."
    else
      say "installing $(what_of "$extras") into $venv (grows to $(size_of "$extras") on disk; 1-2 minutes). Once only."
    fi
    # On a terminal pip shows what it downloads; in logs and CI it stays quiet.
    quiet=(-q)
    [ -t 2 ] && quiet=()
    if ! { "$venv/bin/python" -m pip install -q --upgrade pip &&
           "$venv/bin/python" -m pip install ${quiet[@]+"${quiet[@]}"} -e "$repo[$extras]" ${ms_pin[@]+"${ms_pin[@]}"}; }; then
      say "installing failed (pip's messages are above). Check access to PyPI and free disk space"
      say "(5 GB needed), then re-run the same command; to start over: rm -rf $venv"
      exit 1
    fi
    echo "$want$(echo "$installed" | tr -s ' ' | sed 's/ $//') $extras" | tr -s ' ' > "$stamp"
    say "set-up done; running: $cmd $*"
  fi
fi

# msrun starts its workers with the `python` on PATH, so the venv's bin goes first.
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"

case "$cmd" in
  demo) exec python -m ms_weightnorm.demo "$@" ;;
  test) cd "$repo" && exec python -m pytest -q "$@" ;;
  bench) exec python "$repo/benchmarks/bench_weight_norm.py" "$@" ;;
  docs)
    # Material prints a banner about its own future on every build; set NO_MKDOCS_2_WARNING=0 to see it.
    export NO_MKDOCS_2_WARNING="${NO_MKDOCS_2_WARNING:-1}"
    cd "$repo" && exec python -m mkdocs build --strict "$@" ;;
  exec)
    if ! command -v "$1" > /dev/null; then
      say "'$1' is neither in $venv/bin nor on PATH. The venv has python, pip, msrun and ms-weightnorm-demo;"
      say "e.g. bash run.sh exec python examples/hifigan_port.py --help"
      exit 127
    fi
    exec "$@" ;;
  mutate)
    # mutmut 2 mutates the source text itself (in a scratch copy), so GRAPH_MODE parses each
    # mutant as written; mutmut 3 routes every function through a runtime trampoline.
    if ! python -c "import mutmut, sys; sys.exit(not mutmut.__version__.startswith('2.'))" 2> /dev/null; then
      if [ -n "${MS_WEIGHTNORM_VENV:-}" ]; then
        say "mutate needs mutmut 2 in $venv, which run.sh does not install into a venv it was given:"
        say "$venv/bin/python -m pip install mutmut==2.5.1, or unset MS_WEIGHTNORM_VENV to use .venv"
        exit 1
      fi
      say "installing mutmut 2.5.1 into $venv (a few MB; once)"
      python -m pip install -q "mutmut==2.5.1"
    fi
    cd "$repo" && exec python tools/mutation/mutate.py "$@" ;;
  fuzz)
    # atheris (libFuzzer for Python) is in the test extra on Linux; it has no wheels elsewhere.
    if ! python -c "import atheris" 2> /dev/null; then
      say "fuzz needs atheris in $venv (Linux only): $venv/bin/python -m pip install 'atheris>=2.3'"
      exit 1
    fi
    cd "$repo" && exec python fuzz/run.py "$@" ;;
esac
