#!/usr/bin/env bash
# One GPU-machine call of benchmarks: the torch.compile benchmark while mamba-ssm builds there for the
# baselines, then decode (2.8b and 130m), prefill, the kernel table and decode at 1.4b against mamba-ssm
# fp16. Each benchmark checks
# correctness before it times; run the tests in a call of their own (scripts/gpu_tests.sh), since beside
# them the build takes twice as long.
#
#   bash scripts/gpu_benchmarks.sh [SECONDS]     # SECONDS: the call's time limit (default 560)
#
# Needs the mamba-ssm / causal-conv1d sources staged in .gpu-sdists/ (see .gpu-sdists/build-mamba-ssm-sm90.sh,
# copied from ../shared/tools). Everything is written under $OUT (or ./gpu-results): gpu_benchmarks.log,
# each benchmark's JSON. The build takes about 4 minutes (about 8 beside the tests), so the baselines cannot
# start before then; each step gets what is left of SECONDS, in this order of priority, and one that would
# get less than a minute is skipped with a line saying so: run it in a call right after this one, while
# the machine (and its build) is still warm.
set -uo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-560}
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG=$OUT/gpu_benchmarks.log
START=$(date +%s)
RESERVE=15  # seconds kept for the last lines of the log

elapsed() { echo $(( $(date +%s) - START )); }
step() { echo "=== $* (t=$(elapsed)s)" >> "$LOG"; }
# seconds a step may take: at most $1, and no more than is left before the limit
allowed() { local left=$(( LIMIT - RESERVE - $(elapsed) )); echo $(( left < $1 ? left : $1 )); }
# run "$@" for at most $1 seconds, or skip it when less than a minute is left
bounded() {
  local seconds; seconds=$(allowed "$1"); shift
  if (( seconds < 60 )); then echo "skipped (${seconds}s left): $*" >> "$LOG"; return 0; fi
  timeout "$seconds" "$@" 2>&1 | grep -v -E "Warning|warn\(|_warn_once" >> "$LOG"
  local rc=${PIPESTATUS[0]}
  (( rc == 124 )) && echo "stopped after ${seconds}s: $*" >> "$LOG"
  return 0
}

step device
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> "$LOG"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$LOG"
bash .gpu-sdists/build-mamba-ssm-sm90.sh start >> "$LOG" 2>&1

step "torch.compile backend (130m)"
bounded 120 python3 benchmarks/bench_compile.py --configs 130m --json "$OUT/compile.json"
step "mamba-ssm build"
bash .gpu-sdists/build-mamba-ssm-sm90.sh wait >> "$LOG" 2>&1 || echo "the baselines did not build" >> "$LOG"
step "decode (2.8b, 130m)"
bounded 300 python3 benchmarks/bench_decode.py --configs 2.8b,130m --batches 1,16,64 --profile --rewrites --float16-states --json "$OUT/decode.json"
step "prefill (2.8b, B=1 L=2048)"
bounded 150 python3 benchmarks/bench_prefill.py --configs 2.8b --shapes 1x2048 --profile --json "$OUT/prefill.json"
step kernels
bounded 150 python3 benchmarks/bench_kernels.py --json "$OUT/kernels.json"
step "decode (1.4b)"
bounded 150 python3 benchmarks/bench_decode.py --configs 1.4b --batches 1,16,64 --json "$OUT/decode_1.4b.json"
step done
