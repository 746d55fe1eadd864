#!/usr/bin/env bash
# Run L, calls 1-2 (one H100/H200, ≤ 9.5 min, alone on the GPU): one multi-scan baseline of issue 7 (scan2 or scan4)
# on Fashion-MNIST at the issue's size (the run H1 recipe), choosing its training form in the same call:
#   1. time_scan_step.py times whole training steps (blocks compiled, recurrence intermediates saved, not
#      recomputed) of LightNet (the same-process reference) and of the exact PyTorch forms of the recurrence: pairwise at chunk 8 (run K5's fastest, 120 ms per
#      2-scan step with recomputation) and the sub-chunk form at chunk 64 and 32 (GEMMs between 8-token sub-chunks,
#      untimed on a GPU so far);
#   2. the fastest form trains as many of $SEEDS (default "0 1 2") as its measured step time lets finish 15 epochs
#      in the time left (parallel processes share the GPU: their steps are budgeted as if serial, +15 % for the
#      per-epoch evaluation), at least one (a cut run pauses cleanly at --time-limit; partial_epochs.py reads it).
# Saves a whole call of pure timing (the planned run_l1_scan_forms.sh) at the cost of not timing fla's chunk_gla,
# whose first-call autotuning alone took > 230 s in run I2 (254 s in run L1's first call, which left
# run_classification's default --scan-backend auto: fla traced inside the compiled blocks, hence --scan-backend torch).
# FORM="CHUNK INTRA" (e.g. FORM="8 auto", run L1's fastest: 85 ms per 2-scan step) skips the timing and runs all of
# $SEEDS in parallel (run L2: three 2-scan seeds reached epoch 13 of 15 in 540 s; two finish).
# BACKEND=fla trains on fla's chunk_gla inside the compiled blocks instead (run L1: 136 ms per step with two
# processes sharing the GPU, i.e. ~68 ms each, vs 85 ms for the PyTorch form alone): one --warm-only process tunes it
# first, unless a carried .triton_autotune/ (this script's $OUT/triton_autotune.tgz from an earlier call, unpacked)
# already holds the tuning; all of $SEEDS run in parallel.
# RUNS="scan2:2 scan4:0" (with FORM or BACKEND=fla) runs exactly those variant:seed pairs side by side, e.g. the last
# 2-scan seed (~150 s of GPU) next to a 4-scan seed (~300 s).
#   bash benchmarks/device_runs/run_l1_scans.sh [scan2|scan4]     (carry .whl and .data/fashion-mnist; writes to $OUT)
set -u
M=${1:-scan2}; SEEDS=${SEEDS:-0 1 2}; FORM=${FORM:-}; BACKEND=${BACKEND:-torch}; RUNS=${RUNS:-}
if [ -n "$RUNS" ] && [ -z "$FORM" ] && [ "$BACKEND" != fla ]; then echo "RUNS needs FORM or BACKEND=fla" >&2; exit 2; fi
VARIANTS=$M; [ -n "$RUNS" ] && VARIANTS=$(for R in $RUNS; do echo "${R%%:*}"; done | sort -u | tr '\n' ' ')
source benchmarks/device_runs/_setup.sh
export OMP_NUM_THREADS=2
L=/tmp/l1; mkdir -p "$L"
t0=$SECONDS
if [ "$BACKEND" = fla ]; then
  timeout 330 python3 -m benchmarks.evidence.run_classification "${FMNIST_RECIPE[@]}" --scan-backend fla --compile \
    --models $VARIANTS --out "$L/fmnist" --warm-only > "$L/warm.log" 2>&1
  phase "fla tuned"
  NSEEDS=3
elif [ -n "$FORM" ]; then
  read -r CHUNK INTRA <<< "$FORM"; NSEEDS=3
else
  timeout 150 python3 -m benchmarks.evidence.time_scan_step --specs lightnet "$M:8" "$M:64:subchunk" "$M:32:subchunk" \
    --no-recompute --steps 8 --warmup 2 --no-profile --out "$L/forms" > "$L/forms.log" 2>&1
  phase "forms timed"
  read -r CHUNK INTRA NSEEDS < <(python3 - "$L/forms/time_scan_step.json" $((525 - SECONDS + t0)) <<'PY'
import json, math, sys
rows = [r for r in json.load(open(sys.argv[1])) if ":" in r["spec"]]  # the scan forms (lightnet: the reference row)
best = min(rows, key=lambda r: r["step_ms"])
_, chunk, intra = (best["spec"].split(":") + ["auto"])[:3]
steps = math.ceil(60000 / 512) * 15
per_seed = best["step_ms"] / 1e3 * steps * 1.15
left = float(sys.argv[2]) - 1.2 * best["first_step_s"]
print(chunk, intra, max(1, min(3, int(left // per_seed))))
PY
  )
fi
if [ -z "$RUNS" ]; then
  RUNS=$(for S in $(echo $SEEDS | cut -d' ' -f1-"${NSEEDS:-1}"); do echo -n "$M:$S "; done)
fi
if [ "$BACKEND" = fla ]; then
  FORM_ARGS=(--scan-backend fla)
else
  FORM_ARGS=(--scan-backend torch --scan-chunk "${CHUNK:-8}" --scan-intra "${INTRA:-auto}" --scan-no-recompute)
fi
echo "form: ${FORM_ARGS[*]}; runs: $RUNS" | tee -a "$OUT/phases.txt"
ARGS=("${FMNIST_RECIPE[@]}" "${FORM_ARGS[@]}" --threads 2 --out "$L/fmnist" --compile)
for R in $RUNS; do
  V=${R%%:*}; S=${R##*:}
  python3 -m benchmarks.evidence.run_classification "${ARGS[@]}" --models "$V" --seeds "$S" \
    --time-limit $((540 - SECONDS + t0)) > "$L/fmnist_${V}_$S.log" 2>&1 &
done
( sleep 120; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv ) > "$OUT/nvidia_smi_120s.txt" 2>&1 &
wait
phase "all"
timeout 30 python3 -m benchmarks.evidence.make_tables "$L/fmnist" --out "$L/tables" > "$OUT/make_tables.log" 2>&1
cp "$L/tables/tables.md" "$OUT/fmnist_tables.md" 2>/dev/null
cp "$L/forms/time_scan_step.md" "$OUT/forms.md" 2>/dev/null
tar czf "$OUT/logs.tgz" --exclude='checkpoint.pt' --exclude='*.safetensors' -C /tmp l1
save_autotune
cat "$OUT/phases.txt"; cat "$OUT/forms.md" 2>/dev/null; for f in "$L"/fmnist/*/seed*/epochs.csv; do echo "$f"; tail -n 2 "$f"; done
