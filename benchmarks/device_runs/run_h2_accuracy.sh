#!/usr/bin/env bash
# Run H, call 2 (one H100/H200, ≤ 9.5 min): the rest of issue 7's accuracy runs, no timings taken:
#   * Fashion-MNIST scan2 / scan4 × seeds 0 1 2, the recipe of run H1 (their PyTorch chunked recurrence is now
#     checkpointed: run H1's copies held 17-31 GB each and ran the GPU out of memory);
#   * the generation FID proxy, seeds 0 1 2 (one process each, 424 steps per model as the single-seed H100 run).
#   bash benchmarks/device_runs/run_h2_accuracy.sh     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
L=/tmp/h2; mkdir -p "$L"
t0=$SECONDS
for S in 0 1 2; do
  timeout 555 python3 benchmarks/dit_fashion_mnist_compare.py --seed $S --steps 424 --workers 1 --backend auto \
    --data-root .data/fashion-mnist --work /tmp/dit_s$S --out "$L/dit/seed$S" > "$L/dit_seed$S.log" 2>&1 &
done
for M in scan2 scan4; do for S in 0 1 2; do
  timeout 555 python3 -m benchmarks.evidence.run_classification --dataset fashion_mnist --models $M --seeds $S \
    --epochs 15 --batch-size 512 --lr 1e-3 --embed-dim 192 --depth 12 --heads 3 --patch 4 --flip \
    --train-size 32 --eval-sizes 40 48 --scan-backend torch --threads 1 --data-root .data/fashion-mnist \
    --out "$L/fmnist" > "$L/fmnist_${M}_$S.log" 2>&1 &
done; done
( sleep 90; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv; \
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv; ps -eo pid,etimes,args | grep -c python3 ) > "$OUT/nvidia_smi_90s.txt" 2>&1 &
wait
echo "all: $((SECONDS - t0)) s" > "$OUT/phases.txt"
python3 -m benchmarks.evidence.make_tables "$L/fmnist" --out "$L/tables" > "$OUT/make_tables.log" 2>&1
cp "$L/tables/tables.md" "$OUT/fmnist_tables.md"
python3 -m benchmarks.evidence.aggregate_seeds dit "$L"/dit/seed*/results.json > "$OUT/dit_seeds.md" 2>&1
tar czf "$OUT/logs.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude='*.bin' -C /tmp h2
cat "$OUT/phases.txt" "$OUT/dit_seeds.md"; for f in "$L"/*.log; do echo "$f"; tail -c 400 "$f" | tr '\r' '\n' | tail -n 2; done
