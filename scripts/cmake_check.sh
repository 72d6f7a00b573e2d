#!/usr/bin/env bash
# Build the extension with CMake (CPU kernels) and run the operator tests against
# that binary, to keep CMakeLists.txt and setup.py building the same thing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BUILD="${FASTFN_CMAKE_BUILD:-$ROOT/build/cmake}"
mkdir -p "$(dirname "$BUILD")"
cmake -S "$ROOT" -B "$BUILD" -DPython3_EXECUTABLE="$VENV/bin/python" -DFASTFN_CUDA=OFF -DCMAKE_BUILD_TYPE=Release > "$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j "${MAX_JOBS:-2}"
LIB="$(ls "$BUILD"/_C*.so | head -1)"
cd "$ROOT"
export FASTFN_LIBRARY="$LIB"
"$VENV/bin/python" -c "import fastfn, json; i = fastfn.build_info(); print(json.dumps(i)); missing = set(i['ops']) - set(i['cpu_ops']); assert not missing, f'ops without CPU kernels in the CMake build: {sorted(missing)}'"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_build.py $(ls tests/test_ops_*.py 2>/dev/null)
