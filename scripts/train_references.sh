#!/usr/bin/env bash
# Train the reference checkpoints of checkpoints/README.md, one after another, each resumable:
# re-running the script continues an interrupted training and skips finished ones.
#   nohup scripts/train_references.sh [NAME ...] > train_references.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${CROSSNEURON_DATA:-../shared/data}"
run() {  # name, then crossneuron train options
  local name=$1; shift
  if [ "$#" -gt 0 ] && [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  if [ -f "checkpoints/$name/metrics.json" ]; then echo "$name: done"; return; fi
  local resume=""  # an unfinished folder resumes (a kill may leave meta.json before train_state.pt)
  if [ -f "checkpoints/$name/train_state.pt" ] || [ -f "checkpoints/$name/meta.json" ]; then resume="--resume"; fi
  echo "$name: training ($(date -u +%FT%TZ))"
  /usr/bin/time -f "$name: %e s wall" .venv/bin/crossneuron train "$@" --data-root "$DATA" --out "checkpoints/$name" $resume --quiet
}
ONLY="${*:-}"
run resnet18-w0.25-fashion-mnist --model resnet18 --width 0.25 --dataset fashion-mnist --epochs 8 --batch-size 128 --lr 0.05
run resnet18-mnist --model resnet18 --dataset mnist --epochs 1 --batch-size 128 --lr 0.05
run resnet18-fashion-mnist --model resnet18 --dataset fashion-mnist --epochs 1 --batch-size 128 --lr 0.05
run alexnet-cifar10 --model alexnet --dataset cifar10 --epochs 10 --batch-size 128 --lr 0.02
# trained on a lent GPU (scripts/device/train_cifar.sh); pass DEVICE=cuda where one is local
run resnet18-cifar10 --model resnet18 --dataset cifar10 --epochs 40 --batch-size 128 --lr 0.1 --device "${DEVICE:-cpu}"
