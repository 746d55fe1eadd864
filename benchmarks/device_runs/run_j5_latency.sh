#!/usr/bin/env bash
# Run J, call 5 (one H100/H200, ≤ 8 min, alone on the GPU; planned, not yet run): issue 7's inference latencies —
# LightNet-DiT-B/2 vs diffusers' DiT-B/2 per denoising step at 256 / 512 px (batch 2 = one image with CFG, and 32),
# eager and compiled — the compiled whole-step profile of LightNet-S vs ViT-S at 224 px after the kernel fixes, and
# the GPU check of the non-causal cases added offline (shared-memory guards).
#   bash benchmarks/device_runs/run_j5_latency.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/j5; mkdir -p "$W"
t0=$SECONDS
phase() { echo "$1: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"; }
# the GPU check of the new non-causal cases 19-22 (shared-memory guards, the 4 / 16-warp MD-LRPE launches)
timeout 100 python3 benchmarks/check_kernels_gpu.py --cases 19,20,21,22 > "$OUT/check_kernels_gpu.log" 2>&1
phase "GPU check 19-22"
timeout 270 python3 benchmarks/bench_dit_latency.py --compile-mode eager reduce-overhead --out "$W/dit" \
  > "$W/bench_dit_latency.log" 2>&1; phase "DiT-B/2 latency"
timeout $((400 - SECONDS + t0)) python3 benchmarks/profile_step.py --sizes 224 --batches 128 --compile-mode default \
  --fullgraph --out "$W/c224" > "$W/prof_c224.log" 2>&1; phase "profile compiled 224"
# eager op tables (shapes, source lines): what the 5 strided fp32 copies per block are (run I2/I3: 63 calls of
# direct_copy_kernel, 4.0 ms per step for LightNet-S at 224 px, 10.3 ms for LightNet-DiT-S/2; DiT-S/2 has 2)
timeout $((470 - SECONDS + t0)) python3 benchmarks/profile_step.py --family dit --sizes 32 --batches 256 \
  --models LightNet-DiT-S/2 --op-tables --steps 2 --out "$W/ops" > "$W/prof_ops.log" 2>&1; phase "op tables"
cp "$W/c224/profile_step_vision_default.md" "$OUT/profile_compiled_224.md" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp j5
grep -v "^{" "$W/bench_dit_latency.log" | tail -14; grep "GPU busy" "$W/prof_c224.log"
