#!/usr/bin/env bash
# GPU check of the TensorRT and ONNX Runtime GPU paths, from any folder, on a fresh GPU machine:
#
#   benchmarks/gpu_check.sh [BUNDLE] [gpu_check.py options]     # or BUNDLE=... benchmarks/gpu_check.sh
#
# Each part runs, or says why it is skipped (benchmarks/gpu_parts.py):
#   cuda-python  probe_gpu, the Session's non-blocking stream and pinned buffers (cuda-python + a GPU)
#   cuda-graph   a copy captured into a CUDA graph on that stream, replayed
#   ort-cuda     backend ort-cuda (strict) against ort on CPU   (onnxruntime-gpu's CUDA EP + a bundle)
#   ort-trt      backend ort-trt (strict): its cache folders, engines, vs CPU (TensorRT EP + a bundle)
#   tensorrt     benchmarks/gpu_check.py: `mmedge build` of every TensorRT precision (about 20 cold
#                engine builds) into WORK/engines, never the bundle's own engines folder; min cosine per
#                component and ensemble label agreement against ONNX Runtime CPU; p50 / p99 latency
#                next to `ort` (TensorRT + cuda-python + a GPU + a bundle)
# Without a GPU every part is skipped with its reason and the exit status is 0; a part that ran and
# failed makes it 1; a setup problem (mmedge not importable) 2.
#
# Without BUNDLE, a bundle is made into WORK/bundle when a part needs one (a one-epoch digits-match
# training and its export: needs the export extras, else those parts are skipped, saying so).
# Relative paths are taken from the folder you run it in. Needs: pip install -e "REPO[tensorrt-cu12]"
# (or [tensorrt-cu13] on a driver R580+, or JetPack's TensorRT + cuda-python>=12,<13: docs/tensorrt.md);
# without an installed mmedge, the checkout beside this script is used as is.
#
# NOT RUN IN THIS REPOSITORY'S CI OR ON ITS DEVELOPMENT MACHINES: they have no GPU and cannot install
# TensorRT. Nothing here has produced a published figure yet.
#
# Environment: BUNDLE, WORK (~/.cache/mmedge/gpu_check: engines, caches, a made bundle), PYTHON
# (python3), TIMEOUT (2400 s for the tensorrt part), CALIB, SAMPLES (48), ITERS (50), WARMUP (10),
# OPT_LEVEL (2), JSON (gpu_check.py's results file).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
python=${PYTHON:-python3}
absolute() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

bundle=${BUNDLE:-}
if [[ $# -gt 0 && $1 != -* ]]; then bundle=$1; shift; fi
work=$(absolute "${WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/mmedge/gpu_check}")
mkdir -p "$work"

if ! "$python" -c "import mmedge.runtime" 2>/dev/null; then
  # mmedge is not installed: import this checkout through a package folder of links (no install)
  shim="$work/pkg/mmedge"
  mkdir -p "$shim"
  for entry in "$repo"/mmedge/*; do ln -sfn "$entry" "$shim/"; done
  ln -sfn "$repo/export" "$shim/export"
  ln -sfn "$repo/runtime" "$shim/runtime"
  export PYTHONPATH="$work/pkg${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$python" -c "import mmedge.runtime"; then
    echo "error: $python cannot import mmedge.runtime (above); install it: $python -m pip install -e \"$repo[tensorrt-cu12]\"" >&2
    exit 2
  fi
fi

args=(--work "$work" --timeout "${TIMEOUT:-2400}")
[[ -n "$bundle" ]] && args+=(--bundle "$(absolute "$bundle")")
check=(--samples "${SAMPLES:-48}" --iters "${ITERS:-50}" --warmup "${WARMUP:-10}" --opt-level "${OPT_LEVEL:-2}")
[[ -n "${CALIB:-}" ]] && check+=(--calib "$(absolute "$CALIB")")
[[ -n "${JSON:-}" ]] && check+=(--json "$(absolute "$JSON")")
exec "$python" "$here/gpu_parts.py" "${args[@]}" -- "${check[@]}" "$@"
