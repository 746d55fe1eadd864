#!/usr/bin/env bash
# Run H, call 3 (one H100/H200, ≤ 9.5 min): the generation FID proxy of issue 5 / 7, seeds 0 1 2, alone on the GPU
# (three earlier attempts shared the GPU with 6-19 other processes and were cut by the time limit).
# 424 optimizer steps per model as the single-seed H100 run; each seed trains its own FID classifier.
#   bash benchmarks/device_runs/run_h3_dit.sh     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=2
L=/tmp/h3; mkdir -p "$L"
t0=$SECONDS
for S in 0 1 2; do
  timeout 545 python3 benchmarks/dit_fashion_mnist_compare.py --seed $S --steps 424 --workers 2 --backend auto \
    --data-root .data/fashion-mnist --work /tmp/dit_s$S --out "$L/dit/seed$S" > "$L/dit_seed$S.log" 2>&1 &
done
wait
echo "all: $((SECONDS - t0)) s" > "$OUT/phases.txt"
python3 -m benchmarks.evidence.aggregate_seeds dit "$L"/dit/seed*/results.json > "$OUT/dit_seeds.md" 2>&1
tar czf "$OUT/logs.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude='*.bin' -C /tmp h3
cat "$OUT/phases.txt" "$OUT/dit_seeds.md"; for f in "$L"/*.log; do echo "$f"; tail -c 600 "$f" | tr '\r' '\n' | tail -n 4; done
