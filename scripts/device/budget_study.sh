#!/usr/bin/env bash
# On a lent GPU (device tool): budget-study cells (benchmarks/budget_study.py, audited, on cuda) for the
# full-width checkpoints, each within its deadline; the run folders come back as tarballs in $OUT and
# resume on CPU here (records, audits; `--collect --rules ...` reads them). Data and weights come through
# unpack.sh.
#   scripts/device/budget_study.sh CHECKPOINT=SECONDS [CHECKPOINT=SECONDS ...]   e.g. resnet18-cifar10=400
# Each checkpoint, in this order (what issue 15's study still lacks first): the 0.11 defaults (milp, flips,
# 1,000 verify images) at 1,000 and 2,500 calibration images, then 4,000 (no room for verify images in a
# 5,000-image val), modes uniform-layer and screened uniform-patch; naive engine (on an H200 the fast
# engine was slower, RESULTS.md). MODES=uniform-layer narrows it.
set -uo pipefail
source scripts/device/unpack.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
modes=${MODES:-uniform-layer,uniform-patch}
for item in "$@"; do
  ckpt=${item%=*} limit=${item#*=}
  start=$(date +%s)
  for cell in 1000:1000 2500:1000 4000:0; do
    left=$(( limit - ($(date +%s) - start) ))
    [ "$left" -gt 30 ] || break
    timeout "$left" python3 benchmarks/budget_study.py --checkpoint "checkpoints/$ckpt" --data-root ../shared/data \
      --out "runs/study/$ckpt" --modes "$modes" --optimizers milp --eps 0,0.5,1,3 --calib "${cell%:*}" \
      --budgets flips --verify "${cell#*:}" --engine naive --device cuda \
      --rules net,flips,paired:0.9,paired:0.99,ucb:0.9 >> "$OUT/$ckpt.log" 2>&1
    echo "$ckpt calib ${cell%:*}: rc $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/$ckpt.log"
  done
  tar czf "$OUT/study-$ckpt.tgz" "runs/study/$ckpt" 2>/dev/null
  tail -3 "$OUT/$ckpt.log"
done
