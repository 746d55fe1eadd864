#!/usr/bin/env bash
# Run H, call 1 (one H100/H200, ≤ 9.5 min): the Fashion-MNIST comparison of issue 7 at the model size,
# lightnet / vit / scan2 / scan4 × seeds 0 1 2, one process per run, nothing else on the GPU (run E's 22 processes
# ran the GPU out of memory). Recipe as run E: `lightnet_tiny` size (width 192, depth 12, 3 heads, patch 4 on 32²),
# full 60k / 10k, 15 epochs, batch 512, lr 1e-3, flips; scan baselines on the PyTorch chunked recurrence (fla's
# chunk_gla autotuning would take minutes per process); transfer evaluation at 40² / 48². No timings are taken.
#   bash benchmarks/device_runs/run_h1_accuracy.sh     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
L=/tmp/h1; mkdir -p "$L"
t0=$SECONDS
for M in lightnet vit scan2 scan4; do for S in 0 1 2; do
  timeout 545 python3 -m benchmarks.evidence.run_classification --dataset fashion_mnist --models $M --seeds $S \
    --epochs 15 --batch-size 512 --lr 1e-3 --embed-dim 192 --depth 12 --heads 3 --patch 4 --flip \
    --train-size 32 --eval-sizes 40 48 --scan-backend torch --threads 1 --data-root .data/fashion-mnist \
    --out "$L/fmnist" > "$L/fmnist_${M}_$S.log" 2>&1 &
done; done
( sleep 60; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv; \
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv ) > "$OUT/nvidia_smi_60s.txt" 2>&1 &
wait
echo "all: $((SECONDS - t0)) s" > "$OUT/phases.txt"
python3 -m benchmarks.evidence.make_tables "$L/fmnist" --out "$L/tables" > "$OUT/make_tables.log" 2>&1
cp "$L/tables/tables.md" "$OUT/fmnist_tables.md"
tar czf "$OUT/logs.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude='*.bin' -C /tmp h1
cat "$OUT/phases.txt"; for f in "$L"/fmnist_*.log; do echo "$f"; tail -c 400 "$f" | tr '\r' '\n' | tail -n 2; done
