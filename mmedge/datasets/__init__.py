"""Reference datasets (``digits-av``, ``digits-match``) and users' JSONL datasets.

>>> from mmedge.datasets import build_dataset, list_datasets
>>> ds = build_dataset("digits-av", seed=0)
>>> train = ds.split("train")
"""
from mmedge.datasets.base import (
    DATASETS,
    MultimodalDataset,
    build_dataset,
    dataset_digest,
    default_cache_dir,
    list_datasets,
)
from mmedge.datasets import digits_av as _digits_av  # noqa: F401  (registers "digits-av")
from mmedge.datasets import digits_match as _digits_match  # noqa: F401  (registers "digits-match")
from mmedge.datasets.digits_av import CAPTION_CLUES, DigitsAVConfig, caption_classes
from mmedge.datasets.digits_match import DigitsMatchConfig
from mmedge.datasets.jsonl import load_jsonl

__all__ = [
    "MultimodalDataset",
    "DATASETS",
    "build_dataset",
    "list_datasets",
    "load_jsonl",
    "default_cache_dir",
    "dataset_digest",
    "DigitsAVConfig",
    "DigitsMatchConfig",
    "CAPTION_CLUES",
    "caption_classes",
]
