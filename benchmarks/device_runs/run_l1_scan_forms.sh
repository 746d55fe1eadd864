#!/usr/bin/env bash
# Run L, call 1 (one H100/H200, ~5 min; planned): pick the scan baselines' training form before their 3-seed runs.
# Runs K4 / K5 timed the PyTorch recurrence (compiled pairwise, chunk 8: 3.9 ms per call; 2-scan step 120 ms alone)
# but not fla's chunk_gla at this shape. In turn, alone on the GPU:
#   1. bench_decay_recurrence.py --fla: every PyTorch form and fla's chunk_gla (its first call autotunes; Triton keeps
#      the tuning on disk, TRITON_CACHE_AUTOTUNING=1 from _setup.sh);
#   2. time_scan_step.py, PyTorch recurrence without recomputation, blocks compiled: the 2-scan model at chunk 8
#      (pairwise) and at chunk 64 in the sub-chunk form (exact, GEMMs between sub-chunks, no chunk-state loop at
#      64 tokens), the 4-scan model in the sub-chunk form;
#   3. time_scan_step.py with fla (eager scan models).
# Then, with the fastest form (e.g. EXTRA="--compile --scan-chunk 64 --scan-intra subchunk --scan-no-recompute"): if a
# 2-scan step is ≤ ~90 ms, run_j1_scans.sh scan2 fits three seeds in a call; else SEEDS="0 1" (docs/results.md §6).
#   bash benchmarks/device_runs/run_l1_scan_forms.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/l1; mkdir -p "$W"
t0=$SECONDS
timeout 240 python3 benchmarks/bench_decay_recurrence.py --fla --out "$W/recurrence" > "$W/recurrence.log" 2>&1
phase "recurrence forms + fla"
timeout 150 python3 -m benchmarks.evidence.time_scan_step --specs scan2:8 scan2:64:subchunk scan4:64:subchunk \
  --no-recompute --steps 10 \
  --warmup 2 --out "$W/torch" > "$W/step_torch.log" 2>&1
phase "steps, PyTorch chunk 8"
timeout $((540 - SECONDS + t0)) python3 -m benchmarks.evidence.time_scan_step --specs scan2 scan4 --scan-backend fla \
  --steps 10 --warmup 2 --no-profile --out "$W/fla" > "$W/step_fla.log" 2>&1
phase "steps, fla"
tar czf "$OUT/logs.tgz" -C /tmp l1
cat "$OUT/phases.txt" "$W"/recurrence/*.md "$W"/torch/*.md "$W"/fla/*.md 2>/dev/null; grep -A 20 "Top kernels" "$W/step_torch.log"
