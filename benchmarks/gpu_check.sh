#!/usr/bin/env bash
# The prepared GPU check, in two stages that each fit one command of a borrowed machine
# (well under 5 minutes on an H200 with 16 cores). Logs, JSON and summary.txt go to $OUT
# (default ./gpu_check_out); the last line of each stage is its one-line summary.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh 1   # build for sm_90, CUDA tests, memcheck
#   OUT=/some/dir bash benchmarks/gpu_check.sh 2   # bench_ops --quick, bench_features, bench_attack
#
# Stage 2 reuses stage 1's build (the extension built in place); it builds only when no
# CUDA build is there (a fresh machine), so nothing compiles twice on one machine.
# Environment: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0, the H200),
# MAX_JOBS (default: every CPU). docs/GPU.md says what to run in which order.
set -uo pipefail
STAGE="${1:-}"
case "$STAGE" in 1|2) ;; *) echo "usage: $0 1|2" >&2; exit 2 ;; esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu_check_out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
T0=$(date +%s)
failed=()
step() { echo "== $(date -u +%H:%M:%S) stage $STAGE: $*" | tee -a "$OUT/summary.txt"; }
# name, time limit in seconds, command...: runs it with its log in $OUT/name.log
run() {
  local name=$1 limit=$2; shift 2
  step "$name (at most ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && { failed+=("$name:$rc"); echo "$name: exit $rc" | tee -a "$OUT/summary.txt"; }
  tail -6 "$OUT/$name.log"
  return 0
}
has_cuda_build() {
  "$PY" -c "import sys, fastfn; sys.exit(0 if fastfn.build_info()['with_cuda'] else 1)" > /dev/null 2>&1
}
finish() {
  local verdict="OK"
  [ ${#failed[@]} -gt 0 ] && verdict="FAILED ${failed[*]}"
  echo "stage $STAGE: $verdict in $(( $(date +%s) - T0 )) s; logs and JSON in $OUT" | tee -a "$OUT/summary.txt"
  [ ${#failed[@]} -eq 0 ]
  exit $?
}

if [ "$STAGE" = 1 ] || ! has_cuda_build; then
  step "environment"
  { nvidia-smi || true; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; } \
    > "$OUT/env.log" 2>&1
  cat "$OUT/env.log"
  # in place (no pip: no registry on the machine, no build isolation), all cores
  run build 420 "$PY" setup.py build_ext --inplace
  if ! "$PY" -c "import json, fastfn; print(json.dumps(fastfn.build_info(), indent=1))" > "$OUT/build_info.json" 2>&1; then
    failed+=("import"); cat "$OUT/build_info.json"; finish
  fi
fi

if [ "$STAGE" = 1 ]; then
  # the CUDA tests of the operators, the feature ops and the build (the emulated-schedule
  # variants ran on the CPU already; -m cuda selects the device ones)
  run tests_cuda 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_build.py \
    tests/test_ops_masked_fft.py tests/test_ops_features.py tests/test_ops_cuda_schedule.py \
    tests/test_ops_host_sync.py --junitxml="$OUT/tests_cuda.xml"
  if command -v compute-sanitizer > /dev/null 2>&1; then
    cat > "$OUT/memcheck_calls.py" <<'PY'
# one small call per op path: fft2c, undersample (column, 2D), DC forward and backward
# (single/multi-coil, column/2D, soft), insert_features, feature_step (sign, normalised)
import sys, torch
sys.path.insert(0, "tests")
from masked_fft_inputs import dc_inputs
from fastfn import ops
for coils in (None, 3):
    for mask_2d in (False, True):
        d = dc_inputs(2, 17, 12, coils=coils, device="cuda", mask_2d=mask_2d, per_batch_mask=True)
        leaves = [d[k].clone().requires_grad_() for k in ("x", "k0")]
        lam = torch.tensor(0.5, device="cuda", requires_grad=True)
        out = ops.data_consistency(leaves[0], leaves[1], d["mask"], lam=lam, sens=d.get("sens"))
        out.abs().sum().backward()
        m = d["mask"] if coils is None else d["mask"].squeeze(1)
        ops.undersample(d["x"], m)
ops.ifft2c(ops.fft2c(d["x"]))
idx = torch.tensor([[[0, 5, 5, -1], [7, 8, 9, 10]]], device="cuda")
vals = torch.rand(1, 2, 4, device="cuda")
pert, region = ops.insert_features(torch.rand(1, 6, 6, device="cuda"), idx, vals, 1)
for normalize in (False, True):
    ops.feature_step(pert, vals, idx, torch.randn_like(pert), 0.0, 1.0, 0.1, normalize)
torch.cuda.synchronize()
print("memcheck calls done")
PY
    run memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" "$OUT/memcheck_calls.py"
  else
    step "compute-sanitizer is not on PATH: memcheck skipped"
  fi
else
  run bench_ops_cuda 120 "$PY" benchmarks/bench_ops.py --device cuda --quick --json "$OUT/bench_ops_cuda.json"
  run bench_features_cuda 60 "$PY" benchmarks/bench_features.py --device cuda --json "$OUT/bench_features_cuda.json"
  # no training in it: the timing runs only (the strength check and the scale-out are
  # CPU-time measurements the lent minutes are too few for)
  run bench_attack_cuda 90 "$PY" benchmarks/bench_attack.py --device cuda --train-steps 0 --scaling-slices 0 \
    --repeats 2 --json "$OUT/bench_attack_cuda.json"
fi
finish
