#!/usr/bin/env bash
# TensorRT check on a machine with an NVIDIA GPU and TensorRT (a Jetson, a workstation):
#
#   benchmarks/gpu_check.sh [BUNDLE]        # default bundles/digits-av
#
# 1. `mmedge build` every TensorRT precision the bundle has (fp32, fp16, int8-trt, int8-fp16-trt),
#    batch 1, into BUNDLE/engines/<device key>/ (reused when up to date);
# 2. checks each engine against ONNX Runtime CPU on the bundle's calibration samples: min cosine
#    per component (vs the same precision's graph, and vs fp32) and ensemble label agreement;
# 3. prints p50 / p99 latency per component and end to end, TensorRT next to `ort` (fp32, int8).
#
# NOT RUN IN THIS REPOSITORY'S CI OR ON ITS DEVELOPMENT MACHINES: they have no GPU and cannot
# install TensorRT. Nothing here has produced a published figure yet; results it prints are
# the first measurement of the TensorRT path. Needs: pip install -e ".[tensorrt]" (or JetPack's
# TensorRT + pip install cuda-python), and a bundle exported elsewhere (`mmedge export`, with
# fp16 / int8-trt / int8-fp16-trt); torch is not needed here. The whole run is capped at 5
# minutes (TIMEOUT): engine builds dominate; OPT_LEVEL trades build time for engine speed.
#
# Overrides (environment): CALIB (the bundle's calibration set), SAMPLES (48), ITERS (50),
# WARMUP (10), OPT_LEVEL (2), ENGINE_DIR (BUNDLE/engines), JSON (no file), TIMEOUT (290 s).
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${1:-bundles/digits-av}
if [[ ! -e "$BUNDLE" ]]; then
  echo "error: no bundle at $BUNDLE; export one (mmedge export CKPT -o $BUNDLE --precision fp32,fp16,int8,int8-trt,int8-fp16-trt) and copy it here" >&2
  exit 2
fi
python - <<'PY' || exit 2
from mmedge.export.engine_build import require_tensorrt
from mmedge.errors import BackendUnavailable
try:
    require_tensorrt()
except BackendUnavailable as e:
    raise SystemExit(f"error: {e}")
PY

exec timeout "${TIMEOUT:-290}" python benchmarks/gpu_check.py "$BUNDLE" \
  --samples "${SAMPLES:-48}" --iters "${ITERS:-50}" --warmup "${WARMUP:-10}" --opt-level "${OPT_LEVEL:-2}" \
  ${CALIB:+--calib "$CALIB"} ${ENGINE_DIR:+--engine-dir "$ENGINE_DIR"} ${JSON:+--json "$JSON"}
