#!/usr/bin/env bash
# One entry point that sets itself up: creates .venv (once), installs the package with the
# extras the chosen command needs, then runs it. Usage:
#   bash run.sh demo [demo options]   # train with and without weight norm, print a table, write a PNG
#   bash run.sh test [pytest options] # the full test suite (installs torch 2.13.0 CPU as a reference)
#   bash run.sh bench [options]       # the speed benchmark
#   bash run.sh mutate [options]      # mutation testing of the core modules (mutmut 2; ~1 h; not in CI)
set -euo pipefail
cd "$(dirname "$0")"

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo) extras="demo" ;;
  test|bench|mutate) extras="test" ;;
  *) echo "usage: bash run.sh {demo|test|bench|mutate} [options]" >&2; exit 2 ;;
esac

venv="${MS_WEIGHTNORM_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python="${PYTHON:-}"
  if [ -z "$python" ]; then
    python=$(command -v python3.11 || command -v python3 || command -v python)
  fi
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
"$venv/bin/python" -m pip install -q -e ".[$extras]"

case "$cmd" in
  demo) exec "$venv/bin/python" -m ms_weightnorm.demo "$@" ;;
  test) exec "$venv/bin/python" -m pytest -q "$@" ;;
  bench) exec "$venv/bin/python" benchmarks/bench_weight_norm.py "$@" ;;
  mutate)
    # mutmut 2 mutates the source text itself (in a scratch copy), so GRAPH_MODE parses each
    # mutant as written; mutmut 3 routes every function through a runtime trampoline.
    "$venv/bin/python" -m pip install -q "mutmut==2.5.1"
    exec "$venv/bin/python" tools/mutation/mutate.py "$@" ;;
esac
