"""Users' samples for ``export_model``: calibration items and the labelled evaluation set.

Either a JSONL file or folder (``docs/data_format.md``; what ``mmedge export --calib`` reads),
or any iterable of raw-input dicts, as ``Session.predict`` takes them::

    {"image": HxWx3 uint8 RGB array | path | PNG bytes, "text": "a caption",
     "audio": float wave at the spec's rate | (wave, rate) | path, "label": "cat"}
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmedge.datasets import MultimodalDataset, load_jsonl
from mmedge.errors import CalibrationError, DataError
from mmedge.export.calibration_reader import load_calibration, take
from mmedge.runtime.modalities import get_modality

__all__ = ["calibration_items", "eval_dataset", "raw_value"]

Items = dict[str, list]
_PATHS = (str, os.PathLike)


def raw_value(sample: Any, modality: str, where: str, rate: int, error: type = CalibrationError) -> Any:
    """One modality of one sample as the preprocessing takes it: RGB uint8, a str, or a mono
    float32 wave at ``rate``.

    Raises:
        ``error``: a sample that is not a dict, lacks the modality, or holds an unreadable value.
    """
    if not isinstance(sample, Mapping):
        raise error(f"{where} is a {type(sample).__name__}; pass dicts such as "
                    "{'image': array, 'text': 'a caption', 'label': 'cat'}")
    if sample.get(modality) is None:
        raise error(f"{where} has no {modality!r} (keys {sorted(sample)}); every sample needs each modality "
                    "the model takes")
    try:
        return get_modality(modality).data.read(sample[modality], rate)
    except Exception as e:  # noqa: BLE001 - InputError and friends, named with the sample
        raise error(f"{where}: cannot read its {modality}: {e}") from e


def calibration_items(calib: Any, modalities: Sequence[str], *, labels: Sequence[str], rate: int,
                      limit: int) -> tuple[Items, str]:
    """Raw calibration items per modality (aligned lists) and where they came from.

    Args:
        calib: A JSONL file or folder, or an iterable of raw-input dicts.
        modalities: The model's modalities.
        labels: The model's labels (coverage warnings of JSONL files).
        rate: The audio spec's sample rate.
        limit: At most this many samples.
    """
    if isinstance(calib, _PATHS):
        items = load_calibration(Path(calib), modalities, labels=labels, rate=rate)
        return take(items, limit), str(calib)
    if calib is None or isinstance(calib, (Mapping, bytes)):
        raise CalibrationError("calib must be a JSONL file or folder, or an iterable of dicts of raw inputs "
                               "(one per sample); got " + type(calib).__name__)
    samples = list(itertools.islice(iter(calib), limit))
    if not samples:
        raise CalibrationError("calib holds no samples; pass real samples of the task (64 or more)")
    items = {m: [raw_value(s, m, f"calibration sample {i}", rate) for i, s in enumerate(samples)] for m in modalities}
    return items, f"{len(samples)} samples passed to export_model"


def eval_dataset(eval_data: Any, modalities: Sequence[str], *, labels: Sequence[str], task: str,
                 rate: int) -> MultimodalDataset | None:
    """The labelled samples evaluated per precision, with ``labels`` as the class order.

    Args:
        eval_data: None (no accuracy report), a JSONL file, a ``MultimodalDataset``, or an
            iterable of raw-input dicts with a ``"label"``. Every row is evaluated.

    Raises:
        DataError: a label that is not one of ``labels``, or an unreadable sample.
    """
    if eval_data is None:
        return None
    if isinstance(eval_data, _PATHS):
        data = load_jsonl(Path(eval_data), labels=labels, task=task)
    elif isinstance(eval_data, MultimodalDataset):
        data = _relabel(eval_data, labels)
    else:
        data = _from_samples(list(eval_data), modalities, labels, task, rate)
    missing = [m for m in modalities if m not in data.modalities]
    if missing:
        raise DataError(f"eval_data has no {missing}; the model takes {list(modalities)}")
    return dataclasses.replace(data, splits={"test": np.arange(len(data), dtype=np.int64)})


def _relabel(data: MultimodalDataset, labels: Sequence[str]) -> MultimodalDataset:
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({data.labels[i] for i in data.y} - set(index))
    if unknown:
        raise DataError(f"eval_data labels {unknown} are not among the model's labels {list(labels)}")
    y = np.array([index[data.labels[i]] for i in data.y], dtype=np.int64)
    return dataclasses.replace(data, labels=tuple(labels), y=y)


def _from_samples(samples: list, modalities: Sequence[str], labels: Sequence[str], task: str,
                  rate: int) -> MultimodalDataset:
    if not samples:
        raise DataError("eval_data holds no samples; pass labelled samples, or None to skip the accuracy report")
    index = {name: i for i, name in enumerate(labels)}
    bad = [i for i, s in enumerate(samples) if not isinstance(s, Mapping) or str(s.get("label")) not in index]
    if bad:
        raise DataError(f"eval_data samples {bad[:5]} have no label among {list(labels)}; give each a 'label'")
    values = {m: [raw_value(s, m, f"eval_data sample {i}", rate, DataError) for i, s in enumerate(samples)]
              for m in modalities}
    y = np.array([index[str(s["label"])] for s in samples], dtype=np.int64)
    return MultimodalDataset(name="eval_data", task=task, labels=tuple(labels), y=y, splits={},
                             images=values.get("image"), texts=values.get("text"), audio=values.get("audio"),
                             audio_rate=rate)
