#!/usr/bin/env bash
# Run F, call 1 (one H100/H200, ≤ 9.5 min): the GPU kernel check and the kernel timings of issue 4 at N ≥ 1K.
# Phase 1 (parallel, ≤ 210 s, numbers discarded except the check): check_kernels_gpu.py, every case, split over six
# processes (seed 7, plus the reverse-scan cases 10 and 15 on the memory-lean causal path), and one
# `bench_kernels.py --warmup-only` process per shape (compiles our kernels, inductor's reference and fla's autotuned
# kernels into the on-disk caches; prints the seconds each method's first call took).
# Phase 2 (alone on the GPU): bench_kernels.py at N = 4096, 65536, 16384, 1024 (head dim 64), all methods.
#   bash benchmarks/device_runs/run_f1_kernels.sh      (carry .whl; writes to $OUT)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. TORCHINDUCTOR_COMPILE_THREADS=2 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; W=/tmp/warm; mkdir -p "$W" "$OUT"
{ nvidia-smi; python3 -c "import torch, triton, timm, fla; print(torch.__version__, triton.__version__, timm.__version__, fla.__version__)"; } > "$OUT/env.txt" 2>&1
t0=$SECONDS
for part in auto,0,1,2,3 4,5,6,7 8,9,10 11,12,13 14,15; do
  timeout 210 python3 benchmarks/check_kernels_gpu.py --seed 7 --cases "$part" > "$W/check_${part//,/_}.log" 2>&1 &
done
timeout 210 python3 benchmarks/check_kernels_gpu.py --seed 8 --cases 10,15 --tuning c_zpass=0 > "$W/check_lean.log" 2>&1 &
for N in 4096 65536 16384 1024; do
  timeout 210 python3 benchmarks/bench_kernels.py --warmup-only --sizes $N --head-dims "" --skip-slow-ref 1024 \
    --out "$W/k$N" > "$W/warm$N.log" 2>&1 &
done
wait
echo "phase 1: $((SECONDS - t0)) s" | tee "$OUT/phases.txt"
for f in "$W"/check_*.log; do echo "== $f"; cat "$f"; done > "$OUT/check_kernels_gpu.log"
cat "$W"/warm*.log > "$OUT/warmup.log" 2>&1
grep -h "ok  \|FAIL\|failing\|raised" "$OUT/check_kernels_gpu.log"; grep -h "warm-up" "$OUT/warmup.log"
timeout 340 python3 benchmarks/bench_kernels.py --sizes 4096,65536,16384,1024 --head-dims "" --skip-slow-ref 1024 \
  --budget-s 280 --out "$OUT/kernels" > "$OUT/bench_kernels.log" 2>&1
echo "phase 2: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
grep -v "^{" "$OUT/bench_kernels.log" | tail -40
