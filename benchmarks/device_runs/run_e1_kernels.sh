#!/usr/bin/env bash
# Run E, call 1 (one H100/H200, ~8 min): the kernel check and the kernel timings of issue 4.
# Phase 1 (parallel, ≤ 3 min, numbers discarded): check_kernels_gpu.py split over 4 processes (run E2 repeats it
# without a time limit), and one warm-up process per
# benchmark shape, so that Triton's, fla's and inductor's compiled kernels are on disk before anything is timed.
# Phase 2 (alone on the GPU): bench_kernels.py over every N and head dim, all methods in one process.
#   bash benchmarks/device_runs/run_e1_kernels.sh      (carry .whl; writes to $OUT)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. TORCHINDUCTOR_COMPILE_THREADS=2
OUT=${OUT:-/tmp/out}; W=/tmp/warm; mkdir -p "$W" "$OUT"
{ nvidia-smi; python3 -c "import torch, triton, timm, fla; print(torch.__version__, triton.__version__, timm.__version__, fla.__version__)"; } > "$OUT/env.txt" 2>&1
t0=$SECONDS
for part in auto,0,1,2,3 4,5,6 7,8,9,10 11,12,13,14,15; do
  timeout 180 python3 benchmarks/check_kernels_gpu.py --seed 7 --cases "$part" > "$W/check_${part//,/_}.log" 2>&1 &
done
for N in 196 1024 16384 65536; do
  timeout 180 python3 benchmarks/bench_kernels.py --sizes $N --head-dims "" --no-graph --skip-slow-ref 0 --out "$W/k$N" > "$W/k$N.log" 2>&1 &
done
timeout 180 python3 benchmarks/bench_kernels.py --sizes 4096 --head-dims 32,128 --no-graph --skip-slow-ref 0 --out "$W/k4096" > "$W/k4096.log" 2>&1 &
wait
echo "phase 1: $((SECONDS - t0)) s" | tee "$OUT/phases.txt"
cat "$W"/check_*.log > "$OUT/check_kernels_gpu.log"
timeout 330 python3 benchmarks/bench_kernels.py --skip-slow-ref 1024 --budget-s 240 --out "$OUT/kernels" > "$OUT/bench_kernels.log" 2>&1
echo "phase 2: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
tail -c 3000 "$W"/k*.log > "$OUT/warmup_tail.txt" 2>&1
grep -h "ok  \|FAIL\|failing" "$OUT/check_kernels_gpu.log"; tail -40 "$OUT/bench_kernels.log"
