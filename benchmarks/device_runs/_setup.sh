# Sourced by the device-run scripts: installs the carried wheels (.whl/: fla-core, diffusers, importlib_metadata) into
# /tmp/site, puts them and the checkout on PYTHONPATH, creates $OUT and records the GPU and versions in $OUT/env.txt.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
# autotuning results (fla's chunk_gla tunes over up to 36 configurations per kernel) kept on disk for later processes
export TRITON_CACHE_AUTOTUNING=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# `phase NAME`: append "NAME: <seconds since $t0> s" to $OUT/phases.txt (scripts set t0=$SECONDS after sourcing this)
phase() { echo "$1: $((SECONDS - t0)) s" | tee -a "$OUT/phases.txt"; }
{ nvidia-smi; python3 -c "import torch, triton, timm, diffusers; print(torch.__version__, triton.__version__, timm.__version__, diffusers.__version__)"; } > "$OUT/env.txt" 2>&1
# The Fashion-MNIST recipe of issue 7 at the issue's size (run H1 onwards; `lightnet_tiny` width / depth / heads, patch
# 4 on 32², 15 epochs, batch 512, flips, transfer to 40² / 48²), shared by the accuracy scripts.
FMNIST_RECIPE=(--dataset fashion_mnist --epochs 15 --batch-size 512 --lr 1e-3 --embed-dim 192 --depth 12 --heads 3
               --patch 4 --flip --train-size 32 --eval-sizes 40 48 --data-root .data/fashion-mnist)
# Triton autotuning results of an earlier call (its $OUT/triton_autotune.tgz unpacked here into .triton_autotune/ and
# carried): fla's chunk_gla then reads its tuned configurations instead of re-tuning (> 230 s per process in runs
# I2 and L1). `save_autotune` packs this call's results (the *.autotune.json files only, a few KB) into $OUT.
TRITON_CACHE=${TRITON_CACHE_DIR:-$HOME/.triton/cache}
if [ -d .triton_autotune ]; then mkdir -p "$TRITON_CACHE" && cp -r .triton_autotune/. "$TRITON_CACHE/"; fi
save_autotune() { (cd "$TRITON_CACHE" 2>/dev/null && find . -name '*.autotune.json' | tar czf "$OUT/triton_autotune.tgz" -T -); }
