#!/usr/bin/env bash
# One prepared GPU check for a machine with an NVIDIA GPU and no package registry
# (torch with CUDA, nvcc and ninja preinstalled): build the extension with CUDA,
# run every CUDA-marked test, run bench_ops.py --device cuda (then the feature, training
# and attack benchmarks, each under a time limit), and write logs and JSON to $OUT
# (default ./gpu_check_out). Meant to finish in well under ten minutes.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0, the H200),
# MAX_JOBS (default: number of CPUs), QUICK=1 for bench_ops.py --quick.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu_check_out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
cd "$ROOT"
status=0
step() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/summary.txt"; }

step "environment"
{ nvidia-smi || true; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; } \
  > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

step "build (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0})"
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
if ! "$PY" -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
  step "pip install -e failed (see build.log); falling back to setup.py build_ext --inplace"
  "$PY" setup.py build_ext --inplace >> "$OUT/build.log" 2>&1 || { step "BUILD FAILED"; tail -40 "$OUT/build.log"; exit 1; }
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import json, fastfn; print(json.dumps(fastfn.build_info(), indent=1))" > "$OUT/build_info.json" 2>&1 \
  || { step "IMPORT FAILED"; cat "$OUT/build_info.json"; exit 1; }
cat "$OUT/build_info.json"

step "GPU tests"
if "$PY" -c "import pytest" 2>/dev/null; then
  # every test marked cuda: the operators, the feature ops, models, metrics, losses, AMP training
  "$PY" -m pytest -q -p no:cacheprovider -m cuda tests \
    --junitxml="$OUT/tests_cuda.xml" > "$OUT/tests_cuda.log" 2>&1 || status=1
  "$PY" -m pytest -q -p no:cacheprovider tests/test_build.py >> "$OUT/tests_cuda.log" 2>&1 || status=1
  tail -5 "$OUT/tests_cuda.log"
else
  step "pytest is not installed here: running the CUDA-vs-reference self-check instead"
  "$PY" - > "$OUT/tests_cuda.log" 2>&1 <<'PY' || status=1
import sys, torch
sys.path.insert(0, "tests")
from masked_fft_inputs import dc_inputs
from fastfn import ops
from fastfn.reference import masked_fft as ref
bad = 0
for coils in (None, 4):
    for mask_2d in (False, True):
        for H, W in ((64, 48), (33, 27)):
            for lam in (None, 0.5):
                d = dc_inputs(2, H, W, coils=coils, dtype=torch.complex128, device="cuda", mask_2d=mask_2d,
                              per_batch_mask=True)
                x = d["x"].requires_grad_()
                out = ops.data_consistency(x, d["k0"], d["mask"], lam=lam, sens=d.get("sens"))
                want = ref.data_consistency(d["x"].detach(), d["k0"], d["mask"], lam=lam, sens=d.get("sens"))
                err = ((out - want).abs().max() / want.abs().max()).item()
                us = ops.undersample(d["x"].detach(), d["mask"] if coils is None else d["mask"].squeeze(1))
                err_us = (us - ref.undersample(d["x"].detach(), d["mask"] if coils is None else d["mask"].squeeze(1))).abs().max().item()
                ok = err < 1e-12 and err_us < 1e-12
                bad += not ok
                print(f"coils={coils} 2d={mask_2d} {H}x{W} lam={lam}: dc err {err:.2e} undersample err {err_us:.2e} {'OK' if ok else 'FAIL'}")
print("FAILED" if bad else "ALL OK")
sys.exit(1 if bad else 0)
PY
  tail -3 "$OUT/tests_cuda.log"
fi

step "bench_ops.py --device cuda"
"$PY" benchmarks/bench_ops.py --device cuda ${QUICK:+--quick} --json "$OUT/bench_ops_cuda.json" \
  > "$OUT/bench_ops_cuda.log" 2>&1 || status=1
tail -15 "$OUT/bench_ops_cuda.log"

# The other benchmarks on the GPU, each bounded so that the whole check stays within
# the few minutes a borrowed machine gives (a timeout marks the status, the rest runs).
bench() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  step "$name (at most ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || { echo "$name: exit $?" >> "$OUT/summary.txt"; status=1; }
  tail -8 "$OUT/$name.log"
}
bench bench_features_cuda 120 "$PY" benchmarks/bench_features.py --device cuda --json "$OUT/bench_features_cuda.json"
bench bench_train_cuda 150 "$PY" benchmarks/bench_train.py --device cuda --size 320 --batch 8 --steps 5 \
  --json "$OUT/bench_train_cuda.json"
bench bench_attack_cuda 240 "$PY" benchmarks/bench_attack.py --device cuda --train-steps 100 \
  --json "$OUT/bench_attack_cuda.json"

step "done (status $status); logs and JSON in $OUT"
exit $status
