#!/usr/bin/env bash
# Run J, call 3 (one H100/H200, ≤ 9.5 min, alone on the GPU; planned, not yet run): the next MD-LRPE launch sweep and
# issue 7's end-to-end speed with the final launches.
#   1. sweep_lrpe.py at 196 / 1024 / 4096 / 16384 tokens: the old default (nc_warps=4), the current one (4 warps
#      forward, 16 backward), more ranges per sequence (nc_min_blocks=4), the precomputed cos / sin table
#      (nc_trig_table: offline its sm_90 build drops the spills) and the split second pass of one-range problems
#      (nc_split_out: output and dk / dv per token block), alone and combined;
#   2. bench_models.py: LightNet-S vs ViT-S, torch.compile reduce-overhead fullgraph, 224 / 512 / 1024 / 2048 px with
#      the current default (run I3 timed the intermediate 8-warp step). If the sweep finds a faster configuration,
#      set it as the default and re-time in the next call.
#   bash benchmarks/device_runs/run_j3_models.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/j3; mkdir -p "$W"
t0=$SECONDS
CONFIGS="nc_warps=4;-;nc_min_blocks=4;nc_trig_table=1;nc_trig_table=1,nc_warps=8;nc_split_out=1"
CONFIGS="$CONFIGS;nc_split_out=1,nc_trig_table=1;nc_split_out=1,nc_trig_table=1,nc_warps=8"
timeout 180 python3 benchmarks/sweep_lrpe.py --out "$W/sweep" --shapes 128x196,32x1024,8x4096,2x16384 \
  --configs "$CONFIGS" > "$W/sweep.log" 2>&1; phase "sweep"
timeout $((550 - SECONDS + t0)) python3 benchmarks/bench_models.py --compile-mode reduce-overhead --fullgraph \
  --out "$W/models" > "$W/bench_models.log" 2>&1; phase "models compiled"
cp "$W/sweep/sweep_lrpe.md" "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp j3
cat "$W/sweep/sweep_lrpe.md"; grep -v "^{" "$W/bench_models.log" | tail -16
