"""The in-memory dataset type, the dataset registry, splitting and caching helpers."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmedge.atomic import atomic_file
from mmedge.errors import DataError
from mmedge.registry import Registry

__all__ = [
    "MultimodalDataset",
    "DATASETS",
    "build_dataset",
    "list_datasets",
    "default_cache_dir",
    "stratified_split",
    "dataset_digest",
    "GROUP_META",
    "row_groups",
]

SPLIT_NAMES = ("train", "val", "test")
# meta keys that group rows, in order: "clip" (the voice setting that spoke the row's audio: test voices
# are unseen in training), "source" (the source image a row was made from). Ensemble selection's folds
# hold out whole groups of the first key present and fit on no row sharing any key's value with them.
GROUP_META = ("clip", "source")


@dataclass
class MultimodalDataset:
    """Aligned rows of images, texts and audio clips with one label each.

    Attributes:
        name: Dataset name ("digits-av", a JSONL file stem...).
        task: "classification" or "matching".
        labels: Class names; ``("no_match", "match")`` for matching.
        y: (N,) int64 indices into ``labels``.
        splits: "train"/"val"/"test" -> int64 row indices (disjoint, covering all rows).
        images: (N,H,W,3) uint8 RGB array, or a list of HxWx3 uint8 RGB arrays, or None.
        texts: N strings, or None.
        audio: (N,T) float32 array or a list of mono float32 clips at ``audio_rate``, or None.
        audio_rate: Sample rate of ``audio`` in Hz.
        meta: Optional per-row extras, each an (N,) array (e.g. "source", "snr_db"). The keys of
            ``GROUP_META`` group rows (one voice, one source image): ensemble selection's
            cross-validation keeps each group on one side of a fold (``row_groups``).
    """

    name: str
    task: str
    labels: tuple[str, ...]
    y: np.ndarray
    splits: dict[str, np.ndarray]
    images: np.ndarray | list[np.ndarray] | None = None
    texts: list[str] | None = None
    audio: list[np.ndarray] | np.ndarray | None = None
    audio_rate: int = 16000
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities present, in the order image, text, audio."""
        from mmedge.runtime.modalities import modality_names

        present = {"image": self.images, "text": self.texts, "audio": self.audio}
        return tuple(m for m in modality_names() if present.get(m) is not None)

    def __len__(self) -> int:
        return int(len(self.y))

    def subset(self, idx: Sequence[int] | np.ndarray) -> "MultimodalDataset":
        """Returns the rows ``idx`` (in that order) as a new dataset.

        Splits are remapped to the new row numbers and restricted to the rows kept.

        Args:
            idx: Row indices (ints) or a boolean mask of length N.
        """
        idx = _as_index(idx, len(self))
        new_pos = np.full(len(self), -1, dtype=np.int64)
        new_pos[idx] = np.arange(len(idx), dtype=np.int64)
        splits = {}
        for name, rows in self.splits.items():
            kept = np.isin(idx, rows)
            splits[name] = np.nonzero(kept)[0].astype(np.int64)
        return MultimodalDataset(
            name=self.name, task=self.task, labels=self.labels, y=self.y[idx],
            splits=splits, images=_take(self.images, idx), texts=_take(self.texts, idx),
            audio=_take(self.audio, idx), audio_rate=self.audio_rate,
            meta={k: v[idx] for k, v in self.meta.items()},
        )

    def split(self, name: str) -> "MultimodalDataset":
        """Returns the rows of split ``name`` ("train", "val" or "test").

        Raises:
            DataError: ``name`` is not one of this dataset's splits.
        """
        if name not in self.splits:
            raise DataError(
                f"dataset {self.name!r} has no split {name!r}; valid splits: "
                f"{', '.join(self.splits)}"
            )
        return self.subset(self.splits[name])


def _as_index(idx: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise DataError(f"boolean mask has shape {arr.shape}, expected ({n},)")
        return np.nonzero(arr)[0].astype(np.int64)
    arr = arr.astype(np.int64).reshape(-1)
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise DataError(f"row index out of range for a dataset of {n} rows")
    return np.where(arr < 0, arr + n, arr)


def _take(values, idx: np.ndarray):
    if values is None:
        return None
    if isinstance(values, np.ndarray):
        return values[idx]
    return [values[i] for i in idx]


DATASETS: Registry[Callable[..., MultimodalDataset]] = Registry("dataset")


def default_cache_dir() -> Path:
    """``$MMEDGE_CACHE`` if set, else ``~/.cache/mmedge``."""
    env = os.environ.get("MMEDGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mmedge"


def build_dataset(name: str, *, seed: int = 0, cache_dir: Path | None = None) -> MultimodalDataset:
    """Builds (or loads from the cache) the reference dataset ``name``.

    Args:
        name: A name from :func:`list_datasets`.
        seed: Fixes every random choice; the same seed gives identical arrays.
        cache_dir: Where built datasets are cached; defaults to :func:`default_cache_dir`.

    Raises:
        RegistryError: ``name`` is not a registered dataset (the message lists them).
    """
    builder = DATASETS.get(name)
    return builder(seed=seed, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir())


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`, sorted."""
    return DATASETS.names()


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Splits items into train/val/test, stratified by label.

    Args:
        labels: (G,) int label of each item (an item may be a group of rows).
        fractions: Three fractions for train, val, test (summing to 1).
        rng: Random generator; fixes the assignment.

    Returns:
        "train"/"val"/"test" -> sorted int64 item indices.
    """
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLIT_NAMES}
    cum = np.cumsum(fractions)[:-1]
    for cls in np.unique(labels):
        members = rng.permutation(np.nonzero(labels == cls)[0])
        cuts = np.round(cum * len(members)).astype(int)
        for s, chunk in zip(SPLIT_NAMES, np.split(members, cuts)):
            parts[s].append(chunk)
    return {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}


def expand_groups(group_splits: dict[str, np.ndarray], group_of_row: np.ndarray) -> dict[str, np.ndarray]:
    """Maps splits of groups (source images) to splits of rows."""
    return {s: np.nonzero(np.isin(group_of_row, g))[0].astype(np.int64) for s, g in group_splits.items()}


def row_groups(meta: dict[str, np.ndarray]) -> np.ndarray | None:
    """(N, G) int64: the row groups of the ``GROUP_META`` keys present in ``meta``, in that order; None if none."""
    keys = [k for k in GROUP_META if k in meta]
    return np.stack([np.asarray(meta[k], dtype=np.int64) for k in keys], axis=1) if keys else None


def dataset_digest(ds: MultimodalDataset) -> str:
    """sha256 over every array, text, label and split of ``ds`` (for determinism checks)."""
    h = hashlib.sha256()
    for arr in _arrays(ds):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    for t in ds.texts or []:
        h.update(t.encode("utf-8") + b"\0")
    h.update("\0".join(ds.labels).encode())
    return h.hexdigest()


def _arrays(ds: MultimodalDataset):
    yield ds.y
    for s in sorted(ds.splits):
        yield ds.splits[s]
    for values in (ds.images, ds.audio):
        if values is None:
            continue
        yield from ([values] if isinstance(values, np.ndarray) else values)
    for k in sorted(ds.meta):
        yield ds.meta[k]


def save_npz(path: Path, ds: MultimodalDataset) -> None:
    """Writes a dataset with stacked (array) images/audio to ``path`` atomically."""
    arrays = {"y": ds.y, "labels": np.array(ds.labels), "task": np.array(ds.task)}
    arrays.update({f"split_{k}": v for k, v in ds.splits.items()})
    arrays.update({f"meta_{k}": v for k, v in ds.meta.items()})
    if ds.images is not None:
        arrays["images"] = np.asarray(ds.images)
    if ds.audio is not None:
        arrays["audio"] = np.asarray(ds.audio)
    if ds.texts is not None:
        arrays["texts"] = np.array(ds.texts, dtype=str)
    with atomic_file(path) as f:
        np.savez(f, **arrays)


def load_npz(path: Path, *, name: str, audio_rate: int = 16000) -> MultimodalDataset:
    """Reads a dataset written by :func:`save_npz`."""
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        return MultimodalDataset(
            name=name, task=str(z["task"]), labels=tuple(str(s) for s in z["labels"]),
            y=z["y"], splits={s: z[f"split_{s}"] for s in SPLIT_NAMES if f"split_{s}" in files},
            images=z["images"] if "images" in files else None,
            texts=[str(t) for t in z["texts"]] if "texts" in files else None,
            audio=z["audio"] if "audio" in files else None, audio_rate=audio_rate,
            meta={k[5:]: z[k] for k in sorted(files) if k.startswith("meta_")},
        )


def cached_build(cache_dir: Path, key: str, name: str, build: Callable[[], MultimodalDataset]) -> MultimodalDataset:
    """Loads ``cache_dir/datasets/{key}.npz`` or builds it with ``build`` and saves it."""
    path = Path(cache_dir) / "datasets" / f"{key}.npz"
    if path.exists():
        try:
            return load_npz(path, name=name)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache entry: rebuild it
    ds = build()
    save_npz(path, ds)
    return ds
