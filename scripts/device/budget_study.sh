#!/usr/bin/env bash
# On a lent GPU (device tool): budget-study cells (benchmarks/budget_study.py, audited, on cuda) for the
# full-width checkpoints, each within its deadline; the run folders come back as tarballs in $OUT and
# resume on CPU here (records, audits; `--collect --rules ...` reads them). Data and weights come through
# unpack.sh.
#   scripts/device/budget_study.sh CHECKPOINT=SECONDS [CHECKPOINT=SECONDS ...]   e.g. resnet18-mnist=400
# Each checkpoint: uniform-layer, milp, 1,000 calibration images, rules flips and paired:0.9, with and
# without --verify 1000, naive engine (on an H200 the fast engine was slower, RESULTS.md).
set -uo pipefail
source scripts/device/unpack.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for item in "$@"; do
  ckpt=${item%=*} limit=${item#*=}
  start=$(date +%s)
  timeout "$limit" python3 benchmarks/budget_study.py --checkpoint "checkpoints/$ckpt" --data-root ../shared/data \
    --out "runs/study/$ckpt" --modes uniform-layer --optimizers milp --eps 0,0.5,1,3 --calib 1000 \
    --budgets flips,paired:0.9 --verify 0,1000 --engine naive --device cuda \
    --rules net,flips,paired:0.9,paired:0.99,ucb:0.9 > "$OUT/$ckpt.log" 2>&1
  echo "$ckpt: rc $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/$ckpt.log"
  tar czf "$OUT/study-$ckpt.tgz" "runs/study/$ckpt" 2>/dev/null
  tail -3 "$OUT/$ckpt.log"
done
