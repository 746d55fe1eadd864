#!/usr/bin/env bash
# Run J, call 6 (one H100/H200, ≤ 9.5 min, alone on the GPU; planned, not yet run): issue 7's 1024 px targets against
# the multi-scan baselines (LightNet-S ≥ 2x the 2-scan and ≥ 4x the 4-scan model), eager, the baselines' recurrence
# on fla's chunk_gla. Runs D, G2 and I2 were each cut inside fla's first-call autotuning (> 230 s for one shape), so
# this call does nothing else; the first step's time (autotuning included) is in the JSON as first_step_s.
#   bash benchmarks/device_runs/run_j6_scan_speed.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
t0=$SECONDS
timeout 560 python3 -m benchmarks.evidence.bench_scan_baselines --sizes 1024 --batches 8 --warmup 3 --iters 10 \
  --out "$OUT" 2>&1 | tee "$OUT/bench_scan.log"
echo "all: $((SECONDS - t0)) s" > "$OUT/phases.txt"
