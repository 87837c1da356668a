#!/usr/bin/env bash
# On a lent GPU (device tool): assemble ../shared/data/cifar10.npz from byte-exact parts carried over
# in earlier calls (kept in /tmp/cndata on the warm machine, or in .xfer/ now), check its SHA-256, then
#   crossneuron train --model resnet18 --dataset cifar10 --epochs EPOCHS --lr 0.1 --device cuda
# and put the checkpoint (weights split in 15 MiB parts: the tool returns files of 16 MiB at most) in $OUT.
#   scripts/device/train_cifar.sh EPOCHS
set -euo pipefail
epochs=$1
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p /tmp/cndata
if compgen -G ".xfer/*" > /dev/null; then mv .xfer/* /tmp/cndata/; fi
root=../shared/data
sum="eed5c1412c9590dd9aaf777cd68d9ccb3baebf3072e4ed905a10357103efe85c  $root/cifar10.npz"
if ! echo "$sum" | sha256sum -c --status 2>/dev/null; then  # never rewrite a good copy (a shared folder)
  mkdir -p "$root" && cat /tmp/cndata/cifar10.npz.part-* > "$root/cifar10.npz"
fi
echo "$sum" | sha256sum -c
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
