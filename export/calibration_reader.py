"""Where calibration samples come from: the default set in ``calibration_data/``, a user's
JSONL file or folder (``--calib``), or the training split. Labels are optional."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmedge.errors import CalibrationError, InputError
from mmedge.runtime.modalities import modalities

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "calibration_data"
MIN_SAMPLES = 64
Items = dict[str, list]


def default_calibration_file(dataset: str) -> Path | None:
    """``calibration_data/<dataset>/calib.jsonl`` when the repository ships one."""
    path = DEFAULT_DIR / dataset / "calib.jsonl"
    return path if path.is_file() else None


def load_calibration(path: Path, modalities: Sequence[str], *, labels: Sequence[str] | None = None,
                     rate: int = 16000) -> Items:
    """Raw calibration items per modality from a JSONL file or a folder.

    A JSONL row is ``{"image": "a.png", "text": "...", "audio": "a.wav", "label": "..."}``
    (paths relative to the file; ``label`` optional). A folder holds a ``calib.jsonl`` or
    loose files: images (png/jpg/bmp), audio (wav/flac) and ``*.txt`` (one text per line).

    Raises:
        CalibrationError: the path is missing, or it lacks a modality the model takes.
    """
    path = Path(path)
    if path.is_dir() and (path / "calib.jsonl").is_file():
        path = path / "calib.jsonl"
    if not path.exists():
        raise CalibrationError(f"calibration data {path} does not exist; pass a JSONL file or a folder (--calib)")
    items, found_labels = _read_jsonl(path, rate) if path.is_file() else (_read_folder(path, rate), [])
    missing = [m for m in modalities if not items.get(m)]
    if missing:
        raise CalibrationError(f"calibration data {path} has no {missing} samples but the model takes "
                               f"{list(modalities)}; add them (see calibration_data/README.md)")
    _warn_coverage(path, items, modalities, found_labels, labels)
    return {m: items[m] for m in modalities}


def _read_jsonl(path: Path, rate: int) -> tuple[Items, list[str]]:
    items: Items = {}
    labels = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CalibrationError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        _add_row(items, row, path.parent, f"{path}:{n}", rate)
        if "label" in row:
            labels.append(str(row["label"]))
    return items, labels


def _add_row(items: Items, row: Any, base: Path, where: str, rate: int) -> None:
    if not isinstance(row, dict):
        raise CalibrationError(f"{where}: each line must be a JSON object")
    for record in modalities():
        if row.get(record.name) is None or record.data is None:
            continue
        value = base / str(row[record.name]) if record.data.in_file else row[record.name]
        if record.data.in_file and not value.is_file():
            raise CalibrationError(f"{where}: {record.name} file {value} not found")
        try:
            items.setdefault(record.name, []).append(record.data.read(value, rate))
        except InputError as e:
            raise CalibrationError(f"{where}: cannot read its {record.name}: {e}") from None


def _read_folder(path: Path, rate: int) -> Items:
    """Loose files: each registered modality's files (by suffix), in sorted order."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    items: Items = {}
    for record in (r for r in modalities() if r.data is not None):
        for p in files:
            if p.suffix.lower() in record.data.suffixes:
                items.setdefault(record.name, []).extend(record.data.read_file(p, rate))
    return items


def _warn_coverage(path: Path, items: Items, modalities: Sequence[str], found: list[str], labels) -> None:
    n = min(len(items[m]) for m in modalities)
    if n < MIN_SAMPLES:
        warnings.warn(f"calibration data {path} has only {n} samples of some modality; "
                      f"INT8 ranges from fewer than {MIN_SAMPLES} are unreliable: add more", stacklevel=3)
    if labels and found:
        uncovered = sorted(set(labels) - set(found))
        if uncovered:
            warnings.warn(f"calibration data {path} has no samples labelled {uncovered}; "
                          "activation ranges may miss those classes: add some", stacklevel=3)


def take(items: Items, n: int, seed: int = 0) -> Items:
    """At most ``n`` rows, a deterministic random choice; row i of every modality stays
    together (the heads calibrate on aligned samples)."""
    rows = min(len(v) for v in items.values())
    idx = np.sort(np.random.default_rng(seed).permutation(rows)[:n])
    return {m: [values[i] for i in idx] for m, values in items.items()}
