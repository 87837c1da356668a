#!/usr/bin/env bash
# On a lent GPU (device tool): issue 19's patch-size study (benchmarks/patch_size.py, batched engine) on one
# checkpoint within a deadline, then `crossneuron compare` on its p = 2 run; logs, tables and the run folders
# (tarball, weights left out) in $OUT: they resume on CPU here. Data and weights come through unpack.sh.
#   scripts/device/peers.sh CHECKPOINT SECONDS [SIZES]      e.g. checkpoints/alexnet-cifar10 420 2,3
# PATTERNS=permutations searches the p! patterns with one computed position per row and column instead (into
# runs/patch/NAME-permutations).
set -uo pipefail
source scripts/device/unpack.sh || exit 1
ckpt=$1 limit=$2 sizes=${3:-2,3,4,5}
patterns=${PATTERNS:-all}
name=$(basename "$ckpt")$([ "$patterns" = all ] || echo "-$patterns")
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
start=$(date +%s)
timeout "$limit" python3 benchmarks/patch_size.py --checkpoint "$ckpt" --data-root ../shared/data \
  --out "runs/patch/$name" --sizes "$sizes" --patterns "$patterns" --engine batched --device cuda > "$OUT/patch-$name.log" 2>&1
echo "patch sizes: rc $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/patch-$name.log"
if [ "$patterns" = all ] && [ -f "runs/patch/$name/p2/summary.json" ]; then
  python3 -m crossneuron compare "runs/patch/$name/p2" --data-root ../shared/data --device cuda \
    --snapea-images 20 > "$OUT/compare-$name.md" 2> "$OUT/compare-$name.log"
fi
tar czf "$OUT/patch-$name.tgz" --exclude='train_state.pt' "runs/patch/$name" 2>/dev/null
tail -8 "$OUT/patch-$name.log"
