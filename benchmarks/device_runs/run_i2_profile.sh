#!/usr/bin/env bash
# Run I, call 2 (one H100/H200, ≤ 9.3 min, alone on the GPU): where a training step's GPU time goes, and the 1024 px
# speed targets against the multi-scan baselines.
#   1. profile_step.py: LightNet-S vs ViT-S training steps, kernel time by category, eager, at 224 px (batch 128)
#      and 1024 px (batch 8);
#   2. profile_step.py --family dit: LightNet-DiT-S/2 vs diffusers DiT-S/2 at 32 px, batch 256, eager (the recipe of
#      `lightnet train-dit`, which trained 2.1-2.5x slower per step than DiT in run H3);
#   3. bench_scan_baselines.py at 1024 px, batch 8, eager: LightNet-S vs 2-scan / 4-scan on fla's chunk_gla (the
#      first step holds fla's autotuning: run I1 showed it takes minutes per process);
#   4. profile_step.py as 1. under torch.compile (default mode, fullgraph: every kernel visible to the profiler),
#      one process per size so that a time-out keeps the first.
#   bash benchmarks/device_runs/run_i2_profile.sh     (carry .whl; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
W=/tmp/i2; mkdir -p "$W"
t0=$SECONDS
timeout 80 python3 benchmarks/profile_step.py --sizes 224 1024 --batches 128 8 --compile-mode eager --out "$W/eager" \
  > "$W/prof_eager.log" 2>&1; phase "profile eager"
timeout 50 python3 benchmarks/profile_step.py --family dit --sizes 32 --batches 256 --compile-mode eager \
  --out "$W/dit" > "$W/prof_dit.log" 2>&1; phase "profile dit"
timeout 230 python3 -m benchmarks.evidence.bench_scan_baselines --sizes 1024 --batches 8 \
  --out "$W/scan" > "$W/bench_scan.log" 2>&1; phase "scan baselines"
for i in 0 1; do
  sizes=(224 1024); batches=(128 8)
  timeout $((550 - SECONDS + t0)) python3 benchmarks/profile_step.py --sizes ${sizes[$i]} --batches ${batches[$i]} \
    --compile-mode default --fullgraph --out "$W/c${sizes[$i]}" > "$W/prof_compiled_${sizes[$i]}.log" 2>&1
  phase "profile compiled ${sizes[$i]}"
done
cp "$W/eager/profile_step_vision_eager.md" "$OUT/profile_eager.md"
cp "$W/dit/profile_step_dit_eager.md" "$OUT/profile_dit_eager.md"
for s in 224 1024; do cp "$W/c$s/profile_step_vision_default.md" "$OUT/profile_compiled_$s.md"; done
tar czf "$OUT/logs.tgz" -C /tmp i2
for f in "$W"/*.log; do echo "== $f"; grep -v "^USDT\|DeviceProperties\|profiler_st" "$f" | grep -v "^|" | tail -n 8; done
grep -A6 "^| size" "$W/bench_scan.log"
