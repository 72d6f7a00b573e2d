#!/usr/bin/env bash
# Create (or update) the project's virtual environment and build fastfn into it.
#
#   scripts/setup.sh            .venv with the CPU build of torch (2.13.0) and fastfn
#   VENV=path scripts/setup.sh  another location
#
# A machine with a CUDA torch already installed can skip this and run
#   pip install --no-build-isolation -e .
# in its own environment (CUDA kernels are then built automatically).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
cd "$ROOT"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # Pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
  "$VENV/bin/pip" install -q "torch==${FASTFN_TORCH_VERSION:-2.13.0}"
fi
"$VENV/bin/pip" install -q -r requirements-test.txt
# Optional: fastMRI's own package, the reference of the fastMRI-compatibility tests
# (they skip without it). --no-deps: its requirements would pull a CUDA torch and
# Lightning; the tests import only its models, transforms and mask functions.
# FASTFN_NO_FASTMRI=1 leaves it out.
if [ "${FASTFN_NO_FASTMRI:-0}" != "1" ]; then
  "$VENV/bin/pip" install -q --no-deps "fastmri==0.3.0" \
    || echo "== fastmri==0.3.0 not installed: the tests that compare with it will skip"
fi
echo "== building fastfn (pip install --no-build-isolation -e .)"
MAX_JOBS="${MAX_JOBS:-2}" "$VENV/bin/pip" install -q --no-build-isolation -e .
"$VENV/bin/python" -c "import fastfn, json; print(json.dumps(fastfn.build_info()))"
