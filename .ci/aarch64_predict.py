"""The aarch64 smoke test's two halves: predictions of a bundle, and their comparison.

    python aarch64_predict.py predict BUNDLE OUT.json [--precisions fp32,int8,fp16]   # x86, and arm64 under qemu
    python aarch64_predict.py compare X86.json ARM.json                                # exit 1 on a wrong prediction

Inputs are the first rows of the repository's digits-match calibration set (real images and
captions). Besides the ensemble's probabilities, the pooled text features (``encode_texts``) are
compared. Only numpy and the torch-free runtime are imported.
"""
from __future__ import annotations

import json
import os
import platform
import sys

import numpy as np

ROWS = "calibration_data/digits-match/calib.jsonl"  # real images and captions (the repository's own)
SAMPLES = 12
# max |probability difference| vs x86 per precision: fp16 is computed natively on ARM, int8 kernels differ
TOLERANCE = {"fp32": 5e-4, "int8": 2e-2, "fp16": 3e-2}
SPREAD_FRACTION = 0.25  # ... and at most this fraction of how far x86's probabilities vary over the rows
MIN_COSINE = {"fp32": 0.9999, "int8": 0.999, "fp16": 0.999}  # pooled text features, x86 vs aarch64
MARGIN = 0.05  # a label must match wherever x86's top-two probabilities are further apart than this


def _rows() -> tuple[list[str], list[str]]:
    folder = os.path.dirname(os.path.abspath(ROWS))
    rows = [json.loads(line) for line in open(ROWS)][:SAMPLES]
    return [os.path.join(folder, r["image"]) for r in rows], [r["text"] for r in rows]


def predict(bundle: str, out: str, precisions: list[str]) -> None:
    from mmedge.runtime import Bundle, Session

    available = Bundle.open(bundle).precisions()
    result = {"machine": platform.machine(), "precisions": {}}
    images, texts = _rows()
    for precision in [p for p in precisions if p in available]:
        with Session(bundle, precision=precision, backend="ort", threads=2) as session:
            pred = session.predict(image=images, text=texts)
            pooled = next(v for k, v in session.encode_texts(texts).items() if k.endswith("pooled"))
            result["precisions"][precision] = {"labels": list(pred.labels),
                                               "probabilities": pred.probabilities.astype(float).tolist(),
                                               "text_pooled": pooled.astype(float).tolist()}
    with open(out, "w") as f:
        json.dump(result, f)
    print(f"{platform.machine()}: predicted {sorted(result['precisions'])} -> {out}")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def _check(precision: str, ref: dict, got: dict) -> str | None:
    p_ref, p_arm = np.array(ref["probabilities"]), np.array(got["probabilities"])
    diff = float(np.abs(p_ref - p_arm).max())
    limit = min(TOLERANCE[precision], SPREAD_FRACTION * float((p_ref.max(0) - p_ref.min(0)).max()))
    top2 = np.sort(p_ref, axis=1)[:, -2:]
    wrong = [i for i, (a, b) in enumerate(zip(ref["labels"], got["labels"]))
             if a != b and top2[i, 1] - top2[i, 0] > MARGIN]
    cosine = _cosine(np.array(ref["text_pooled"]), np.array(got["text_pooled"]))
    print(f"{precision}: max |p_x86 - p_arm| = {diff:.2e} (limit {limit:.2e}), text feature cosine {cosine:.6f} "
          f"(min {MIN_COSINE[precision]}), labels {got['labels']}")
    if diff > limit or wrong or cosine < MIN_COSINE[precision]:
        return f"{precision}: probabilities off by {diff:.2e}, labels differ in rows {wrong}, cosine {cosine:.6f}"
    return None


def compare(x86_file: str, arm_file: str) -> int:
    x86, arm = (json.load(open(f)) for f in (x86_file, arm_file))
    failures = [] if arm["machine"] == "aarch64" else [f"the second file was made on {arm['machine']!r}"]
    if not x86["precisions"]:
        failures.append("no precision was predicted on x86")
    for precision, ref in x86["precisions"].items():
        got = arm["precisions"].get(precision)
        problem = f"{precision}: no aarch64 predictions" if got is None else _check(precision, ref, got)
        if problem:
            failures.append(problem)
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["predict"]:
        precisions = sys.argv[5].split(",") if len(sys.argv) > 5 else ["fp32", "int8", "fp16"]
        predict(sys.argv[2], sys.argv[3], precisions)
    elif sys.argv[1:2] == ["compare"]:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
