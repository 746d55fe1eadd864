#!/usr/bin/env bash
# Run I, call 1 (one H100/H200, ≤ 9.5 min): issue 7's multi-scan baselines on Fashion-MNIST at the issue's size,
# 3 seeds each, alone on the GPU (run H2 shared it with the DiT runs and used the PyTorch chunked recurrence: 190 /
# 355 s per epoch). Same recipe as run H1's LightNet and ViT rows; the decay recurrence runs on fla's chunk_gla,
# checked first against our PyTorch chunked form (check_fla).
#   bash benchmarks/device_runs/run_i1_scans.sh     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=1
L=/tmp/i1; mkdir -p "$L"
t0=$SECONDS
timeout 90 python3 -m benchmarks.evidence.check_fla > "$OUT/check_fla.log" 2>&1; echo "check_fla rc $?" >> "$OUT/check_fla.log"
echo "check_fla: $((SECONDS - t0)) s" > "$OUT/phases.txt"
for M in scan2 scan4; do for S in 0 1 2; do
  timeout $((550 - SECONDS + t0)) python3 -m benchmarks.evidence.run_classification --dataset fashion_mnist --models $M \
    --seeds $S --epochs 15 --batch-size 512 --lr 1e-3 --embed-dim 192 --depth 12 --heads 3 --patch 4 --flip \
    --train-size 32 --eval-sizes 40 48 --scan-backend fla --threads 1 --data-root .data/fashion-mnist \
    --out "$L/fmnist" > "$L/fmnist_${M}_$S.log" 2>&1 &
done; done
( sleep 120; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv; \
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv ) > "$OUT/nvidia_smi_120s.txt" 2>&1 &
wait
echo "all: $((SECONDS - t0)) s" >> "$OUT/phases.txt"
timeout 30 python3 -m benchmarks.evidence.make_tables "$L/fmnist" --out "$L/tables" > "$OUT/make_tables.log" 2>&1
cp "$L/tables/tables.md" "$OUT/fmnist_tables.md"
tar czf "$OUT/logs.tgz" -C /tmp i1
cat "$OUT/phases.txt" "$OUT/check_fla.log" | tail -20
for f in "$L"/*.log; do echo "$f"; tail -c 400 "$f" | tr '\r' '\n' | tail -n 2; done
for f in "$L"/fmnist/*/seed*/epochs.csv; do echo "$f"; tail -n 1 "$f"; done
