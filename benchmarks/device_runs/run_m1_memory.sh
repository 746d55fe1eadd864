#!/usr/bin/env bash
# Run M, call 1 (one H100/H200, ≤ 9.5 min, alone on the GPU; planned): issue 7's memory target after the memory
# switches of 2026-12-04 (night; CPU-counted with benchmarks/saved_activations.py --compile: LightNet-S keeps 14 176 vs
# ViT-S's 14 192 B per token and block at 224 px, 13 100 vs 14 124 at 1024 px; 16 504 / 16 337 before).
#   1. bench_memory_switches.py, compiled as runs J7 / K1 (reduce-overhead, fullgraph), at $SIZES px, batch $BATCHES
#      (default 224 / 128; five compiled trainings of ~50-60 s each fill most of a call, so 1024 px / 8 is a second
#      call: SIZES=1024 BATCHES=8): ViT-S, then LightNet-S before / +q_silu / +out_recompute (today's defaults) /
#      +state_recompute, img/s and peak memory side by side: what each switch costs or saves; decides
#      TUNING["nc_recompute_state"]'s default;
#   2. saved_activations.py --compile at 224 / 1024 px with CUDA's kernels (the CPU count's norms differ);
#   3. bench_glu.py: the GLU's recomputing backward timed against keeping silu(gate).
#   bash benchmarks/device_runs/run_m1_memory.sh; SIZES=1024 BATCHES=8 bash ...     (writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/m1; mkdir -p "$W"
SIZES=${SIZES:-224}; BATCHES=${BATCHES:-128}
t0=$SECONDS
timeout 390 python3 benchmarks/bench_memory_switches.py --sizes $SIZES --batches $BATCHES \
  --compile-mode reduce-overhead --fullgraph --out "$W/switches" > "$W/switches.log" 2>&1; phase "switches"
timeout 100 python3 benchmarks/saved_activations.py --img-size $SIZES --batch 8 --compile --out "$W/saved_compiled" \
  > "$W/saved_compiled.log" 2>&1; phase "saved, compiled"
timeout $((540 - SECONDS + t0)) python3 benchmarks/bench_glu.py --out "$W/glu" > "$W/glu.log" 2>&1; phase "bench_glu"
cp "$W/switches/bench_memory_switches.md" "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp m1
cat "$W/switches/bench_memory_switches.md" "$W/saved_compiled/saved_activations.md" "$W/glu/bench_glu.md" 2>/dev/null
tail -5 "$W/switches.log"
