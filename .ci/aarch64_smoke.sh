#!/usr/bin/env bash
# The torch-free runtime on linux/aarch64 (a Jetson's CPU architecture), under qemu-user-static:
# no binfmt_misc and no chroot (docs/robotics.md, "On a Jetson (JetPack 6)").
#   1. x86: a small bundle (fp32, int8, fp16) from a short digits-match training, unless BUNDLE is given;
#   2. an arm64 CPython 3.11 unpacked from Debian's arm64 packages into ROOT (dpkg-deb -x, nothing installed);
#   3. the runtime's aarch64 wheels (glibc <= 2.35, as on JetPack 6) and mmedge's own wheel, in SITE;
#   4. the same inputs predicted on x86 and on aarch64 (QEMU_CPU=neoverse-n1, about an Orin), compared:
#      a wrong label or a probability off by more than the precision's tolerance fails (.ci/aarch64_predict.py).
# Env: BUNDLE (skip step 1), AARCH64_CACHE (default /tmp/mmedge-aarch64: ROOT, SITE and the bundle stay
# there between runs), PYTHON (the x86 python with mmedge[export], default python).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
cache=${AARCH64_CACHE:-/tmp/mmedge-aarch64}
root=$cache/root
site=$cache/site
start=$SECONDS
mkdir -p "$cache"
export DEBIAN_FRONTEND=noninteractive

if ! command -v qemu-aarch64-static >/dev/null; then
  apt-get install -y -qq qemu-user-static >/dev/null
fi

if [ ! -x "$root/usr/bin/python3.11" ]; then
  added=0
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64 && added=1
  fi
  apt-get update -qq
  pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
         --no-enhances python3.11-minimal:arm64 libpython3.11-stdlib:arm64 libstdc++6:arm64 libgcc-s1:arm64 \
         | grep -v '^ ' | grep ':arm64$' | grep -v '^<' | grep -vE '^(dpkg|tar|install-info):' | sort -u)
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download $pkgs 2>/dev/null)
  mkdir -p "$root"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$root"; done
  rm -rf "$debs"
  if [ "$added" -eq 1 ]; then
    dpkg --remove-architecture arm64 && apt-get update -qq
  fi
fi
# onnxruntime reads /proc/cpuinfo at import and crashes on an x86 one under qemu 7.2: give it an ARM one
# (qemu's -L prefix redirects absolute paths into ROOT).
mkdir -p "$root/proc"
for i in 0 1; do
  printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' "$i"
done > "$root/proc/cpuinfo"

platforms=""
for tag in manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_28_aarch64 manylinux_2_31_aarch64 \
           manylinux_2_34_aarch64 manylinux_2_35_aarch64; do
  platforms="$platforms --platform $tag"
done
if [ ! -d "$site/onnxruntime" ]; then
  "$python" -m pip install -q --disable-pip-version-check --target "$site" --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 $platforms "numpy>=1.24,<3" "onnxruntime>=1.18,<2" \
    "opencv-python-headless>=4.8,<6" "tokenizers>=0.15,<1"
fi
wheels=$(mktemp -d)
"$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$wheels" .
rm -rf "$site/mmedge" "$site"/mmedge-*.dist-info
"$python" -m pip install -q --disable-pip-version-check --no-deps --target "$site" "$wheels"/mmedge-*.whl
rm -rf "$wheels"
echo "aarch64 python and wheels ready in $((SECONDS - start)) s"

bundle=${BUNDLE:-}
if [ -z "$bundle" ]; then
  bundle=$cache/bundle
  if [ ! -f "$bundle/manifest.json" ]; then
    rm -rf "$cache/run" "$bundle"
    "$python" -m mmedge train --recipe digits-match --subset 60 --epochs 1 -o "$cache/run" >/dev/null
    "$python" -m mmedge export "$cache/run" -o "$bundle" --precision fp32,int8,fp16 --calib-samples 32 \
      --eval-samples 20 >/dev/null
  fi
fi
"$python" .ci/aarch64_predict.py predict "$bundle" "$cache/x86.json"
QEMU_CPU=neoverse-n1 PYTHONPATH="$site" MMEDGE_CACHE_DIR="$cache/mmedge-cache" \
  qemu-aarch64-static -L "$root" "$root/usr/bin/python3.11" .ci/aarch64_predict.py predict "$bundle" "$cache/arm.json"
"$python" .ci/aarch64_predict.py compare "$cache/x86.json" "$cache/arm.json"
echo "aarch64 smoke test passed in $((SECONDS - start)) s"
