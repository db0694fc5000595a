#!/usr/bin/env bash
# Runs the mindnlp integration tests (tests_mindnlp/) in a venv of their own, .venv-mindnlp,
# created and filled on first use: mindnlp 0.5.1 (install() is tested with it) on MindSpore 2.7.0,
# transformers 4.57.1 (its modeling code is what runs), PyTorch 2.13.0 CPU as the reference (in
# a subprocess: mindnlp redirects `import torch` in its own), numpy<2 and pytest. `import mindnlp`
# also needs pyarrow, peft and diffusers pinned to these releases. The main test run never imports
# mindnlp; this is the only place it is installed.
# Usage: bash tools/mindnlp/run_tests.sh [pytest options]
# Measured on 2 shared cores: 5 min from nothing (venv included, about 4 GB), 1 min 50 s with the venv in place.
#   MS_WEIGHTNORM_MINDNLP_VENV=DIR  use (and fill, if needed) that venv instead of .venv-mindnlp.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
source "$repo/tools/integration_suite.sh"

# HF_HUB_OFFLINE: every model is built from a config or a local checkpoint; nothing is downloaded.
export HF_HUB_OFFLINE=1
run_integration_suite mindnlp "${MS_WEIGHTNORM_MINDNLP_VENV:-$repo/.venv-mindnlp}" \
  "mindnlp + MindSpore 2.7.0 + transformers + torch CPU: about 4 GB; measured 3.5 min" tests_mindnlp \
  -- "mindnlp==0.5.1" "mindspore==2.7.0" "transformers==4.57.1" "torch==2.13.0" "numpy<2" "pyarrow==22.0.0" \
     "peft==0.17.1" "diffusers==0.35.1" "pytest>=7" -- "$@"
