#!/usr/bin/env bash
# On a lent GPU (device tool): with the data from unpack.sh (CIFAR-10 in parts over several calls), run
#   crossneuron train --model resnet18 --dataset cifar10 --epochs EPOCHS --lr 0.1 --device cuda
# and put the checkpoint (weights split in 15 MiB parts: the tool returns files of 16 MiB at most) in $OUT.
#   scripts/device/train_cifar.sh EPOCHS
set -euo pipefail
epochs=$1
source scripts/device/unpack.sh
root=../shared/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
out=checkpoints/resnet18-cifar10
rm -rf "$out"
start=$(date +%s)
python3 -m crossneuron train --model resnet18 --dataset cifar10 --epochs "$epochs" --batch-size 128 --lr 0.1 \
  --device cuda --data-root "$root" --out "$out" --quiet 2>&1 | tee "$OUT/train.log"
echo "wall $(( $(date +%s) - start )) s" | tee -a "$OUT/train.log"
cp "$out"/config.json "$out"/meta.json "$out"/metrics.json "$OUT/"
split -b 15M "$out/model.safetensors" "$OUT/model.safetensors.part-"
sha256sum "$out/model.safetensors" | tee "$OUT/model.sha256"
