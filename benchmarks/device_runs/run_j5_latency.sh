#!/usr/bin/env bash
# Run J, call 5 (one H100/H200, ≤ 8.5 min, alone on the GPU): issue 7's inference latencies —
# LightNet-DiT-B/2 vs diffusers' DiT-B/2 per denoising step at 256 / 512 px (batch 2 = one image with CFG, and 32),
# eager and compiled — the compiled whole-step profile of LightNet-S vs ViT-S at 224 px after the kernel fixes, and
# the GPU check of the non-causal cases added offline (shared-memory guards).
#   bash benchmarks/device_runs/run_j5_latency.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/j5; mkdir -p "$W"
t0=$SECONDS
# the GPU check of every non-causal case (the cos / sin table became the MD-LRPE default after run J3; cases 19-22:
# the shared-memory guards and the 4 / 16-warp launches; 23-24: the table in fp32 / fp16)
timeout 120 python3 benchmarks/check_kernels_gpu.py --cases 0,1,2,3,4,5,6,7,19,20,21,22,23,24 \
  > "$OUT/check_kernels_gpu.log" 2>&1; phase "GPU check non-causal"
timeout 90 python3 benchmarks/bench_dit_latency.py --compile-mode eager --out "$W/dit_eager" \
  > "$W/bench_dit_latency.log" 2>&1; phase "DiT-B/2 latency eager"
# compiled: one image with guidance (batch 2) only; every (model, size) is its own compile
timeout 200 python3 benchmarks/bench_dit_latency.py --compile-mode reduce-overhead --batches 2 --out "$W/dit_compiled" \
  >> "$W/bench_dit_latency.log" 2>&1; phase "DiT-B/2 latency compiled"
timeout $((500 - SECONDS + t0)) python3 benchmarks/profile_step.py --sizes 224 --batches 128 --compile-mode default \
  --fullgraph --out "$W/c224" > "$W/prof_c224.log" 2>&1; phase "profile compiled 224"
cp "$W/c224/profile_step_vision_default.md" "$OUT/profile_compiled_224.md" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp j5
tail -n 20 "$OUT/check_kernels_gpu.log"; grep "^|" "$W/bench_dit_latency.log"; grep "GPU busy" "$W/prof_c224.log"
