# Sourced by the device-run scripts: installs the carried wheels (.whl/: fla-core, diffusers, importlib_metadata) into
# /tmp/site, puts them and the checkout on PYTHONPATH, creates $OUT and records the GPU and versions in $OUT/env.txt.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
{ nvidia-smi; python3 -c "import torch, triton, timm, diffusers; print(torch.__version__, triton.__version__, timm.__version__, diffusers.__version__)"; } > "$OUT/env.txt" 2>&1
