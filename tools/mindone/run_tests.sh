#!/usr/bin/env bash
# Runs the mindone integration tests (tests_mindone/) in a venv of their own, .venv-mindone,
# created and filled on first use: mindone 0.5.0 (the release install() was tested with) with the MindSpore, transformers and diffusers
# releases it mirrors, PyTorch 2.13.0 CPU as the reference, numpy<2 and pytest. The main test run
# never imports mindone; this is the only place it is installed.
# Usage: bash tools/mindone/run_tests.sh [pytest options]
# Measured on 2 cores: 2 min 20 s from nothing (venv included), 45 s with the venv in place.
#   MS_WEIGHTNORM_MINDONE_VENV=DIR  use (and fill, if needed) that venv instead of .venv-mindone.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${MS_WEIGHTNORM_MINDONE_VENV:-$repo/.venv-mindone}"
say() { echo "tools/mindone/run_tests.sh: $*" >&2; }

# The versions the integration was tested with; install() refuses other mindone releases.
pins=("mindone==0.5.0" "mindspore==2.7.1" "transformers==4.57.1" "diffusers==0.35.1" "torch==2.13.0" "numpy<2" "pytest>=7")
want="$(printf '%s\n' "${pins[@]}" | cksum | cut -d' ' -f1)"
stamp="$venv/.ms_weightnorm_mindone_installed"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
    say "creating $venv with $python (mindone + MindSpore 2.7.1 + transformers + diffusers + torch CPU: about 4 GB; measured 1.5 min)"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet "${pins[@]}"
  echo "$want" > "$stamp"
fi

cd "$repo"
# -p no:cacheprovider keeps the checkout clean; rootdir is the repo so tests_mindone/conftest.py applies.
PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" \
  exec "$venv/bin/python" -m pytest -p no:cacheprovider -o addopts="" -c /dev/null --rootdir "$repo" tests_mindone "$@"
