#!/usr/bin/env bash
# On a lent GPU (device tool): studies of benchmarks/reproduce.py on cuda, each within its deadline; their
# run folders (weights left out) come back as tarballs in $OUT and resume on CPU here. Data and weights
# come through unpack.sh.
#   scripts/device/reproduce.sh STUDY=SECONDS [STUDY=SECONDS ...]
set -uo pipefail
source scripts/device/unpack.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for item in "$@"; do
  study=${item%=*} limit=${item#*=}
  start=$(date +%s)
  timeout "$limit" python3 benchmarks/reproduce.py --only "$study" --device cuda > "$OUT/$study.log" 2>&1
  echo "$study: rc $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/$study.log"
  tar czf "$OUT/$study.tgz" --exclude='*.safetensors' --exclude='train_state.pt' "runs/reproduce/$study" 2>/dev/null
  tail -3 "$OUT/$study.log"
done
