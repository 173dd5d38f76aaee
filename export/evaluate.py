"""Accuracy of a bundle, measured with the runtime itself (``mmedge.runtime.Session``) on
the held-out split, next to the PyTorch checkpoint on the very same raw inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

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


def score(data, rows: Sequence[int], predict: Callable[[list[int]], tuple[np.ndarray, dict[str, np.ndarray]]]) -> dict[str, Any]:
    """Ensemble and per-member accuracy of ``predict(chunk) -> (labels, {member: labels})`` over ``rows``.

    Returns:
        ``{"ensemble": acc, "members": {name: acc}, "predictions": [int, ...]}``.
    """
    y = np.asarray(data.y)[list(rows)]
    preds, member_preds = [], {}
    for start in range(0, len(rows), BATCH):
        ensemble, members = predict(list(rows[start:start + BATCH]))
        preds.append(ensemble)
        for name, labels in members.items():
            member_preds.setdefault(name, []).append(labels)
    preds_all = np.concatenate(preds)
    return {"ensemble": float((preds_all == y).mean()),
            "members": {n: float((np.concatenate(v) == y).mean()) for n, v in member_preds.items()},
            "predictions": preds_all.tolist()}


def evaluate_bundle(bundle: Path, precision: str, data, rows: Sequence[int], *, threads: int | None = None) -> dict[str, Any]:
    """Accuracy of ``bundle`` at ``precision`` run by ``mmedge.runtime`` (ONNX Runtime, CPU); see ``score``."""
    from mmedge.runtime import Session

    with Session(bundle, precision=precision, backend="ort", threads=threads) as session:
        def predict(chunk: list[int]):
            p = session.predict(**raw_inputs(data, chunk), audio_rate=data.audio_rate)
            return p.indices, {n: probs.argmax(-1) for n, probs in p.member_probabilities.items()}

        return score(data, rows, predict)


def evaluate_torch(model, recipe, data, rows: Sequence[int], tokenizer_file: Path | None) -> dict[str, Any]:
    """The PyTorch ensemble's accuracy on the same rows (same numpy preprocessing); see ``score``."""
    import torch

    from mmedge.features import modality_inputs
    from mmedge.runtime.ensemble import combine

    def predict(chunk: list[int]):
        inputs = {}
        for m in recipe.modalities:
            inputs.update({k: torch.from_numpy(v) for k, v in modality_inputs(data, m, chunk, recipe, tokenizer_file).items()})
        logits = {k: v.numpy() for k, v in model.member_logits(inputs).items()}
        probs = combine(list(logits.values()), method=recipe.ensemble, weights=model.weights, temperatures=model.temperatures)
        return probs.argmax(-1), {n: lg.argmax(-1) for n, lg in logits.items()}

    return score(data, rows, predict)
