"""Everything an export reads: the checkpoint, its data, parity cases and calibration set."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.checkpoint import TOKENIZER_FILE, load_checkpoint
from mmedge.config import Recipe
from mmedge.errors import CalibrationError, ConfigError
from mmedge.export.calibration_reader import default_calibration_file, load_calibration, take
from mmedge.export.reference_samples import (Arrays, calibration_set, encoder_inputs, parity_cases, rows_items,
                                             with_features)
from mmedge.progress import log


@dataclass
class ExportSources:
    """The loaded checkpoint (or a user's modules) and the real samples the export uses.

    Attributes:
        checkpoint: The checkpoint folder; None for users' modules (``user_model.export_model``).
        data: A ``MultimodalDataset`` with the labelled rows evaluated per precision; None when
            no labelled samples were given (no accuracy report).
        cases: Parity cases (batch 1, 2, 7; two text lengths) with PyTorch features.
        calib: Calibration batches for every component.
        calib_source: Where the calibration samples came from (recorded in the manifest).
        test_rows: Held-out rows evaluated per precision.
    """

    checkpoint: Path | None
    model: Any
    meta: dict[str, Any]
    recipe: Recipe
    data: Any
    test_rows: np.ndarray
    tokenizer_file: Path | None
    cases: list[Arrays]
    calib: list[Arrays]
    calib_source: str

    @classmethod
    def load(cls, checkpoint: Path, config) -> "ExportSources":
        """Loads the checkpoint, its dataset, and builds the parity and calibration samples."""
        from mmedge.training import load_recipe_data

        model, meta = load_checkpoint(checkpoint, drop_unused=True)  # weight-0 members stay out of the bundle
        recipe = model.recipe
        tokenizer = checkpoint / TOKENIZER_FILE if (checkpoint / TOKENIZER_FILE).is_file() else None
        data = load_recipe_data(recipe, seed=meta.get("dataset", {}).get("seed", recipe.train.seed))
        test_rows = np.asarray(data.splits["test"])[: config.eval_samples]
        parity_rows = np.asarray(data.splits["test"])[:7]  # batch 1, 2 and 7, whatever eval_samples is
        cases = parity_cases(model, recipe, rows_items(data, parity_rows, recipe.modalities), tokenizer)
        items, source = _calibration_items(recipe, data, config, model)
        try:
            calib = calibration_set(model, recipe, items, tokenizer)
        except Exception as e:  # preprocessing/shape problems of user data, named
            raise CalibrationError(f"calibration data from {source} does not fit the model's inputs: {e}") from e
        log(f"calibration: {len(calib)} samples from {source}")
        return cls(checkpoint, model, meta, recipe, data, test_rows, tokenizer, cases, calib, source)


def _audio_rate(recipe: Recipe) -> int:
    """The rate audio samples are read at: the recipe's audio spec's (any, unused, without audio)."""
    return getattr(recipe.specs.get("audio"), "sample_rate", 16000)


def _calibration_items(recipe: Recipe, data, config, model) -> tuple[dict[str, list], str]:
    labels = list(data.labels)
    if config.calib is not None:
        items = load_calibration(config.calib, recipe.modalities, labels=labels, rate=_audio_rate(recipe))
        return take(items, config.calib_samples), str(config.calib)
    default = default_calibration_file(recipe.dataset)
    if default is not None:
        items = load_calibration(default, recipe.modalities, labels=labels, rate=_audio_rate(recipe))
        return take(items, config.calib_samples), f"calibration_data/{recipe.dataset}"
    rows = np.asarray(data.splits["train"])[: config.calib_samples]
    return rows_items(data, rows, recipe.modalities), f"{recipe.dataset} training split"


def user_sources(model, tokenizer_file: Path | None, *, labels: list[str], calib: Any, eval_data: Any,
                 config) -> ExportSources:
    """The ``ExportSources`` of users' modules (``user_model.export_model``): their calibration
    and labelled samples, parity cases and features from one run of the ensemble.

    Raises:
        ConfigError: a head that reads an output no encoder produces (after the encoders ran once).
        CalibrationError: calibration samples that do not fit the model's inputs.
    """
    from mmedge.export.user_model import describe_outputs
    from mmedge.export.user_samples import calibration_items, eval_dataset

    recipe = model.recipe
    items, source = calibration_items(calib, recipe.modalities, labels=labels, rate=_audio_rate(recipe),
                                      limit=config.calib_samples)
    first = {m: v[:7] for m, v in items.items()}
    probe = _fitting(source, lambda: with_features(model, encoder_inputs(first, recipe, tokenizer_file)))
    model.recipe = recipe = describe_outputs(model, probe, labels)
    data = eval_dataset(eval_data, model.used_modalities(), labels=labels, task=recipe.task, rate=_audio_rate(recipe))
    rows = np.arange(len(data) if data is not None else 0)[: config.eval_samples]
    cases = parity_cases(model, recipe, first, tokenizer_file)
    batches = _fitting(source, lambda: calibration_set(model, recipe, items, tokenizer_file))
    log(f"calibration: {len(batches)} samples from {source}")
    meta = {"labels": list(labels), "metrics": {}, "dataset": {"name": "eval_data" if data is not None else None},
            "source_model": {"encoders": dict(recipe.encoders), "heads": {mb.name: mb.head for mb in recipe.members}}}
    return ExportSources(None, model, meta, recipe, data, rows, tokenizer_file, cases, batches, source)


def _fitting(source: str, run):
    try:
        return run()
    except (ConfigError, CalibrationError):
        raise
    except Exception as e:  # preprocessing/shape problems of the user's data or modules, named
        raise CalibrationError(f"calibration data from {source} does not fit the model's inputs: "
                               f"{type(e).__name__}: {e}") from e
