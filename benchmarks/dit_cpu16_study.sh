#!/usr/bin/env bash
# Generation on the CPU: LightNet-DiT vs diffusers' DiT at the reduced "cpu16" size (Fashion-MNIST 16², patch 2,
# width 128, 4 layers, 1 200 steps), seeds 0 1 2, each model with its own initialisation ("base") and both with the
# DiT paper's ("ditpaper": class embeddings N(0, 0.02), zero adaLN), plus one-seed LightNet variants at the paper's
# initialisation that look for what else separates the two.
# Each training is one process on one thread (~4.5 min on an idle core); JOBS of them run at once. Then every
# pipeline is scored by `lightnet fid` against one cached classifier, and the table and bar plot are written.
#   bash benchmarks/dit_cpu16_study.sh                       (ROOT=runs/dit_cpu16, DOCS=docs/results/dit_cpu16)
#   STAGES="fid table" bash benchmarks/dit_cpu16_study.sh    (score and tabulate runs that already exist)
set -eu
cd "$(dirname "$0")/.."
ROOT=${ROOT:-runs/dit_cpu16}
DOCS=${DOCS:-docs/results/dit_cpu16}
JOBS=${JOBS:-2}
STAGES=${STAGES:-"train fid table"}
DATA=${DATA:-.data/fashion-mnist}
[ -d "$DATA" ] || DATA=/usr/share/datasets/fashion-mnist
PY=${PY:-python}
SIZE=${SIZE:-cpu16}        # tiny: the smoke test's size (tests/test_dit_compare_script.py)
STEPS=${STEPS:-1200}
SAMPLES=${SAMPLES:-1000}   # generated images per pipeline for the FID proxy
CLF_EPOCHS=${CLF_EPOCHS:-2}
mkdir -p "$ROOT"

# name arch seed [config overrides of that model]
RUNS=${RUNS:-"base lightnet 0
base dit 0
base lightnet 1
base dit 1
base lightnet 2
base dit 2
ditpaper lightnet 0 model.init=dit_paper
ditpaper dit 0 model.init=dit_paper
ditpaper lightnet 1 model.init=dit_paper
ditpaper dit 1 model.init=dit_paper
ditpaper lightnet 2 model.init=dit_paper
ditpaper dit 2 model.init=dit_paper
mlp lightnet 0 model.init=dit_paper model.kwargs.mlp_type=mlp model.kwargs.mlp_ratio=4
nogate lightnet 0 model.init=dit_paper model.kwargs.gate_rank=0
notpe lightnet 0 model.init=dit_paper model.kwargs.use_tpe=false
nolrpe lightnet 0 model.init=dit_paper model.kwargs.use_lrpe=false
${EXTRA_RUNS:-}"}

train_one() {  # name arch seed overrides...
  local n=$1 a=$2 s=$3; shift 3
  local dir="$ROOT/$n/${a}_s$s"
  [ -f "$dir/runs_$a.json" ] && return 0  # finished earlier
  OMP_NUM_THREADS=1 $PY benchmarks/dit_fashion_mnist_compare.py --size "$SIZE" --steps "$STEPS" --archs "$a" --skip-fid \
    --seed "$s" --data-root "$DATA" --workers 0 --backend torch --"$a"-set "$@" --out "$dir" --work "$dir/work" \
    > "$dir.log" 2>&1
  echo "trained $n $a seed $s"
}
export -f train_one; export ROOT DATA PY SIZE STEPS

score() {  # json seed pipelines...
  local j=$1 s=$2; shift 2
  OMP_NUM_THREADS=1 $PY -m lightnet.train.fid --pipeline "$@" --dataset fashion_mnist --root "$DATA" --img-size 16 \
    --num-samples "$SAMPLES" --steps 20 --guidance 1.5 --classifier-epochs "$CLF_EPOCHS" --classifier "$ROOT/fid_classifier" \
    --seed "$s" --device cpu --json "$j" > "${j%.json}.log" 2>&1
  echo "scored $j"
}

case " $STAGES " in *" train "*)
  echo "$RUNS" | grep -v '^\s*$' | xargs -P "$JOBS" -L1 bash -c 'mkdir -p "$ROOT/$0"; train_one "$0" "$@"' ;;
esac

case " $STAGES " in *" fid "*)
  # one classifier first (the later calls reuse it), then the runs in groups of one seed and name, JOBS at a time
  groups=$(find "$ROOT" -mindepth 2 -maxdepth 2 -type d -name '*_s[0-9]*' | sed -E 's#^.*/([^/]+)/[a-z]+_s([0-9]+)$#\1 \2#' | sort -u)
  first=1
  while read -r n s; do
    [ -n "$n" ] || continue
    j="$ROOT/$n/fid_s$s.json"
    [ -f "$j" ] && continue
    pipes=$(ls -d "$ROOT/$n"/*_s"$s"/work/*/pipeline)
    if [ $first = 1 ] && [ ! -d "$ROOT/fid_classifier" ]; then score "$j" "$s" $pipes; first=0
    else score "$j" "$s" $pipes & fi
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  done <<< "$groups"
  wait ;;
esac

case " $STAGES " in *" table "*)
  $PY -m benchmarks.evidence.dit_study "$ROOT" --out "$DOCS" ;;
esac
