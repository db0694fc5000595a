# Sourced by tools/mindone/run_tests.sh and tools/mindnlp/run_tests.sh: each integration's suite
# runs against the real package in a venv of its own, created and filled on first use and
# refilled only when its pins change (a stamp in the venv records their checksum).
# Usage: run_integration_suite NAME VENV DESCRIPTION SUITE_DIR -- PIN... -- [pytest options]

run_integration_suite() {
  local name="$1" venv="$2" description="$3" suite="$4"
  shift 4
  [ "$1" = "--" ] && shift
  local pins=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do pins+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  local repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  local want stamp
  want="$(printf '%s\n' "${pins[@]}" | cksum | cut -d' ' -f1)"
  stamp="$venv/.ms_weightnorm_${name}_installed"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    if [ ! -x "$venv/bin/python" ]; then
      local python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
      echo "tools/$name/run_tests.sh: creating $venv with $python ($description)" >&2
      "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet "${pins[@]}"
    echo "$want" > "$stamp"
  fi
  cd "$repo"
  # -p no:cacheprovider keeps the checkout clean; rootdir is the repo so the suite's conftest.py applies.
  PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}" \
    exec "$venv/bin/python" -m pytest -p no:cacheprovider -o addopts="" -c /dev/null --rootdir "$repo" "$suite" "$@"
}
