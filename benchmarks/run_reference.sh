#!/usr/bin/env bash
# The reference comparison on the default bundle: runtime fp32 / int8 / mixed on ONNX Runtime (and
# OpenVINO where installed) vs PyTorch eager and torch.compile (timed alone in their own process,
# interleaved with each other), the ensemble vs its most accurate member on validation
# (interleaved), batch 1 and 8, warm-up excluded; the runtime again beside a numpy load; resident
# memory and first prediction of each precision in a fresh torch-free process. Fair baselines
# (docs/backends.md): one BLAS thread and the runtime's text padding on both sides, each side's
# threads recorded, configurations with p90/p50 > 1.3 flagged as disturbed.
#
#   benchmarks/run_reference.sh   # writes benchmarks/results.json, benchmarks/latency.png, benchmarks/RESULTS.md
#
# Overrides (environment): BUNDLE (bundles/digits-av), CHECKPOINT (runs/digits-av),
# THREADS (2, as the measurements in docs/quantization_notes.md), ITERS (100), WARMUP (10), BATCH (1,8),
# PRECISIONS (the bundle's fp32/int8/mixed that are "ok"), ACCURACY_SAMPLES (200),
# BACKENDS (auto, ort, plus openvino when it is installed; auto is timed where it differs from
# both: mixed with graphs export placed on OpenVINO), COMPILE (1: also torch.compile; 0: eager only,
# for a shared machine where inductor's compilation takes most of an hour), BACKGROUND (1: --background-load),
# DATA (only if the bundle's manifest does not name its dataset).
# Run it on an otherwise idle machine: other processes skew every absolute number
# (the interleaved ratios suffer less).
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${BUNDLE:-bundles/digits-av}
CHECKPOINT=${CHECKPOINT:-runs/digits-av}
THREADS=${THREADS:-2}
ITERS=${ITERS:-100}
WARMUP=${WARMUP:-10}
BATCH=${BATCH:-1,8}
ACCURACY_SAMPLES=${ACCURACY_SAMPLES:-200}
COMPILE=${COMPILE:-1}
BACKGROUND=${BACKGROUND:-1}
if [[ -z "${BACKENDS:-}" ]]; then
  BACKENDS=$(python -c "import importlib.util; print('auto,ort,openvino' if importlib.util.find_spec('openvino') else 'auto,ort')")
fi

if [[ ! -d "$CHECKPOINT" ]]; then
  echo "error: no checkpoint at $CHECKPOINT; train it first: mmedge train --recipe digits-av -o $CHECKPOINT" >&2
  exit 2
fi
if [[ ! -e "$BUNDLE" ]]; then
  echo "error: no bundle at $BUNDLE; export it first from $CHECKPOINT with mmedge export (see mmedge export --help)" >&2
  exit 2
fi
if [[ -z "${PRECISIONS:-}" ]]; then
  PRECISIONS=$(python -c "import sys; from mmedge.runtime import Bundle
ok = Bundle.open(sys.argv[1]).precisions()
print(','.join(p for p in ('fp32', 'int8', 'mixed') if p in ok))" "$BUNDLE")
fi

# Same thread count for ONNX Runtime and torch, and recorded in the JSON's environment.env.
export OMP_NUM_THREADS="$THREADS"

mmedge bench "$BUNDLE" \
  --precision "$PRECISIONS" --backend "$BACKENDS" --batch "$BATCH" \
  --iters "$ITERS" --warmup "$WARMUP" --threads "$THREADS" \
  --baseline torch-process $([[ "$COMPILE" == 1 ]] && echo --torch-compile) --checkpoint "$CHECKPOINT" \
  $([[ "$BACKGROUND" == 1 ]] && echo --background-load) \
  --accuracy-samples "$ACCURACY_SAMPLES" --members-compare \
  ${DATA:+--data "$DATA"} \
  --json benchmarks/results.json --plot benchmarks/latency.png

# RESULTS.md is generated from the JSON, never edited by hand.
python benchmarks/make_results.py
