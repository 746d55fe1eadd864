#!/usr/bin/env bash
# Run K, call 4 (one H100/H200, ≤ 9.5 min): three jobs in turn, each alone on the GPU.
#   1. LightNet at the size on Fashion-MNIST (the run H1 recipe), seeds 0 1 2, with --save-weights, so the 48²
#      transfer drop of run H1 (LightNet 57.7 ± 10.3 % vs ViT 84.1 %) can be probed offline on the CPU: one 11 MB
#      archive per seed comes back; unpack them, then (the finished runs are reused, only the evaluations run)
#        mkdir -p runs/k4_weights && for S in 0 1 2; do tar xzf <files_at>/seed$S.tgz -C runs/k4_weights; done
#        python -m benchmarks.evidence.transfer_probes --out runs/k4_weights/fmnist --seeds 0 1 2 --threads 2 \
#            --train-limit 60000 --test-limit 2000 --epochs 15 --batch-size 512 --lr 1e-3 --embed-dim 192 --depth 12 \
#            --heads 3 --flip --data-root .data/fashion-mnist
#   2. bench_decay_recurrence.py: the scan baselines' recurrence alone at their training shape, every form (run K3's
#      2-scan step took ~650 ms: which form is slow, and which would be fast);
#   3. bench_dit_latency.py compiled, one image with guidance: LightNet-DiT-B/2 vs DiT-B/2 per step with MD-TPE's
#      direct product, now the default on ≤ 32-token axes (run J5 timed the FFT path).
#   bash benchmarks/device_runs/run_k4.sh     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=2
L=/tmp/k4; mkdir -p "$L"
t0=$SECONDS
for S in 0 1 2; do
  python3 -m benchmarks.evidence.run_classification "${FMNIST_RECIPE[@]}" --models lightnet --seeds $S --threads 2 \
    --save-weights --time-limit 380 --out "$L/fmnist" > "$L/fmnist_lightnet_$S.log" 2>&1 &
done
wait
phase "lightnet 3 seeds"
timeout 130 python3 benchmarks/bench_decay_recurrence.py --out "$L/recurrence" > "$L/recurrence.log" 2>&1
phase "decay recurrence"
timeout $((535 - SECONDS + t0)) python3 benchmarks/bench_dit_latency.py --compile-mode reduce-overhead --batches 2 \
  --out "$L/dit_compiled" > "$L/bench_dit_latency.log" 2>&1
phase "DiT-B/2 latency compiled"
# one archive per seed: each holds an 11 MB bf16 weight file, and a returned file may be at most 16 MiB
for S in 0 1 2; do tar czf "$OUT/seed$S.tgz" --exclude='checkpoint.pt' -C "$L" "fmnist/lightnet/seed$S"; done
tar czf "$OUT/logs.tgz" -C /tmp --exclude='fmnist' k4
cat "$OUT/phases.txt"; for f in "$L"/fmnist/*/seed*/summary.json; do echo "$f"; grep -A4 '"transfer"' "$f"; done
cat "$L/recurrence/bench_decay_recurrence.md" 2>/dev/null || tail -5 "$L/recurrence.log"; grep "^|" "$L/bench_dit_latency.log"
