#!/usr/bin/env bash
# Run E, call 3 (one H100/H200, ≤ 8 min): end-to-end speed of issue 7.
# Phase 1 (parallel, numbers discarded): torch.compile warm-up of both models at each size (inductor's caches), and
# one step of every scan baseline at each size (fla's autotuned chunk_gla kernels compiled).
# Phase 2 (alone on the GPU): bench_models.py eager vs torch.compile(mode="reduce-overhead", fullgraph), then
# bench_scan_baselines.py.
#   bash benchmarks/device_runs/run_e3_models.sh     (carry .whl; writes to $OUT)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. TORCHINDUCTOR_COMPILE_THREADS=2
OUT=${OUT:-/tmp/out}; W=/tmp/warm3; mkdir -p "$W" "$OUT"
t0=$SECONDS
sizes=(224 512 1024 2048); batches=(128 32 8 2)
for i in 0 1 2 3; do
  lat=""; [ $i = 0 ] && lat="1 64"
  timeout 200 python3 benchmarks/bench_models.py --compile-mode reduce-overhead --fullgraph --sizes ${sizes[$i]} \
    --batches ${batches[$i]} --warmup 1 --iters 1 --latency-batches $lat > "$W/m$i.log" 2>&1 &
done
for i in 0 1 2; do
  timeout 200 python3 -m benchmarks.evidence.bench_scan_baselines --sizes ${sizes[$i]} --batches ${batches[$i]} \
    --warmup 1 --iters 1 > "$W/s$i.log" 2>&1 &
done
wait
echo "phase 1: $((SECONDS - t0)) s" | tee "$OUT/phases.txt"
timeout 240 python3 benchmarks/bench_models.py --compile-mode eager reduce-overhead --fullgraph --out "$OUT/models" \
  > "$OUT/bench_models.log" 2>&1
echo "models: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
timeout 100 python3 -m benchmarks.evidence.bench_scan_baselines --out "$OUT/scan" > "$OUT/bench_scan.log" 2>&1
echo "scan: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
tail -c 2000 "$W"/*.log > "$OUT/warmup_tail.txt" 2>&1
grep -v "^{" "$OUT/bench_models.log" | tail -45; tail -20 "$OUT/bench_scan.log"
