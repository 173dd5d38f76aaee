"""Accuracy of a bundle, measured with the runtime itself (``mmedge.runtime.Session``) on
the held-out split, next to the PyTorch checkpoint on the very same raw inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

BATCH = 32


def raw_inputs(data, rows: Sequence[int]) -> dict[str, list]:
    """The raw per-modality inputs of dataset rows, as a user would pass them to ``predict``."""
    out: dict[str, list] = {}
    if data.images is not None:
        out["image"] = [data.images[i] for i in rows]
    if data.texts is not None:
        out["text"] = [data.texts[i] for i in rows]
    if data.audio is not None:
        out["audio"] = [np.asarray(data.audio[i], dtype=np.float32) for i in rows]
    return out


def evaluate_bundle(bundle: Path, precision: str, data, rows: Sequence[int], *, threads: int | None = None) -> dict[str, Any]:
    """Ensemble and per-member accuracy of ``bundle`` at ``precision`` (ONNX Runtime, CPU).

    Returns:
        ``{"ensemble": acc, "members": {name: acc}, "predictions": [int, ...]}``.
    """
    from mmedge.runtime import Session

    y = np.asarray(data.y)[list(rows)]
    preds, member_preds = [], {}
    with Session(bundle, precision=precision, backend="ort", threads=threads) as session:
        for start in range(0, len(rows), BATCH):
            chunk = list(rows[start:start + BATCH])
            p = session.predict(**raw_inputs(data, chunk), audio_rate=data.audio_rate)
            preds.append(p.indices)
            for name, probs in p.member_probabilities.items():
                member_preds.setdefault(name, []).append(probs.argmax(-1))
    preds_all = np.concatenate(preds)
    return {"ensemble": float((preds_all == y).mean()),
            "members": {n: float((np.concatenate(v) == y).mean()) for n, v in member_preds.items()},
            "predictions": preds_all.tolist()}


def evaluate_torch(model, recipe, data, rows: Sequence[int], tokenizer_file: Path | None) -> dict[str, Any]:
    """The PyTorch ensemble's accuracy on the same rows (same numpy preprocessing)."""
    import torch

    from mmedge.features import modality_inputs
    from mmedge.runtime.ensemble import combine

    y = np.asarray(data.y)[list(rows)]
    preds, member_preds = [], {}
    for start in range(0, len(rows), BATCH):
        chunk = list(rows[start:start + BATCH])
        inputs = {}
        for m in recipe.modalities:
            inputs.update({k: torch.from_numpy(v) for k, v in modality_inputs(data, m, chunk, recipe, tokenizer_file).items()})
        logits = {k: v.numpy() for k, v in model.member_logits(inputs).items()}
        probs = combine(list(logits.values()), method=recipe.ensemble, weights=model.weights, temperatures=model.temperatures)
        preds.append(probs.argmax(-1))
        for name, lg in logits.items():
            member_preds.setdefault(name, []).append(lg.argmax(-1))
    preds_all = np.concatenate(preds)
    return {"ensemble": float((preds_all == y).mean()),
            "members": {n: float((np.concatenate(v) == y).mean()) for n, v in member_preds.items()},
            "predictions": preds_all.tolist()}
