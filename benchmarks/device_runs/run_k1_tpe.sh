#!/usr/bin/env bash
# Run K, call 1 (one H100/H200, ≤ 9.5 min, alone on the GPU; planned, not yet run): MD-TPE's direct short-axis
# Toeplitz product vs its FFT (run J9: the FFT custom op's layout copies and FFTs cost 3.4 of the compiled 224 px
# LightNet-S step's 21.9 GPU ms, more than the recurrence), then end to end with the direct product switched on.
#   1. bench_tpe.py: compiled forward + backward of MD-TPE (C = 384) at 128×14², 32×32², 8×64², 2×128², both paths;
#   2. bench_models.py compiled (reduce-overhead, fullgraph) at all four sizes with LIGHTNET_TPE_DIRECT_MAX_LEN=128
#      (every grid side of the four sizes takes the direct product); run J7 is the FFT baseline. If the direct path
#      wins, make TPE_TUNING["direct_max_len"] default to the largest side where it wins.
#   bash benchmarks/device_runs/run_k1_tpe.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/k1; mkdir -p "$W"
t0=$SECONDS
timeout 150 python3 benchmarks/bench_tpe.py --out "$W/tpe" > "$W/tpe.log" 2>&1; phase "bench_tpe"
LIGHTNET_TPE_DIRECT_MAX_LEN=128 timeout $((540 - SECONDS + t0)) python3 benchmarks/bench_models.py \
  --compile-mode reduce-overhead --fullgraph --out "$W/models" > "$W/bench_models.log" 2>&1; phase "models (direct TPE)"
cp "$W/tpe/bench_tpe.md" "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp k1
cat "$W/tpe/bench_tpe.md"; grep -v "^{" "$W/bench_models.log" | tail -16
