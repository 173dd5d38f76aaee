"""The towers of pretrained dual encoders (CLIP, SigLIP, CLAP) as mmedge encoders.

``create_encoder("hf:./clip", modality="text")`` builds the text tower of a ``CLIPModel`` folder;
``modality="image"`` its vision tower. Each tower outputs the model's own embedding, exactly as
``get_image_features`` / ``get_text_features`` / ``get_audio_features`` computes it, as
``{modality}_embed``, plus ``pooled`` (the tower's own pooled output, before the projection),
``seq`` and ``mask`` for the fusion heads. The families and their towers are the tables of
``mmedge.pretrained_families``. The weights stay in the folder (frozen, not copied into checkpoints).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from mmedge.encoders.base import Encoder
from mmedge.errors import ConfigError
from mmedge.hf_folder import hf_folder
from mmedge.pretrained_families import FAMILIES, Architecture, architecture_of

__all__ = ["PretrainedTower", "TowerScore", "load_pretrained", "EMBED"]

EMBED = "embed"  # the output name suffix of a tower's embedding: ``image_embed``


def load_pretrained(folder: Path, arch: Architecture):
    """The model class ``arch.cls`` from ``folder`` (eager attention where it has the switch), eval mode."""
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    cls = getattr(transformers, arch.cls, None)
    if cls is None:
        raise ConfigError(f"{folder} holds a {arch.cls}, which this transformers ({transformers.__version__}) lacks; "
                          "upgrade transformers in the export environment")
    try:
        try:
            return cls.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager").eval()
        except (ValueError, TypeError):
            return cls.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot load the {arch.cls} in {folder}: {e}; check its config.json and weights "
                          "(save them with model.save_pretrained)") from None


def _out_features(projection: torch.nn.Module) -> int:
    """The output size of a projection (a Linear, or CLAP's two-layer projection: its last Linear)."""
    return int([m for m in projection.modules() if isinstance(m, torch.nn.Linear)][-1].out_features)


class TowerScore:
    """How the model scores this tower's embedding against the other tower's: ``scale * cos + bias``.

    Attributes:
        scale: ``exp(log scale)`` of the model (None for a single-tower class, which has none).
        bias: The logit bias (SigLIP; 0 for the others).
        activation: ``softmax`` over the texts, or ``sigmoid`` per pair.
    """

    def __init__(self, model, family, modality: str) -> None:
        scale = getattr(model, family.scale.get(modality, ""), None)
        bias = getattr(model, family.bias, None) if family.bias else None
        self.scale = float(scale.detach().exp().reshape(-1)[0]) if isinstance(scale, torch.Tensor) else None
        self.bias = float(bias.detach().reshape(-1)[0]) if isinstance(bias, torch.Tensor) else 0.0
        self.activation = family.activation


class PretrainedTower(Encoder):
    """One tower of a pretrained dual encoder from a local folder.

    Args:
        name: ``hf:PATH`` of a folder holding a registered architecture (``CLIPModel``...).
        modality: The tower to build (the modality the encoder is keyed by).

    Outputs ``{modality}_pooled`` (B, D), ``_seq`` (B, N, D), ``_mask`` (B, N) and ``_embed`` (B, E).

    Attributes:
        record: ``{"family", "class", "tower"}``: which tower of which class (the checkpoint keeps it).
        embed_dim: E, the embedding size.
        scores: modality -> the model's ``TowerScore`` of that modality against text (one per tower of
            the class: a single-tower class has no scale).

    Raises:
        ConfigError: a folder without that tower, or a model that does not load.
    """

    def __init__(self, name: str, modality: str) -> None:
        super().__init__()
        self.folder = hf_folder(name)
        arch = architecture_of(self.folder)
        if arch is None:
            raise ConfigError(f"{self.folder} is not a pretrained dual-encoder folder (CLIP, SigLIP, CLAP)")
        if modality not in arch.modalities:
            raise ConfigError(f"{self.folder} holds a {arch.cls}, whose towers are {list(arch.modalities)}; it has no "
                              f"{modality} tower: key it by {' or '.join(arch.modalities)}")
        family = FAMILIES[arch.family]
        tower = family.towers[modality]
        model = load_pretrained(self.folder, arch)
        self.modality, self.input_names, self.normalize = modality, tower.inputs, tower.normalize
        self.tower = getattr(model, tower.module)
        self.projection = getattr(model, tower.projection) if tower.projection else None
        self.scores = {m: TowerScore(model, family, m) for m in arch.modalities}  # modality scored against text
        self.record = {"family": family.name, "class": arch.cls, "tower": modality}
        config = self.tower.config
        self.dim = int(config.hidden_size)
        self.embed_dim = _out_features(self.projection) if self.projection is not None else self.dim
        self.pretrained_source = f"local Hugging Face folder {self.folder} ({arch.cls}, {modality} tower)"
        del model  # the other tower is not kept

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = dict(zip(self.input_names, inputs))
        out = self.tower(**kwargs, return_dict=True)
        pooled = out.pooler_output  # (B, D): the tower's own pooling
        embed = self.projection(pooled) if self.projection is not None else pooled  # (B, E)
        if self.normalize:
            embed = F.normalize(embed, dim=-1)
        hidden = out.last_hidden_state  # (B, N, D) or (B, D, h, w) (CLAP's HTSAT)
        seq = hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden  # (B, N, D)
        if "attention_mask" in kwargs:
            mask = kwargs["attention_mask"].to(seq.dtype)  # (B, L)
        else:
            mask = torch.ones_like(seq[:, :, 0])  # (B, N)
        return pooled, seq, mask, embed

    def output_names(self) -> tuple[str, ...]:
        """``{modality}_pooled``, ``_seq``, ``_mask``, ``_embed``."""
        return (*super().output_names(), f"{self.modality}_{EMBED}")
