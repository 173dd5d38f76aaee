"""Encoders from local Hugging Face folders: ``create_encoder("hf:./my-bert")``.

Text: a BERT-family ``AutoModel`` with its ``tokenizer.json`` (masked mean of the token states).
Image: an ``AutoModel`` taking ``pixel_values`` (ViT-family tokens or a conv feature map as the
sequence, their mean as the pooled vector). Audio: a wav2vec2-style ``AutoModel`` over the raw
waveform (``AudioSpec(front_end="waveform")``), frames as the sequence. The weights stay in the
folder (frozen, not copied into checkpoints); nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mmedge.encoders.base import Encoder
from mmedge.errors import ConfigError
from mmedge.hf_folder import hf_folder, hf_modality
from mmedge.pretrained_families import unsupported_message
from mmedge.runtime.modalities import get_modality

__all__ = ["HFEncoder", "hf_encoder"]


def _load(folder: Path):
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        try:
            return AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
        except (ValueError, TypeError):  # a model without the eager attention switch
            return AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot load the Hugging Face model in {folder}: {e}; check its config.json and "
                          "weights (save them with model.save_pretrained)") from None


def _feature_dim(config) -> int:
    for key in ("hidden_size", "d_model", "embed_dim"):
        if isinstance(getattr(config, key, None), int):
            return int(getattr(config, key))
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise ConfigError(f"cannot tell the feature size of a {config.model_type} model (no hidden_size); "
                      "wrap it in your own module and export it with mmedge.export.export_model")


class HFEncoder(Encoder):
    """A frozen Hugging Face ``AutoModel`` from a local folder as an mmedge encoder.

    Args:
        name: ``hf:PATH`` (the folder's modality decides the inputs and outputs: its record's
            Hugging Face front end, ``mmedge.runtime.modalities.Modality.hf``).

    Outputs ``{modality}_pooled`` (B, D), ``_seq`` (B, N, D), ``_mask`` (B, N).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.folder = hf_folder(name)
        self.modality = hf_modality(self.folder)
        front_end = get_modality(self.modality).hf
        self._main, self.input_names = front_end.model_input, front_end.encoder_inputs
        self.model = _load(self.folder).eval()
        if getattr(self.model, "main_input_name", self._main) != self._main:
            raise ConfigError(unsupported_message(
                str(self.folder), f"a {type(self.model).__name__} taking {self.model.main_input_name!r} (its "
                f"{self.modality} preprocessing gives {self._main!r})"))
        self.dim = _feature_dim(self.model.config)
        self.pretrained_source = f"local Hugging Face folder {self.folder} ({self.model.config.model_type})"

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if "attention_mask" in self.input_names:  # token inputs: the mask hides padding
            main, attention_mask = inputs
            seq = self.model(**{self._main: main}, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.to(seq.dtype)  # (B, L)
            pooled = (seq * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)  # (B, D)
            return pooled, seq, mask
        hidden = self.model(**{self._main: inputs[0]}).last_hidden_state  # (B, N, D) or (B, D, h, w)
        seq = hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden  # (B, N, D)
        return seq.mean(dim=1), seq, torch.ones_like(seq[:, :, 0])


def hf_encoder(name: str, *, modality: str | None = None) -> Encoder:
    """The encoder of ``hf:PATH`` keyed by ``modality``: one tower of a pretrained dual encoder
    (``mmedge.encoders.pretrained``: CLIP, SigLIP, CLAP), or a one-modality ``AutoModel`` (``HFEncoder``).

    Raises:
        ConfigError: a multi-tower folder without ``modality`` or of an unsupported class (the
            supported families are listed), or an unusable folder.
    """
    from mmedge.pretrained_families import architecture_of

    folder = hf_folder(name)
    arch = architecture_of(folder)
    if arch is None:
        return HFEncoder(name)
    from mmedge.encoders.pretrained import PretrainedTower

    if modality is None and len(arch.modalities) == 1:
        modality = arch.modalities[0]
    if modality is None:
        raise ConfigError(f"{folder} holds a {arch.cls} with towers {list(arch.modalities)}: name the one to build "
                          f"(--encoder {arch.modalities[0]}=hf:{folder})")
    return PretrainedTower(name, modality)
