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
source "$repo/tools/integration_suite.sh"

# The versions the integration was tested with; install() refuses other mindone releases.
run_integration_suite mindone "${MS_WEIGHTNORM_MINDONE_VENV:-$repo/.venv-mindone}" \
  "mindone + MindSpore 2.7.1 + transformers + diffusers + torch CPU: about 4 GB; measured 1.5 min" tests_mindone \
  -- "mindone==0.5.0" "mindspore==2.7.1" "transformers==4.57.1" "diffusers==0.35.1" "torch==2.13.0" "numpy<2" \
     "pytest>=7" -- "$@"
