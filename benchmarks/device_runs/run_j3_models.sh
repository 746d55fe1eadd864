#!/usr/bin/env bash
# Run J, call 3 (one H100/H200, ≤ 9.5 min, alone on the GPU; planned, not yet run): issue 7's end-to-end speed with
# the final MD-LRPE launches (4 warps forward, 16 backward; run I3 timed the intermediate 8-warp step), the
# LightNet-DiT-B/2 vs DiT-B/2 denoising-step latency at 256 / 512 px (bench_dit_latency.py), and the next
# kernel sweep: more ranges per sequence at long sequences, and the precomputed cos / sin table (nc_trig_table: offline
# its sm_90 build drops the spills — 4-warp forward stack 208 -> 8 B, 8-warp launches none).
#   bash benchmarks/device_runs/run_j3_models.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/j3; mkdir -p "$W"
t0=$SECONDS
phase() { echo "$1: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"; }
timeout 110 python3 benchmarks/sweep_lrpe.py --out "$W/sweep" --shapes 128x196,32x1024,8x4096,2x16384 \
  --configs "nc_warps=4;-;nc_min_blocks=4;nc_trig_table=1;nc_trig_table=1,nc_warps=8;nc_trig_table=1,nc_bwd_warps=8" \
  > "$W/sweep.log" 2>&1; phase "sweep"
timeout 360 python3 benchmarks/bench_models.py --compile-mode reduce-overhead --fullgraph --out "$W/models" \
  > "$W/bench_models.log" 2>&1; phase "models compiled"
timeout $((545 - SECONDS + t0)) python3 benchmarks/bench_dit_latency.py --compile-mode eager reduce-overhead \
  --out "$W/dit" > "$W/bench_dit_latency.log" 2>&1; phase "DiT-B/2 latency"
cp "$W/sweep/sweep_lrpe.md" "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp j3
cat "$W/sweep/sweep_lrpe.md"; grep -v "^{" "$W/bench_models.log" | tail -16; grep -v "^{" "$W/bench_dit_latency.log" | tail -12
