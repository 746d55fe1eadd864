#!/usr/bin/env bash
# Run J, call 6 (one H100/H200, ≤ 9.5 min, alone on the GPU): issue 7's 1024 px targets against the multi-scan
# baselines (LightNet-S ≥ 2x the 2-scan and ≥ 4x the 4-scan model), the baselines' recurrence on fla's chunk_gla.
# Runs D, G2 and I2 were each cut inside fla's first-call autotuning (> 230 s for one shape), so this call does
# nothing else: first eager (the first step's time, autotuning included, is in the JSON as first_step_s; Triton keeps
# the tuning on disk, TRITON_CACHE_AUTOTUNING=1 from _setup.sh), then every model under torch.compile (fla's kernels
# stay opaque Triton launches inside the compiled graph) in a second process that reads the tuning from disk.
# The tuning comes back as $OUT/triton_autotune.tgz: unpacked into .triton_autotune/ and carried, later calls skip it.
#   bash benchmarks/device_runs/run_j6_scan_speed.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
t0=$SECONDS
timeout 330 python3 -m benchmarks.evidence.bench_scan_baselines --sizes 1024 --batches 8 --warmup 3 --iters 10 \
  --out "$OUT/eager" > "$OUT/bench_scan_eager.log" 2>&1
phase "eager"
timeout $((540 - SECONDS + t0)) python3 -m benchmarks.evidence.bench_scan_baselines --sizes 1024 --batches 8 \
  --warmup 3 --iters 10 --compile-mode default --out "$OUT/compiled" > "$OUT/bench_scan_compiled.log" 2>&1
phase "compiled"
save_autotune
cat "$OUT/phases.txt"; tail -n 6 "$OUT/bench_scan_eager.log" "$OUT/bench_scan_compiled.log"
