#!/usr/bin/env bash
# Run J, call 2 (one H100/H200, ≤ 9.5 min, alone on the GPU): after run J3 made the precomputed cos / sin table the
# MD-LRPE default (nc_trig_table: 1.8-2.3× faster kernels at 196-16,384 tokens),
#   1. bench_short_noncausal.py: the Triton kernels vs the two-GEMM form under torch.compile at the models' shapes
#      (whether TUNING["nc_gemm_max_tokens"] should be on);
#   2. bench_models.py compiled (reduce-overhead, fullgraph) at 224 / 512 / 1024 / 2048 px with the new default;
#   3. a probe for the next call: the 4-scan Fashion-MNIST baseline, seed 0, compiled PyTorch recurrence (the exact
#      pairwise form, no host sync), one epoch of the run H1 recipe: compile time and epoch time.
#   bash benchmarks/device_runs/run_j7_speed.sh     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/j7; mkdir -p "$W"
t0=$SECONDS
timeout 120 python3 benchmarks/bench_short_noncausal.py --out "$W/short" > "$W/short.log" 2>&1; phase "short"
timeout 360 python3 benchmarks/bench_models.py --compile-mode reduce-overhead --fullgraph \
  --out "$W/models" > "$W/bench_models.log" 2>&1; phase "models compiled"
export OMP_NUM_THREADS=4
timeout $((545 - SECONDS + t0)) python3 -m benchmarks.evidence.run_classification "${FMNIST_RECIPE[@]}" \
  --models scan4 --scan-backend torch --compile --threads 4 --seeds 0 --stop-after-epochs 1 --out "$W/probe" \
  > "$W/probe.log" 2>&1; phase "scan4 probe"
cp "$W/short/bench_short_noncausal.md" "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" --exclude='checkpoint.pt' --exclude='*.safetensors' -C /tmp j7
cat "$W/short/bench_short_noncausal.md"; grep -v "^{" "$W/bench_models.log" | tail -16
cat "$W"/probe/*/seed*/epochs.csv 2>/dev/null; tail -c 1500 "$W/probe.log"
