#!/usr/bin/env bash
# The GPU runs behind docs/benchmarks.md and docs/evidence.md, one part per call of at most ~9.5 minutes on one
# H100 / H200 (each part is cut at PART_S seconds; what finished is written). From the repository root:
#   bash benchmarks/gpu_suite.sh PART [ARGS...]        results under $OUT/PART/ (JSON + Markdown), log $OUT/PART.log
#   bash benchmarks/gpu_suite.sh list                  the parts, what each measures, expected minutes
# Carry the wheels the device image lacks in .whl/ (timm, diffusers, fla-core, ...: installed into /tmp/site), and
# for the experiment parts the data: .data/fashion-mnist (idx files), .data/pydoc (the corpus). Environment:
#   OUT (default /tmp/out), PART_S (default 560), SEEDS (default "0 1 2"), PY (default python3).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; PART_S=${PART_S:-560}; SEEDS=${SEEDS:-"0 1 2"}; PY=${PY:-python3}
FMNIST=(--dataset fashion_mnist --epochs 15 --batch-size 512 --lr 1e-3 --embed-dim 192 --depth 12 --heads 3 --patch 4
        --flip --train-size 32 --eval-sizes 40 48 --data-root .data/fashion-mnist)

parts() { cat <<'EOF'
check         ~5 min  kernels' correctness on the GPU vs the fp64 reference (25 cases)
kernels       ~8 min  non-causal / causal fwd+bwd vs compiled reference, SDPA, fla at N = 1K..64K (fla: carry its wheel)
kernels-lrpe  ~3 min  non-causal with / without MD-LRPE at the vision models' shapes (224..2048 px)
vision        ~8 min  lightnet_small vs vit_small: training img/s 224..2048 px + latency, torch.compile reduce-overhead
vision-eager  ~4 min  the same, eager and torch.compile default mode
seg           ~5 min  smp DPT on LightNet-S vs ViT-S encoders: training step img/s + memory at 512 / 1024 px, eager + compiled (carry the segmentation-models-pytorch wheel)
video         ~5 min  video classifiers at 8 / 16 × 224²: LightNet vs space-time ViT vs 6-scan, training clips/s + memory (eager: all three; compiled: LightNet, ViT)
dit           ~8 min  LightNet-DiT-B/2 vs DiT-B/2: training step and denoising step at 256 / 512 px, eager + compiled
dit-1024      ~6 min  the same at 1024 px
lm            ~4 min  LightNet LM vs GPT + KV cache decode tokens/s and memory, L = 1K, 8K, 64K
lm-graph      ~6 min  the same, eager and CUDA-graph decode steps (GraphedDecoder; GPT static KV cache), L = 1K..64K
block-profile ~8 min  µs per token per piece: LightNet block vs ViT block, N = 196..16384, 32K tokens/step, eager + compiled (timm)
memory        ~8 min  GPU peak training memory LightNet-S vs ViT-S (224 / 1024 px, compiled), saved bytes with CUDA kernels
scan-speed    ~3 min  experiments: training step LightNet vs 2-scan at the Fashion-MNIST shape
scan-1024     ~9 min  experiments: LightNet-S vs 2- / 4-scan at 1024 px on fla's chunk_gla (autotuning included)
fmnist        ~6 min  experiments: Fashion-MNIST LightNet vs ViT, issue size, SEEDS in parallel
fmnist-scan   ~9 min  experiments: ARGS = scan2|scan4 ...; 2 seeds of SEEDS per call fit (scan4: 1)
lm-quality    ~8 min  experiments: LM bits per byte LightNet vs GPT, one seed per SEEDS entry in sequence
dit-quality   ~9 min  experiments: LightNet-DiT-S/2 vs DiT-S/2 on Fashion-MNIST, 424 steps + FID proxy, first seed of SEEDS
multigpu      ~9 min  2 GPUs: DDP scaling, loss curves, FSDP2 resume (benchmarks/multigpu_check.py)
seqpar        ~6 min  GPUs (ARGS = count, default 2): sequence-parallel mixer fwd+bwd ms and peak memory per rank, 1 vs N
EOF
}
[ "${1:-list}" = list ] && { parts; exit 0; }
PART=$1; shift
parts | grep -q "^$PART " || { echo "unknown part '$PART'; choose one of:"; parts; exit 2; }

# setup: carried wheels, the checkout on the path, unbuffered output, Triton autotuning kept on disk (carry an earlier
# call's $OUT/triton_autotune.tgz unpacked into .triton_autotune/ and fla's kernels skip their minutes of tuning)
if ls .whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
TRITON_CACHE=${TRITON_CACHE_DIR:-$HOME/.triton/cache}
[ -d .triton_autotune ] && mkdir -p "$TRITON_CACHE" && cp -r .triton_autotune/. "$TRITON_CACHE/"
mkdir -p "$OUT/$PART"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; echo "commit ${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/env.txt" 2>&1
D=$OUT/$PART
run() { timeout "$PART_S" "$@" 2>&1 | tee -a "$OUT/$PART.log"; }

case $PART in
  check) run $PY benchmarks/kernels.py --check-only --budget-s $((PART_S - 60)) --out "$D" ;;
  kernels) run $PY benchmarks/kernels.py --no-check --budget-s $((PART_S - 120)) --out "$D" "$@" ;;
  kernels-lrpe) run $PY benchmarks/kernels.py --no-check --lrpe --shapes 128x196 32x1024 8x4096 2x16384 --out "$D" ;;
  vision) run $PY benchmarks/models.py vision --compile-mode reduce-overhead --fullgraph --out "$D" "$@" ;;
  vision-eager) run $PY benchmarks/models.py vision --compile-mode eager default --out "$D" "$@" ;;
  seg) run $PY benchmarks/models.py seg --compile-mode eager default --out "$D" "$@" ;;
  video)
    PART_S=$((PART_S * 2 / 5)) run $PY benchmarks/models.py video --compile-mode eager --out "$D/eager" "$@"
    PART_S=$((PART_S * 3 / 5)) run $PY benchmarks/models.py video --compile-mode default --models lightnet vit \
      --out "$D/compiled" "$@" ;;
  dit) run $PY benchmarks/models.py dit --compile-mode eager reduce-overhead --sizes 256 512 --batches 32 8 --out "$D" ;;
  dit-1024) run $PY benchmarks/models.py dit --compile-mode eager reduce-overhead --sizes 1024 --batches 2 --out "$D" ;;
  lm) run $PY benchmarks/lm_decode.py --out "$D" ;;
  lm-graph) run $PY benchmarks/lm_decode.py --cuda-graph --contexts 1024 4096 16384 65536 --out "$D" ;;
  block-profile) run $PY benchmarks/block_profile.py --out "$D" "$@" ;;
  memory)
    PART_S=$((PART_S * 2 / 3)) run $PY benchmarks/memory.py peak --sizes 224 1024 --batches 128 8 --fullgraph --out "$D"
    PART_S=$((PART_S / 3)) run $PY benchmarks/memory.py saved --device cuda --img-size 224 1024 --batch 8 --compile \
      --out "$D" ;;
  scan-speed) run $PY -m experiments.scan_speed --specs lightnet scan2:8 --no-recompute --out "$D" ;;
  scan-1024)
    run $PY -m experiments.scan_speed --specs lightnet scan2 scan4 --scan-backend fla --img-size 1024 --in-chans 3 \
      --patch 16 --embed-dim 384 --depth 12 --heads 6 --num-classes 1000 --batch-size 8 --steps 10 --out "$D"
    (cd "$TRITON_CACHE" && find . -name '*.autotune.json' | tar czf "$OUT/triton_autotune.tgz" -T -) ;;
  fmnist|fmnist-scan)
    MODELS="lightnet vit"; EXTRA=()
    if [ "$PART" = fmnist-scan ]; then MODELS=${1:?fmnist-scan needs a model: scan2 or scan4}
      EXTRA=(--scan-backend torch --scan-chunk 8 --scan-no-recompute --compile); fi
    export OMP_NUM_THREADS=4
    for m in $MODELS; do for s in $SEEDS; do  # one process per run; finished runs are skipped, cut ones resumed
      run $PY -m experiments.run_classification "${FMNIST[@]}" "${EXTRA[@]}" --models "$m" --seeds "$s" --threads 4 \
        --time-limit $((PART_S - 40)) --out /tmp/fmnist > "$OUT/$PART.${m}_$s.log" &
    done; done; wait
    $PY -m experiments.make_tables /tmp/fmnist --out "$D" | tee -a "$OUT/$PART.log"
    tar czf "$D/logs.tgz" --exclude=checkpoint.pt --exclude='*.safetensors' -C /tmp fmnist ;;
  lm-quality)
    for s in $SEEDS; do PART_S=$((PART_S / $(wc -w <<< "$SEEDS"))) run $PY -m experiments.lm_quality \
      --data .data/pydoc --seed "$s" --steps 1250 --max-train-seconds 100000 --out "$D/seed$s"; done
    $PY -m experiments.aggregate_seeds lm "$D"/seed*/lm_compare.json | tee -a "$OUT/$PART.log" ;;
  dit-quality)
    s=${SEEDS%% *}
    run $PY experiments/dit_compare.py --data-root .data/fashion-mnist --seed "$s" --steps 424 --backend auto \
      --sample-autocast bf16 --out "$D/seed$s" --work /tmp/dit_work ;;
  multigpu) NCCL_NVLS_ENABLE=0 run $PY benchmarks/multigpu_check.py --out "$D" --data .data/fashion-mnist \
      --corpus .data/pydoc --epochs 3 --iters 20 ;;
  seqpar)
    NGPU=${1:-2}
    PART_S=$((PART_S / 3)) NCCL_NVLS_ENABLE=0 run $PY -m torch.distributed.run --nproc_per_node 1 \
      benchmarks/seqpar_gpu.py --lengths 16384 65536 262144 --out "$D"
    PART_S=$((PART_S * 2 / 3)) NCCL_NVLS_ENABLE=0 run $PY -m torch.distributed.run --nproc_per_node "$NGPU" \
      benchmarks/seqpar_gpu.py --out "$D" ;;
esac
status=$?
echo "$PART: exit $status" | tee -a "$OUT/$PART.log"
exit $status
