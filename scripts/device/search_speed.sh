#!/usr/bin/env bash
# On a lent GPU (device tool): issue 5 and 18 engine benchmarks (naive, fast, batched) on cuda, parts a and b of
# benchmarks/search_speed.py (full-width resnet18-mnist, 1,000 calibration images, p = 2, ones 1-2), each
# within its deadline; logs in $OUT. Data and weights come through unpack.sh.
#   scripts/device/search_speed.sh SECONDS_A SECONDS_B
set -uo pipefail
source scripts/device/unpack.sh || exit 1
args=(--checkpoint checkpoints/resnet18-mnist --data-root ../shared/data --device cuda)
timeout "$1" python3 benchmarks/search_speed.py "${args[@]}" --engines naive,fast,batched 2>&1 | tee "$OUT/speed_a.log"
timeout "$2" python3 benchmarks/search_speed.py "${args[@]}" --targets 200 --engines naive,fast,batched 2>&1 | tee "$OUT/speed_b.log"
