#!/usr/bin/env bash
# Run I, call 3 (one H100/H200, ≤ 8 min, alone on the GPU): the non-causal kernels with MD-LRPE after run I2's
# profile (the fused backward took 12 of LightNet-S's 35 GPU ms per compiled step at 224 px; offline, its 4-warp
# sm_90 build spills: 255 registers + 952 B stack), and what the new 8-warp default gives end to end.
#   1. sweep_lrpe.py: old default (nc_warps=4) vs the new default and neighbours at the models' shapes
#      (224 px: 128 x 196 tokens; 1024 px: 8 x 4096; DiT-S/2 at 32 px: 256 x 256), checked against fp32, GPU time;
#   2. bench_models.py: LightNet-S vs ViT-S, torch.compile reduce-overhead fullgraph, 224 (batch 128) and 1024 (8);
#   3. profile_step.py eager (vision 224 / 1024 and DiT 32): the kernel-time split with the new default.
#   bash benchmarks/device_runs/run_i3_lrpe.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/i3; mkdir -p "$W"
t0=$SECONDS
timeout 130 python3 benchmarks/sweep_lrpe.py --out "$W/sweep" --shapes 128x196,8x4096,256x256 \
  --configs "nc_warps=4;-;nc_warps=8,nc_block_n=32;nc_warps=16;nc_warps=8,nc_min_blocks=4" > "$W/sweep.log" 2>&1
phase "sweep"
timeout 210 python3 benchmarks/bench_models.py --compile-mode reduce-overhead --fullgraph --sizes 224 1024 \
  --batches 128 8 --latency-batches --out "$W/models" > "$W/bench_models.log" 2>&1; phase "models compiled"
timeout $((420 - SECONDS + t0)) python3 benchmarks/profile_step.py --sizes 224 1024 --batches 128 8 \
  --compile-mode eager --out "$W/eager" > "$W/prof_eager.log" 2>&1; phase "profile eager"
timeout $((470 - SECONDS + t0)) python3 benchmarks/profile_step.py --family dit --sizes 32 --batches 256 \
  --compile-mode eager --out "$W/dit" > "$W/prof_dit.log" 2>&1; phase "profile dit"
cp "$W/sweep/sweep_lrpe.md" "$OUT/" 2>/dev/null
cp "$W/eager/profile_step_vision_eager.md" "$OUT/profile_eager.md" 2>/dev/null
cp "$W/dit/profile_step_dit_eager.md" "$OUT/profile_dit_eager.md" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp i3
cat "$W/sweep/sweep_lrpe.md"; grep -v "^{" "$W/bench_models.log" | tail -14
for f in "$W"/prof_*.log; do grep "GPU busy" "$f"; done
