#!/usr/bin/env bash
# Run J, call 2 (one H100/H200, ≤ 9.5 min, alone on the GPU; planned, not yet run): the generation FID proxy of
# issues 5 / 7 over seeds 0 1 2 — run H3's recipe (424 steps per model) with both models compiled (run.compile=true:
# run I2's profile put 62 of LightNet-DiT's 129 eager GPU ms per step in unfused elementwise / copy kernels) and the
# FID images sampled under bf16 autocast (run H3's fp32 sampling, ~60 s per 500 images, was cut by the limit).
#   bash benchmarks/device_runs/run_j2_dit.sh     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=2
L=/tmp/j2; mkdir -p "$L"
t0=$SECONDS
for S in 0 1 2; do
  timeout 545 python3 benchmarks/dit_fashion_mnist_compare.py --seed $S --steps 424 --workers 2 --backend auto \
    --compile --sample-autocast bf16 --data-root .data/fashion-mnist --work /tmp/dit_s$S --out "$L/dit/seed$S" \
    > "$L/dit_seed$S.log" 2>&1 &
done
wait
echo "all: $((SECONDS - t0)) s" > "$OUT/phases.txt"
python3 -m benchmarks.evidence.aggregate_seeds dit "$L"/dit/seed*/results.json > "$OUT/dit_seeds.md" 2>&1
tar czf "$OUT/logs.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude='*.bin' -C /tmp j2
cat "$OUT/phases.txt" "$OUT/dit_seeds.md"; for f in "$L"/*.log; do echo "$f"; tail -c 600 "$f" | tr '\r' '\n' | tail -n 4; done
