#!/usr/bin/env bash
# Run G, call 1 (one H100/H200, ≤ 9.7 min): the GPU kernel check (fp32 head-dim limit, adaptive segment-scan tiles)
# and the causal scan / segment sweep with per-launch profiles at N = 1K and 4K, then bench_kernels at N = 1K, 4K and
# head dims 32 / 128 with the new defaults.
# Phase 1 (parallel, ≤ 200 s; timings discarded): check_kernels_gpu.py, every case, over six processes (seed 9, plus
#   the reverse-scan cases 10 and 15 on the memory-lean path); the sweep and bench_kernels --warmup-only fill the
#   on-disk compile caches.
# Phase 2 (alone on the GPU): sweep_kernels.py --causal-only, then bench_kernels.py.
#   bash benchmarks/device_runs/run_g1_kernels.sh      (carry .whl; writes to $OUT)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. TORCHINDUCTOR_COMPILE_THREADS=2 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; W=/tmp/warm; mkdir -p "$W" "$OUT"
{ nvidia-smi; python3 -c "import torch, triton, timm, fla; print(torch.__version__, triton.__version__, timm.__version__, fla.__version__)"; } > "$OUT/env.txt" 2>&1
SPECS=0:0:0:0:0,0:0:0:32:32,0:0:32:0:0,0:0:8:0:0,0:0:64:0:0
SWEEP=(benchmarks/sweep_kernels.py --causal-only --causal "$SPECS" --causal-sizes 1024,4096,65536 --profile-sizes 1024,4096)
BENCH=(benchmarks/bench_kernels.py --sizes 1024,4096 --head-dims 32,128 --skip-slow-ref 1024)
t0=$SECONDS
for part in auto,0,1,2,3 4,5,6,7 8,9,10 11,12,13 14,15,16,17; do
  timeout 200 python3 benchmarks/check_kernels_gpu.py --seed 9 --cases "$part" > "$W/check_${part//,/_}.log" 2>&1 &
done
timeout 200 python3 benchmarks/check_kernels_gpu.py --seed 10 --cases 10,15 --tuning c_zpass=0 > "$W/check_lean.log" 2>&1 &
timeout 200 python3 "${SWEEP[@]}" --out "$W/sweep" > "$W/sweep_warm.log" 2>&1 &
timeout 200 python3 "${BENCH[@]}" --warmup-only --out "$W/bench" > "$W/bench_warm.log" 2>&1 &
wait
echo "phase 1: $((SECONDS - t0)) s" | tee "$OUT/phases.txt"
for f in "$W"/check_*.log; do echo "== $f"; cat "$f"; done > "$OUT/check_kernels_gpu.log"
cat "$W"/sweep_warm.log "$W"/bench_warm.log > "$OUT/warmup.log" 2>&1
grep -h "ok  \|FAIL\|failing\|raised\|Error" "$OUT/check_kernels_gpu.log" | head -40; grep -h "warm-up" "$OUT/warmup.log"
timeout 190 python3 "${SWEEP[@]}" --out "$OUT/sweep" > "$OUT/sweep_causal.log" 2>&1
echo "phase 2a: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
grep -v "^causal {" "$OUT/sweep_causal.log" | head -80
python3 - "$OUT/sweep/sweep_causal.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    print(f"{r['spec']:>14} N={r['N']:>6}  plain {r.get('plain_autograd_ms', float('nan')):.3f}  graph {r.get('graph_kernels_ms', float('nan')):.3f}  dk {r.get('err_dk', float('nan')):.1e}")
PY
timeout $((575 - SECONDS + t0)) python3 "${BENCH[@]}" --budget-s 120 --out "$OUT/kernels" > "$OUT/bench_kernels.log" 2>&1
echo "phase 2b: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
grep -v "^{" "$OUT/bench_kernels.log" | tail -45
