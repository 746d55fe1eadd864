#!/usr/bin/env bash
# Run G, call 2 (one H100/H200, ≤ 9.8 min): end-to-end speed of issue 7 (eager vs torch.compile fullgraph), the
# causal kernels' num_stages sweep, and the GPU kernel check with the new segment rules.
# Phase 1 (parallel, ≤ 210 s, numbers discarded): check_kernels_gpu.py over seven processes (seed 11); compile
# warm-up of both models at each size (torch.compile reduce-overhead, fullgraph: inductor's on-disk caches); one step
# of every scan baseline per size (fla's chunk_gla autotuning); the causal sweep (Triton caches).
# Phase 2 (alone on the GPU): sweep_kernels.py (causal num_stages 1 / 2 / 4 vs default), bench_models.py eager vs
# reduce-overhead fullgraph, bench_scan_baselines.py.
#   bash benchmarks/device_runs/run_g2_models.sh     (carry .whl; writes to $OUT)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. TORCHINDUCTOR_COMPILE_THREADS=2 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; W=/tmp/warm; mkdir -p "$W" "$OUT"
{ nvidia-smi; python3 -c "import torch, triton, timm, fla; print(torch.__version__, triton.__version__, timm.__version__, fla.__version__)"; } > "$OUT/env.txt" 2>&1
SWEEP=(benchmarks/sweep_kernels.py --causal-only --causal 0:0:0:0:0,0:0:0:0:0:0:1:1,0:0:0:0:0:0:1:2,0:0:0:0:0:0:1:4
       --causal-sizes 1024,4096,65536)
t0=$SECONDS
for part in auto,0,1,2,3 4,5,6,7 8,9,10,11 12,13,14 15,16 17 18; do
  timeout 210 python3 benchmarks/check_kernels_gpu.py --seed 11 --cases "$part" > "$W/check_${part//,/_}.log" 2>&1 &
done
timeout 210 python3 "${SWEEP[@]}" --out "$W/sweep" > "$W/sweep_warm.log" 2>&1 &
sizes=(224 512 1024 2048); batches=(128 32 8 2)
for i in 0 1 2 3; do
  lat=""; [ $i = 0 ] && lat="1 64"
  timeout 210 python3 benchmarks/bench_models.py --compile-mode reduce-overhead --fullgraph --sizes ${sizes[$i]} \
    --batches ${batches[$i]} --warmup 1 --iters 1 --latency-batches $lat > "$W/m$i.log" 2>&1 &
done
for i in 0 1 2; do
  timeout 210 python3 -m benchmarks.evidence.bench_scan_baselines --sizes ${sizes[$i]} --batches ${batches[$i]} \
    --warmup 1 --iters 1 > "$W/s$i.log" 2>&1 &
done
wait
echo "phase 1: $((SECONDS - t0)) s" | tee "$OUT/phases.txt"
for f in "$W"/check_*.log; do echo "== $f"; cat "$f"; done > "$OUT/check_kernels_gpu.log"
grep -h "FAIL\|failing\|raised\|Error" "$OUT/check_kernels_gpu.log" | head -20
timeout 75 python3 "${SWEEP[@]}" --out "$W/res/sweep" > "$OUT/sweep_causal.log" 2>&1
echo "sweep: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
grep "^causal {" "$OUT/sweep_causal.log" | cut -c1-60,200-400
timeout $((500 - SECONDS + t0)) python3 benchmarks/bench_models.py --compile-mode eager reduce-overhead --fullgraph \
  --out "$W/res/models" > "$OUT/bench_models.log" 2>&1
echo "models: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
timeout $((585 - SECONDS + t0)) python3 -m benchmarks.evidence.bench_scan_baselines --out "$W/res/scan" > "$OUT/bench_scan.log" 2>&1
echo "scan: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"
for f in "$W"/m*.log "$W"/s*.log "$W"/sweep_warm.log; do echo "== $f"; tail -c 1500 "$f"; done > "$OUT/warmup_tail.txt" 2>&1
tar czf "$OUT/results.tgz" -C "$W" res 2>/dev/null
grep -v "^{" "$OUT/bench_models.log" | tail -40; tail -15 "$OUT/bench_scan.log"
