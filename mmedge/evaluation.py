"""The one evaluation layer: raw inputs of dataset rows, the scorer, and the PyTorch reference.

Export's accuracy report, the bench and the tests all score a bundle and its PyTorch
checkpoint through these, on the very same raw inputs:

- ``raw_inputs``: dataset rows -> the keyword arguments a user passes to ``Session.predict``;
- ``score``: ensemble and per-member accuracy of any ``predict(rows) -> (probs, members)``;
- ``TorchReference``: the checkpoint's ensemble (``MultimodalEnsemble.predict``) behind the
  runtime's own numpy preprocessing, timed per stage like the runtime;
- ``session_predictor``: the same ``predict(rows)`` for a ``mmedge.runtime.Session``.

Importing this module does not import torch; ``TorchReference`` does when it is built.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["BATCH", "Predict", "raw_inputs", "label_targets", "score", "session_predictor", "evaluate_bundle",
           "TorchReference"]

BATCH = 32
# predict(rows) -> (ensemble probabilities (B, C), {member: probabilities (B, C)})
Predict = Callable[[Sequence[int]], tuple[np.ndarray, Mapping[str, np.ndarray]]]


def raw_inputs(data: Any, rows: Sequence[int], modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """The raw inputs of dataset ``rows`` as ``Session.predict`` keyword arguments.

    Args:
        data: A ``MultimodalDataset``.
        rows: Row indices.
        modalities: Keep only these (default: every modality the dataset has).

    Returns:
        ``{"image": [HxWx3 uint8], "text": [str], "audio": [float32 wave], "audio_rate": int}``,
        each present only when the dataset has that modality.
    """
    values = {"image": data.images, "text": data.texts, "audio": data.audio}
    wanted = tuple(values) if modalities is None else tuple(modalities)
    out: dict[str, Any] = {m: [values[m][i] for i in rows] for m in wanted if values.get(m) is not None}
    if "audio" in out:
        out["audio"] = [np.asarray(w, dtype=np.float32) for w in out["audio"]]
        out["audio_rate"] = int(data.audio_rate)
    return out


def label_targets(data: Any, labels: Sequence[str]) -> np.ndarray:
    """Each row's class index in ``labels`` (a bundle's label order), for ``score``.

    Raises:
        DataError: a dataset label that ``labels`` lacks.
    """
    from mmedge.errors import DataError

    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({data.labels[i] for i in data.y} - set(index))
    if unknown:
        raise DataError(f"dataset labels {unknown} are not among the bundle's labels {list(labels)}")
    return np.array([index[data.labels[i]] for i in data.y], dtype=np.int64)


def score(predict: Predict, rows: Sequence[int], targets: np.ndarray, *, batch: int = BATCH) -> dict[str, Any]:
    """Ensemble and per-member accuracy of ``predict`` over ``rows``, in chunks of ``batch``.

    Args:
        predict: ``predict(rows) -> (probs, {member: probs})``.
        rows: Row indices to score.
        targets: The true class index of every row (indexed by row).

    Returns:
        ``{"samples", "ensemble", "members": {name: acc}, "predictions": [label index per row]}``.
    """
    rows = [int(r) for r in rows]
    preds, member_hits = [], {}
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        probs, members = predict(chunk)
        preds.append(np.asarray(probs).argmax(axis=-1))
        for name, p in members.items():
            member_hits[name] = member_hits.get(name, 0) + int((np.asarray(p).argmax(-1) == targets[chunk]).sum())
    predicted = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    n = max(len(rows), 1)
    return {"samples": len(rows), "ensemble": float((predicted == targets[rows]).sum() / n),
            "members": {k: v / n for k, v in member_hits.items()}, "predictions": predicted.tolist()}


def session_predictor(session: Any, data: Any) -> Callable[[Sequence[int]], Any]:
    """``predict(rows) -> Prediction`` of a runtime ``Session`` on the raw inputs of ``rows``."""
    modalities = session.bundle.modalities
    return lambda rows: session.predict(**raw_inputs(data, rows, modalities))


def evaluate_bundle(bundle: Path, precision: str, data: Any, rows: Sequence[int], *,
                    threads: int | None = None, backend: str = "ort") -> dict[str, Any]:
    """Accuracy of ``bundle`` at ``precision`` run by ``mmedge.runtime`` on ``backend`` (ONNX Runtime's CPU
    backend by default); see ``score``."""
    from mmedge.runtime import Session

    with Session(bundle, precision=precision, backend=backend, threads=threads, text_cache_size=0) as session:
        run = session_predictor(session, data)

        def predict(chunk: Sequence[int]):
            pred = run(chunk)
            return pred.probabilities, pred.member_probabilities

        return score(predict, rows, label_targets(data, session.bundle.labels))


class TorchReference:
    """The PyTorch ensemble behind the runtime's numpy preprocessing, timed stage by stage.

    Args:
        model: A ``MultimodalEnsemble``.
        tokenizer_file: The checkpoint's ``tokenizer.json`` (text recipes).
        threads: ``torch.set_num_threads`` (None: leave torch's setting).
        compile: Wrap every encoder and head in ``torch.compile`` (static shapes: each batch
            size compiles once, on its first call).
        length_bucket: Pad text as a ``Session`` does (``Session.length_buckets["text"]``: the
            batch's longest, rounded up to a multiple of it); 0: to the spec's full length.
    """

    def __init__(self, model: Any, tokenizer_file: Path | None, *, threads: int | None = None,
                 compile: bool = False, length_bucket: int = 0) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(int(threads))
        self.model = model.eval()
        if compile:
            for modules in (self.model.encoders, self.model.heads):
                for name in list(modules):
                    modules[name] = torch.compile(modules[name], dynamic=False)
        self.recipe = model.recipe
        self.tokenizer_file = tokenizer_file
        self.length_bucket = int(length_bucket)

    @classmethod
    def from_checkpoint(cls, checkpoint: Path, *, threads: int | None = None, compile: bool = False,
                        length_bucket: int = 0, drop_unused: bool = False) -> "TorchReference":
        """Loads a ``mmedge train`` checkpoint folder; ``meta`` holds its metadata. ``drop_unused``: the
        model as its bundle runs it (members of weight 0 left out: ``load_checkpoint``)."""
        from mmedge.checkpoint import TOKENIZER_FILE, load_checkpoint

        model, meta = load_checkpoint(Path(checkpoint), drop_unused=drop_unused)
        tokenizer = Path(checkpoint) / TOKENIZER_FILE
        ref = cls(model, tokenizer if tokenizer.is_file() else None, threads=threads, compile=compile,
                  length_bucket=length_bucket)
        ref.meta = meta
        return ref

    def predict(self, data: Any, rows: Sequence[int]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
        """Ensemble probabilities (B, C), member probabilities, and per-stage milliseconds."""
        import torch

        from mmedge.features import modality_inputs

        t0, timings, inputs = time.perf_counter(), {}, {}
        for m in self.model.used_modalities():
            start = time.perf_counter()
            arrays = modality_inputs(data, m, rows, self.recipe, self.tokenizer_file, length_bucket=self.length_bucket)
            inputs.update({k: torch.from_numpy(v) for k, v in arrays.items()})
            timings[f"preprocess.{m}"] = (time.perf_counter() - start) * 1000.0
        probs, members = self.model.predict(inputs, timings=timings)
        timings["total"] = (time.perf_counter() - t0) * 1000.0
        return probs, members, timings

    def predictor(self, data: Any) -> Predict:
        """``predict(rows) -> (probs, members)`` for ``score``."""
        return lambda rows: self.predict(data, rows)[:2]
