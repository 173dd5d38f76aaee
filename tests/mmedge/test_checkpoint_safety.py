"""Checkpoints are loaded with ``torch.load(weights_only=True)``: a ``weights.pt`` that holds code
(a pickle with ``__reduce__``) is refused with a ``CheckpointError`` and nothing runs (issue 11)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmedge import CHECKPOINT_FORMAT
from mmedge.checkpoint import load_checkpoint
from mmedge.config import get_recipe
from mmedge.errors import CheckpointError


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.write_text, ("code ran",))


def _checkpoint(folder: Path, weights) -> Path:
    folder.mkdir()
    meta = {"format": CHECKPOINT_FORMAT, "recipe": get_recipe("digits-av").to_dict(), "labels": ["a", "b"],
            "members": []}
    (folder / "recipe.json").write_text(json.dumps(meta))
    torch.save(weights, folder / "weights.pt")
    return folder


def test_weights_holding_code_are_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _checkpoint(tmp_path / "ck", {"heads.x": torch.zeros(1), "evil": _Payload(marker)})
    with pytest.raises(CheckpointError, match="weights.pt.*tensors"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_damaged_weights_are_a_checkpoint_error(tmp_path):
    ckpt = _checkpoint(tmp_path / "ck", {"heads.x": torch.zeros(1)})
    (ckpt / "weights.pt").write_bytes((ckpt / "weights.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="weights.pt"):
        load_checkpoint(ckpt)
