#!/usr/bin/env bash
# On a lent GPU (device tool): the zero-tolerance sweep (benchmarks/zero_below.py, batched engine) on one
# checkpoint within a deadline; log, table and the run folders (tarball) in $OUT: they resume on CPU here.
#   scripts/device/zero_below.sh CHECKPOINT SECONDS [FRACTIONS]     e.g. checkpoints/resnet18-cifar10 420 0,0.25,0.5
set -uo pipefail
source scripts/device/unpack.sh || exit 1
ckpt=$1 limit=$2 fractions=${3:-0,0.1,0.25,0.5}
name=$(basename "$ckpt")
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
start=$(date +%s)
timeout "$limit" python3 benchmarks/zero_below.py --checkpoint "$ckpt" --data-root ../shared/data \
  --out "runs/zb/$name" --fractions "$fractions" --engine batched --device cuda > "$OUT/zb-$name.log" 2>&1
echo "zero-below: rc $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/zb-$name.log"
tar czf "$OUT/zb-$name.tgz" "runs/zb/$name" 2>/dev/null
tail -8 "$OUT/zb-$name.log"
