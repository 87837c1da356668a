#!/usr/bin/env bash
# On a lent GPU (device tool): the ResNet-18 studies of benchmarks/reproduce.py on cuda, each within a
# deadline; their run folders (weights left out) come back as tarballs in $OUT and resume on CPU here.
# Data: byte-exact parts carried over earlier calls into /tmp/cndata (or .xfer/ now), SHA-256 checked.
#   scripts/device/reproduce.sh SECONDS_FOR_MNIST SECONDS_FOR_CIFAR
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p /tmp/cndata
if compgen -G ".xfer/*" > /dev/null; then mv .xfer/* /tmp/cndata/; fi
sums="eed5c1412c9590dd9aaf777cd68d9ccb3baebf3072e4ed905a10357103efe85c  cifar10.npz
094b831e432331f1f6d6829ab9bfff4551410a81e1f816c9cce482d3e9b3ba57  mnist.npz"
if ! (cd ../shared/data 2>/dev/null && echo "$sums" | sha256sum -c --status); then  # never rewrite good copies
  mkdir -p ../shared/data
  cat /tmp/cndata/cifar10.npz.part-* > ../shared/data/cifar10.npz
  cp /tmp/cndata/mnist.npz ../shared/data/
fi
(cd ../shared/data && echo "$sums" | sha256sum -c) || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
i=0
for study in resnet18-mnist-p2 resnet18-cifar10-p2; do
  i=$((i + 1)); limit=${!i}
  start=$(date +%s)
  timeout "$limit" python3 benchmarks/reproduce.py --only "$study" --device cuda > "$OUT/$study.log" 2>&1
  echo "$study: rc $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/$study.log"
  tar czf "$OUT/$study.tgz" --exclude='*.safetensors' --exclude='train_state.pt' "runs/reproduce/$study" 2>/dev/null
  tail -3 "$OUT/$study.log"
done
ls -la "$OUT"
