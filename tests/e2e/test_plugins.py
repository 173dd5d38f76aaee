"""Plug-ins from the command line: a module outside mmedge registers an encoder and a fusion head;
``--plugin`` (before or after the command) lets ``mmedge train`` and ``mmedge export`` use them,
the checkpoint records the module, and exporting without it names the module to load. Installed
``mmedge.plugins`` entry points load by themselves."""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from mmedge.cli import app

PLUGIN = "mmedge_test_plugin_gated"
SOURCE = '''
import torch
from torch import nn

from mmedge.encoders import Encoder, register_encoder
from mmedge.fusion import FusionHead, register_fusion_head


@register_encoder("tiny_cnn_plugin")
class TinyCNN(Encoder):
    modality, input_names, trained_here, pretrained_source = "image", ("pixel_values",), True, "a test plug-in"

    def __init__(self):
        super().__init__()
        self.dim = 16
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 4, 1), nn.ReLU())

    def forward(self, pixel_values):
        seq = self.body(pixel_values).flatten(2).transpose(1, 2)
        return seq.mean(1), seq, torch.ones_like(seq[:, :, 0])


@register_fusion_head("gated_plugin")
class GatedHead(FusionHead):
    def __init__(self, **cfg):
        super().__init__(**cfg)
        width = sum(self.dims.values())
        self.gate, self.out = nn.Linear(width, width), nn.Linear(width, self.num_classes)

    def forward(self, feats):
        h = torch.cat([feats[f"{m}_pooled"] for m in self.modalities], dim=-1)
        return self.out(torch.sigmoid(self.gate(h)) * h)
'''


@pytest.fixture
def registries(monkeypatch):
    """Registries and modules restored after the test (plug-ins register for good otherwise)."""
    from mmedge.encoders import ENCODERS
    from mmedge.fusion import FUSION_HEADS

    monkeypatch.setattr(ENCODERS, "_items", dict(ENCODERS._items))
    monkeypatch.setattr(FUSION_HEADS, "_items", dict(FUSION_HEADS._items))
    yield ENCODERS, FUSION_HEADS
    for name in (PLUGIN, "mmedge_ep_demo_plugin"):
        sys.modules.pop(name, None)


def _colours(folder, n=30):
    import cv2

    rng = np.random.default_rng(0)
    names = ["red", "green", "blue"]
    lines = []
    for i in range(n):
        image = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
        image[..., i % 3] += 150  # the class is the dominant channel (RGB)
        cv2.imwrite(str(folder / f"{i}.png"), image[..., ::-1])
        lines.append(json.dumps({"image": f"{i}.png", "label": names[i % 3]}))
    (folder / "colours.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "colours.jsonl"


@pytest.mark.slow
def test_plugin_trains_and_exports_from_the_command_line(registries, tmp_path, monkeypatch):
    (tmp_path / f"{PLUGIN}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    data, ckpt, bundle = _colours(tmp_path), tmp_path / "ckpt", tmp_path / "bundle"
    runner = CliRunner()
    run = runner.invoke(app, ["--plugin", PLUGIN, "train", "--data", str(data), "--encoder", "image=tiny_cnn_plugin",
                              "--head", "gated_plugin", "--epochs", "8", "-o", str(ckpt)])
    assert run.exit_code == 0, run.output
    meta = json.loads((ckpt / "recipe.json").read_text())
    assert meta["plugins"] == [{"module": PLUGIN, "encoders": ["tiny_cnn_plugin"], "heads": ["gated_plugin"]}]
    export = ["export", str(ckpt), "-o", str(bundle), "--precision", "fp32,int8", "--calib-samples", "12",
              "--max-drop", "100"]
    encoders, heads = registries
    with monkeypatch.context() as mp:  # a fresh process: the plug-in not imported, its names unknown
        mp.delitem(sys.modules, PLUGIN)
        mp.delitem(encoders._items, "tiny_cnn_plugin")
        mp.delitem(heads._items, "gated_plugin")
        missing = runner.invoke(app, export)
    assert missing.exit_code == 2 and f"--plugin {PLUGIN}" in " ".join(missing.output.split())
    run = runner.invoke(app, [*export, "--plugin", PLUGIN])
    assert run.exit_code == 0, run.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["members"][0]["head"] == "gated_plugin" and manifest["precisions"]["int8"] == "ok"
    assert manifest["metrics"]["fp32"]["agreement_with_pytorch"] == 1.0


def test_unknown_plugin_module_is_a_clear_error(registries):
    run = CliRunner().invoke(app, ["recipes", "--plugin", "no_such_mmedge_plugin"])
    assert run.exit_code == 2 and "no_such_mmedge_plugin" in run.output and "cannot be imported" in run.output
    run = CliRunner().invoke(app, ["recipes", "--plugin"])
    assert run.exit_code == 2 and "needs a module name" in run.output


def test_entry_point_plugins_load_by_themselves(registries, tmp_path, monkeypatch):
    dist = tmp_path / "mmedge_ep_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mmedge-ep-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mmedge.plugins]\ndemo = mmedge_ep_demo_plugin\n")
    (tmp_path / "mmedge_ep_demo_plugin.py").write_text(
        "from mmedge.encoders import register_encoder\nfrom mmedge.encoders.audio import AudioCNNEncoder\n"
        "register_encoder('ep_demo_encoder')(AudioCNNEncoder)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = CliRunner().invoke(app, ["recipes"])
    assert run.exit_code == 0, run.output
    assert "ep_demo_encoder" in run.output
