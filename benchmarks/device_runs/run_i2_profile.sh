#!/usr/bin/env bash
# Run I, call 2 (one H100/H200, ≤ 6 min, alone on the GPU): where a training step's GPU time goes, and the 1024 px
# speed targets against the multi-scan baselines.
#   1. profile_step.py: LightNet-S vs ViT-S training steps, kernel time by category, eager and torch.compile
#      (default mode, fullgraph: every kernel visible to the profiler), at 224 px (batch 128) and 1024 px (batch 8);
#   2. profile_step.py --family dit: LightNet-DiT-S/2 vs diffusers DiT-S/2 at 32 px, batch 256, eager (the recipe of
#      `lightnet train-dit`, which trains 2.1-2.5x slower per step than DiT in run H3);
#   3. bench_scan_baselines.py at 1024 px, batch 8, eager: LightNet-S vs 2-scan / 4-scan on fla's chunk_gla.
#   bash benchmarks/device_runs/run_i2_profile.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/i2; mkdir -p "$W"
t0=$SECONDS
phase() { echo "$1: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"; }
timeout 90 python3 benchmarks/profile_step.py --sizes 224 1024 --batches 128 8 --compile-mode eager --out "$W" \
  > "$W/prof_eager.log" 2>&1; phase "profile eager"
timeout 60 python3 benchmarks/profile_step.py --family dit --sizes 32 --batches 256 --compile-mode eager --out "$W" \
  > "$W/prof_dit.log" 2>&1; phase "profile dit"
timeout 230 python3 benchmarks/profile_step.py --sizes 224 1024 --batches 128 8 --compile-mode default --fullgraph \
  --out "$W" > "$W/prof_compiled.log" 2>&1; phase "profile compiled"
timeout $((330 - SECONDS + t0)) python3 -m benchmarks.evidence.bench_scan_baselines --sizes 1024 --batches 8 \
  --out "$W/scan" > "$W/bench_scan.log" 2>&1; phase "scan baselines"
cp "$W"/profile_step_*.md "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp i2
for f in "$W"/*.log; do echo "== $f"; grep -v "^USDT\|^ERROR:.*DeviceProperties\|profiler_st" "$f" | tail -n 12; done
