#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the main job: `fastfn demo` on the
# embedded synthetic knee data. Extra arguments go to `fastfn demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$VENV/bin/fastfn" demo "$@"
