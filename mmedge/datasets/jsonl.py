"""Users' own datasets: one JSON object per line (see ``docs/data_format.md``).

``{"image": "a.jpg", "text": "...", "audio": "a.wav", "label": "cat", "split": "train"}``
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmedge.datasets.base import SPLIT_NAMES, MultimodalDataset, expand_groups, stratified_split
from mmedge.errors import DataError, InputError
from mmedge.runtime.modalities import modality_names

__all__ = ["load_jsonl", "AUDIO_RATE", "JSONL_SPLIT_FRACTIONS"]

AUDIO_RATE = 16000
JSONL_SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
_TASKS = ("classification", "matching")


def load_jsonl(
    path, *, labels: Sequence[str] | None = None, seed: int = 0, task: str = "classification"
) -> MultimodalDataset:
    """Loads a JSONL dataset: images as RGB uint8, audio as 16 kHz mono float32.

    Args:
        path: The ``.jsonl`` file; image/audio paths in it are relative to its folder.
        labels: The valid class names, in order; by default the sorted unique labels.
        seed: Fixes the 70/15/15 stratified split made when no row has a "split" (by "source"
            when rows have one: a source's rows stay in one split).
        task: "classification" or "matching".

    Raises:
        DataError: The file or a row is invalid; the message names the line and the fix.
    """
    path = Path(path)
    if task not in _TASKS:
        raise DataError(f"unknown task {task!r}; valid tasks: {', '.join(_TASKS)}")
    if not path.is_file():
        raise DataError(f"JSONL file not found: {path}; check the path")
    rows = _read_rows(path)
    mods = _check_modalities(path, rows)
    label_names = _label_names(path, rows, labels)
    index = {name: i for i, name in enumerate(label_names)}
    y = np.array([index[str(row["label"])] for _, row in rows], dtype=np.int64)
    source = _sources(rows)
    splits = _splits(path, rows, y, seed, source)
    loaded = {m: [_load_value(path, n, row, m) for n, row in rows] for m in mods}
    meta = {"line": np.array([n for n, _ in rows], dtype=np.int64)}
    if source is not None:
        meta["source"] = source
    return MultimodalDataset(
        name=path.stem, task=task, labels=label_names, y=y, splits=splits,
        images=loaded.get("image"), texts=loaded.get("text"), audio=loaded.get("audio"),
        audio_rate=AUDIO_RATE, meta=meta,
    )


def _sources(rows) -> np.ndarray | None:
    """Each row's "source" as an int code (a row without one is its own source); None if no row has one."""
    given = [row.get("source") for _, row in rows]
    if all(s is None for s in given):
        return None
    keys = [f"v:{s}" if s is not None else f"row:{i}" for i, s in enumerate(given)]
    return np.unique(np.array(keys), return_inverse=True)[1].astype(np.int64)


def _where(path: Path, line: int) -> str:
    return f"{path}, line {line}"


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{_where(path, n)}: invalid JSON ({exc.msg}); write one JSON object "
                            "per line, e.g. {\"image\": \"a.png\", \"label\": \"cat\"}") from None
        if not isinstance(row, dict):
            raise DataError(f"{_where(path, n)}: expected a JSON object, got {type(row).__name__}; "
                            "write one object per line")
        if "label" not in row or row["label"] is None:
            raise DataError(f"{_where(path, n)}: missing \"label\"; add the row's class name")
        rows.append((n, row))
    if not rows:
        raise DataError(f"{path} has no rows; write one JSON object per line")
    return rows


def _row_modalities(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(m for m in modality_names() if row.get(m) is not None)


def _check_modalities(path: Path, rows) -> tuple[str, ...]:
    first_line, first = rows[0]
    mods = _row_modalities(first)
    for n, row in rows:
        here = _row_modalities(row)
        if not here:
            raise DataError(f"{_where(path, n)}: no modality; give at least one of "
                            f"{', '.join(map(repr, modality_names()))}")
        if here != mods:
            raise DataError(f"{_where(path, n)}: has modalities {list(here)} but line {first_line} has "
                            f"{list(mods)}; every row must have the same set")
    return mods


def _label_names(path: Path, rows, labels: Sequence[str] | None) -> tuple[str, ...]:
    names = tuple(labels) if labels is not None else tuple(sorted({str(r["label"]) for _, r in rows}))
    if labels is not None:
        valid = set(names)
        for n, row in rows:
            if str(row["label"]) not in valid:
                raise DataError(f"{_where(path, n)}: label {row['label']!r} is not one of the valid "
                                f"labels: {', '.join(names)}; fix the row or the labels= list")
    present = {str(r["label"]) for _, r in rows}
    if len(names) < 2 or len(present) < 2:
        raise DataError(f"{path}: found {len(present)} class(es) ({', '.join(sorted(present))}); "
                        "a dataset needs at least 2 classes: add rows of another class")
    return names


def _splits(path: Path, rows, y: np.ndarray, seed: int, source: np.ndarray | None) -> dict[str, np.ndarray]:
    given = [row.get("split") for _, row in rows]
    if all(s is None for s in given):
        rng = np.random.default_rng([seed, 3003])
        if source is None:
            return stratified_split(y, JSONL_SPLIT_FRACTIONS, rng)
        first = np.unique(source, return_index=True)[1]  # a source's split is stratified by its first row's label
        return expand_groups(stratified_split(y[first], JSONL_SPLIT_FRACTIONS, rng), source)
    for (n, _), s in zip(rows, given):
        if s is None:
            raise DataError(f"{_where(path, n)}: no \"split\" while other rows have one; "
                            "give every row a split, or none (a 70/15/15 split is then made)")
        if s not in SPLIT_NAMES:
            raise DataError(f"{_where(path, n)}: unknown split {s!r}; valid splits: {', '.join(SPLIT_NAMES)}")
    names = np.array(given)
    return {s: np.nonzero(names == s)[0].astype(np.int64) for s in SPLIT_NAMES}


def _load_value(path: Path, n: int, row: dict[str, Any], modality: str):
    """A row's value of ``modality`` as datasets hold it (its record's ``data`` format)."""
    from mmedge.runtime.modalities import get_modality

    fmt, value = get_modality(modality).data, row[modality]
    if fmt.in_file:
        if not isinstance(value, str):
            raise DataError(f"{_where(path, n)}: \"{modality}\" must be a file path string")
        value = (path.parent / value).resolve()
        if not value.is_file():
            raise DataError(f"{_where(path, n)}: {modality} file not found: {value}; "
                            "paths are relative to the JSONL file's folder")
    try:
        return fmt.read(value, AUDIO_RATE)
    except InputError as exc:
        raise DataError(f"{_where(path, n)}: cannot read {modality} {str(value)[:200]}: {exc}") from None
