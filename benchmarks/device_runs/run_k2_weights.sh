#!/usr/bin/env bash
# Run K, call 2 (one H100/H200, ≈ 4-6 min; planned, not yet run): LightNet at the size on Fashion-MNIST
# (the run H1 recipe), seeds 0 1 2, with --save-weights, so that the 48² transfer drop of run H1 (LightNet
# 57.7 ± 10.3 % vs ViT 84.1 %) can be probed offline on the CPU: copy the three runs back, then
#   mkdir -p runs/evidence/h1_weights && for S in 0 1 2; do tar xzf <files_at>/seed$S.tgz -C runs/evidence/h1_weights; done
#   python -m benchmarks.evidence.transfer_probes --out runs/evidence/h1_weights/fmnist --seeds 0 1 2 --threads 2 \
#       --train-limit 60000 --test-limit 10000 --epochs 15 --batch-size 512 --lr 1e-3 --embed-dim 192 --depth 12 \
#       --heads 3 --flip --data-root .data/fashion-mnist
# (the finished runs are reused, not retrained: only the evaluations run; the model_bf16.safetensors files are 11 MB).
#   bash benchmarks/device_runs/run_k2_weights.sh     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=2
L=/tmp/k2; mkdir -p "$L"
t0=$SECONDS
for S in 0 1 2; do
  python3 -m benchmarks.evidence.run_classification "${FMNIST_RECIPE[@]}" --models lightnet --seeds $S --threads 2 \
    --save-weights --time-limit 500 --out "$L/fmnist" > "$L/fmnist_lightnet_$S.log" 2>&1 &
done
wait
phase "3 seeds"
# one archive per seed: each holds an 11 MB bf16 weight file, and a returned file may be at most 16 MiB
for S in 0 1 2; do tar czf "$OUT/seed$S.tgz" --exclude='checkpoint.pt' -C "$L" "fmnist/lightnet/seed$S"; done
tar czf "$OUT/logs.tgz" -C "$L" --exclude='fmnist' .
cat "$OUT/phases.txt"; for f in "$L"/fmnist/*/seed*/summary.json; do echo "$f"; head -c 400 "$f"; echo; done
