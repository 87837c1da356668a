#!/usr/bin/env bash
# On a lent GPU (device tool): issue 17's retraining study on one checkpoint within a deadline: a uniform-layer
# search at large epsilons (batched engine), then benchmarks/retrain_study.py (labels, predictability,
# distillation, both, and search-retrain rounds) from the masks of epsilon EPS; logs and tables in $OUT, the
# run folders as a tarball without weights (the json records: numbers, masks). A rerun resumes what the
# deadline cut. Data and weights come through unpack.sh.
#   scripts/device/retrain_study.sh CHECKPOINT EPS SECONDS [EPOCHS [ROUNDS]]   e.g. checkpoints/resnet18-cifar10 10 480 8 2
set -uo pipefail
source scripts/device/unpack.sh || exit 1
ckpt=$1 eps=$2 limit=$3 epochs=${4:-8} rounds=${5:-0}
name=$(basename "$ckpt")
run=runs/r17/$name
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
start=$(date +%s)
timeout "$limit" python3 -m crossneuron optimize --checkpoint "$ckpt" --data-root ../shared/data --out "$run/search" \
  --mode uniform-layer --eps "3,$eps" --engine batched --device cuda > "$OUT/r17-search-$name.log" 2>&1
echo "search: rc $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/r17-search-$name.log"
left=$(( limit - ($(date +%s) - start) ))
[ "$left" -gt 30 ] && timeout "$left" python3 benchmarks/retrain_study.py --checkpoint "$ckpt" --data-root ../shared/data \
  --masks "$run/search/uniform-layer/eps-$eps/result.json" --out "$run/study" --epochs "$epochs" --rounds "$rounds" \
  --engine batched --device cuda > "$OUT/r17-study-$name.log" 2>&1
echo "study: rc $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/r17-study-$name.log"
tar czf "$OUT/r17-$name.tgz" --exclude='*.safetensors' --exclude='train_state.pt' --exclude='*.state' "$run" 2>/dev/null
tail -12 "$OUT/r17-study-$name.log"
