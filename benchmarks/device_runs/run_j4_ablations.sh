#!/usr/bin/env bash
# Run J, call 4 (one H100/H200, ≤ 9.5 min; planned, not yet run): issue 7's ablations at the issue's model size on
# Fashion-MNIST, the run H1 recipe, one group per call: `pe` (no PE / MD-TPE only / MD-LRPE only; "both" is run H1's
# LightNet), `decay` (1-scan multiplicative, Mamba2-style 2-scan) or `design` (the switches of docs/design.md).
# Variants already run at this scale (lightnet, vit, scan2, scan4) are skipped. At most 9 processes (run H1's 12
# processes took ~370 s for 15 LightNet epochs); variants of the decay group use the PyTorch recurrence (no fla
# autotuning).
# The design group has 7 variants (21 runs): pass a subset as the second argument, three variants per call, e.g.
#   bash benchmarks/device_runs/run_j4_ablations.sh design "no_out_norm q_identity q_elu1"
# Every run trains with its blocks compiled and the scan variants on the PyTorch recurrence in run L1's fastest form
# (chunk 8, intermediates saved: 85 ms per 2-scan step alone, §5g); the decay group's two variants need a call each,
# and SEEDS="0 1" for scan2_mamba2 (three 2-scan seeds reached epoch 13 of 15 in one call, run L2):
#   bash benchmarks/device_runs/run_j4_ablations.sh decay mult_scan1; SEEDS="0 1" bash ... decay scan2_mamba2
#   bash benchmarks/device_runs/run_j4_ablations.sh pe|decay|design [VARIANTS]   (carry .data/fashion-mnist; writes to $OUT)
set -u
G=${1:-pe}; SEEDS=${SEEDS:-0 1 2}
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=1
L=/tmp/j4; mkdir -p "$L"
t0=$SECONDS
VARIANTS=${2:-$(python3 -c "from benchmarks.evidence.models import GROUPS; print(' '.join(v for v in GROUPS['$G'] if v not in ('lightnet', 'vit', 'scan2', 'scan4')))")}
N=0
for M in $VARIANTS; do for S in $SEEDS; do
  [ $N -ge 9 ] && break 2
  python3 -m benchmarks.evidence.run_classification "${FMNIST_RECIPE[@]}" --models "$M" --seeds $S \
    --compile --scan-backend torch --scan-chunk 8 --scan-no-recompute --threads 1 --time-limit 520 --out "$L/fmnist" > "$L/fmnist_${M}_$S.log" 2>&1 &
  N=$((N + 1))
done; done
wait
echo "group $G ($VARIANTS), $N runs: $((SECONDS - t0)) s" > "$OUT/phases.txt"
timeout 30 python3 -m benchmarks.evidence.make_tables "$L/fmnist" --out "$L/tables" > "$OUT/make_tables.log" 2>&1
cp "$L/tables/tables.md" "$OUT/fmnist_tables.md" 2>/dev/null
tar czf "$OUT/logs.tgz" --exclude='checkpoint.pt' --exclude='*.safetensors' -C /tmp j4
cat "$OUT/phases.txt"; for f in "$L"/fmnist/*/seed*/epochs.csv; do echo "$f"; tail -n 1 "$f"; done
