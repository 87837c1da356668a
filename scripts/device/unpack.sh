#!/usr/bin/env bash
# On a lent GPU (device tool), sourced by the other scripts here: what earlier calls carried in .xfer/
# (byte-exact parts of the data files, checkpoint weights as <checkpoint>.safetensors, and SHA256SUMS
# made here by `sha256sum`) is kept in /tmp/cndata on the warm machine; this puts the data files in
# ../shared/data and the weights in checkpoints/<checkpoint>/, never rewriting a copy whose SHA-256 is
# already right (a shared folder), and stops unless every file named in SHA256SUMS checks.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p /tmp/cndata ../shared/data
if compgen -G ".xfer/*" > /dev/null; then mv .xfer/* /tmp/cndata/; fi
good() { grep " $2\$" /tmp/cndata/SHA256SUMS | sed "s#  .*#  $1#" | sha256sum -c --status 2>/dev/null; }
for name in cifar10.npz mnist.npz; do
  grep -q " $name\$" /tmp/cndata/SHA256SUMS 2>/dev/null || continue
  good "../shared/data/$name" "$name" && continue
  if compgen -G "/tmp/cndata/$name.part-*" > /dev/null; then cat /tmp/cndata/"$name".part-* > "../shared/data/$name"
  else cp "/tmp/cndata/$name" "../shared/data/$name"; fi
  good "../shared/data/$name" "$name" || { echo "unpack: $name does not check"; exit 1; }
done
for weights in /tmp/cndata/*.safetensors; do
  [ -e "$weights" ] || continue
  name=$(basename "$weights" .safetensors)
  cp "$weights" "checkpoints/$name/model.safetensors"
  good "checkpoints/$name/model.safetensors" "$name.safetensors" || { echo "unpack: $name weights do not check"; exit 1; }
done
echo "unpack: $(grep -c . /tmp/cndata/SHA256SUMS) files check"
