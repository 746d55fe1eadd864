#!/usr/bin/env bash
# Run J, call 1 (one H100/H200, ≤ 9.5 min, alone on the GPU; planned, not yet run): one multi-scan baseline of
# issue 7 (default scan2; `bash run_j1_scans.sh scan4` for the other) × seeds 0 1 2 on Fashion-MNIST at the issue's
# size, the run H1 recipe, three processes only (run I1's six processes on fla took 350-390 s for the first epoch
# while all six autotuned, and 65 s per later epoch).
#   * BACKEND=fla (default torch): one `--warm-only` process fills Triton's on-disk autotune cache first, so the three
#     runs read the tuned configurations instead of each autotuning (_setup.sh sets TRITON_CACHE_AUTOTUNING=1: Triton keeps the tuning results on disk);
#   * every run checkpoints each epoch and pauses cleanly at --time-limit (checkpoints are ~66 MB each: they cannot
#     travel back through $OUT, so a run must finish inside one call; the epoch times in the logs say whether it can).
#   EXTRA=--compile: the training step's blocks compiled regionally (`--compile` = `--compile blocks`: norms, mixer
#     and MLP, one shared graph each; the PyTorch recurrence takes its exact pairwise form, no host sync). Run J7's
#     whole-model compile of the 4-scan model had not finished its first step after 130 s.
#   Next (after runs K3-K5): SEEDS="0 1" EXTRA="--compile --scan-chunk 8 --scan-no-recompute" bash run_j1_scans.sh scan2
#   bash benchmarks/device_runs/run_j1_scans.sh [scan2|scan4|"scan2 scan4"]     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
M=${1:-scan2}; BACKEND=${BACKEND:-torch}; EXTRA=${EXTRA:-}   # e.g. EXTRA=--compile (compiled training step)
SEEDS=${SEEDS:-0 1 2}   # runs K3 / K5: a 2-scan step takes ~120 ms of GPU alone, so two seeds fit a call, not three
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=2
L=/tmp/j1; mkdir -p "$L"
t0=$SECONDS
ARGS=("${FMNIST_RECIPE[@]}" --scan-backend "$BACKEND" --threads 2 --out "$L/fmnist" $EXTRA)
if [ "$BACKEND" = fla ]; then
  timeout 240 python3 -m benchmarks.evidence.run_classification "${ARGS[@]}" --models $M --warm-only > "$L/warm.log" 2>&1
  echo "warm ($BACKEND): $((SECONDS - t0)) s" >> "$OUT/phases.txt"
fi
for V in $M; do  # M may list several baselines ("scan2 scan4": six processes)
  for S in $SEEDS; do
    python3 -m benchmarks.evidence.run_classification "${ARGS[@]}" --models "$V" --seeds $S \
      --time-limit $((530 - SECONDS + t0)) > "$L/fmnist_${V}_$S.log" 2>&1 &
  done
done
( sleep 150; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv; \
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv ) > "$OUT/nvidia_smi_150s.txt" 2>&1 &
wait
echo "all: $((SECONDS - t0)) s" >> "$OUT/phases.txt"
timeout 30 python3 -m benchmarks.evidence.make_tables "$L/fmnist" --out "$L/tables" > "$OUT/make_tables.log" 2>&1
cp "$L/tables/tables.md" "$OUT/fmnist_tables.md" 2>/dev/null
tar czf "$OUT/logs.tgz" --exclude='checkpoint.pt' --exclude='*.safetensors' -C /tmp j1
cat "$OUT/phases.txt"; for f in "$L"/fmnist/*/seed*/epochs.csv; do echo "$f"; tail -n 2 "$f"; done
