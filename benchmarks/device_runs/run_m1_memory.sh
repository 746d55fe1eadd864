#!/usr/bin/env bash
# Run M, call 1 (one H100/H200, ~5 min, alone on the GPU; planned): issue 7's memory target on the GPU after the
# SiLU GLU's recomputing backward (2026-12-04 late night, CPU-measured: −2 KB per token and block kept, eager).
#   1. bench_glu.py: the GLU with / without recomputing silu(gate), eager and compiled, at LightNet-S's token counts
#      (224 px batch 128, 1024 px batch 8): the time the recomputation costs, side by side;
#   2. saved_activations.py eager and --compile at 224 / 1024 px: the per-part profile with CUDA's kernels (the CPU
#      run's norms differ: CUDA fuses RMSNorm);
#   3. bench_models.py eager and compiled (reduce-overhead, fullgraph) at 224 / 1024 px: end-to-end img/s and peak
#      memory against ViT-S with the new GLU (runs J7 / K1 are the before).
#   bash benchmarks/device_runs/run_m1_memory.sh     (writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/m1; mkdir -p "$W"
t0=$SECONDS
timeout 120 python3 benchmarks/bench_glu.py --out "$W/glu" > "$W/glu.log" 2>&1; phase "bench_glu"
timeout 120 python3 benchmarks/saved_activations.py --img-size 224 1024 --batch 8 --out "$W/saved_eager" \
  > "$W/saved_eager.log" 2>&1; phase "saved, eager"
timeout 150 python3 benchmarks/saved_activations.py --img-size 224 1024 --batch 8 --compile --out "$W/saved_compiled" \
  > "$W/saved_compiled.log" 2>&1; phase "saved, compiled"
timeout $((540 - SECONDS + t0)) python3 benchmarks/bench_models.py --sizes 224 1024 --batches 128 8 \
  --compile-mode eager reduce-overhead --fullgraph --latency-batches --out "$W/models" > "$W/models.log" 2>&1
phase "models"
tar czf "$OUT/logs.tgz" -C /tmp m1
cat "$W/glu/bench_glu.md" "$W"/saved_*/saved_activations.md 2>/dev/null; grep -v "^{" "$W/models.log" | tail -20
