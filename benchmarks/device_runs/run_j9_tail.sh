#!/usr/bin/env bash
# Run J, last call of the session (≤ 4 min): the GPU check case run J5 left out (24: the cos / sin table in fp16,
# D = 32, E = 128, initial state; J5's check hit its 120 s limit before it) and the compiled 224 px step's aten op
# tables (shapes, source lines), to find what the 26 "copies / layout" kernels per compiled LightNet-S step are
# (run J5: 2.32 ms of its 21.9 GPU ms; ViT-S 0.19 ms).
#   bash benchmarks/device_runs/run_j9_tail.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/j9; mkdir -p "$W"
t0=$SECONDS
timeout 60 python3 benchmarks/check_kernels_gpu.py --cases 24 > "$OUT/check_kernels_gpu_24.log" 2>&1; phase "check 24"
timeout $((200 - SECONDS + t0)) python3 benchmarks/profile_step.py --sizes 224 --batches 128 --compile-mode default \
  --fullgraph --models lightnet_small --op-tables --steps 2 --out "$W/ops" > "$W/prof_ops.log" 2>&1; phase "op tables"
tar czf "$OUT/logs.tgz" -C /tmp j9
cat "$OUT/check_kernels_gpu_24.log" | tail -3; head -c 6000 "$W"/ops/ops_*.txt 2>/dev/null
