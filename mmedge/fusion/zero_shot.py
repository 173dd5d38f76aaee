"""Zero-shot members: a pretrained dual encoder's own label scores, as a fusion head.

The head holds one embedding per label, computed at export by the model's text tower from prompt
templates (``"a photo of a {}"``; several templates are averaged, then normalised, as in CLIP's
paper), and the model's logit scale and bias as constants. On the device only the image (or audio)
tower runs: ``logits = scale * cos(embed, label_c) + bias`` (B, C). It can stand alone or be an
ensemble member beside heads trained on the same tower's features.

    head = zero_shot_head("hf:./clip", labels=["cat", "dog"], prompts=["a photo of a {}"])
    export_model(encoders={"image": "hf:./clip", "text": "hf:./clip"}, heads={"zero_shot": head}, ...)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch.nn import functional as F

from mmedge.errors import ConfigError
from mmedge.fusion.base import Features, FusionHead, register_fusion_head

__all__ = ["ZeroShotHead", "zero_shot_head", "check_prompts", "DEFAULT_PROMPTS"]

DEFAULT_PROMPTS = ("{}",)


@register_fusion_head("zero_shot")
class ZeroShotHead(FusionHead):
    """Scores one modality's embedding against fixed label embeddings.

    Args:
        label_embeds: (C, E) label embeddings (normalised here); None: zeros, to be loaded from
            a state dict (its shape is taken from there).
        scale: The model's logit scale (``exp(logit_scale)``).
        bias: The model's logit bias (SigLIP), else 0.
        prompts: The templates the label embeddings came from (recorded).
        **cfg: ``FusionHead`` arguments (one modality: the tower that runs on the device).
    """

    uses = ("embed",)
    min_modalities = 1
    trainable = False  # nothing to train: the label embeddings, scale and bias are the model's

    def __init__(self, *, label_embeds: torch.Tensor | None = None, scale: float = 1.0, bias: float = 0.0,
                 prompts: Sequence[str] = DEFAULT_PROMPTS, **cfg: Any) -> None:
        super().__init__(**cfg)
        if len(self.modalities) != 1:
            raise ConfigError(f"a zero_shot head scores one modality (the image or audio tower), got {list(self.modalities)}")
        if label_embeds is None:
            label_embeds = torch.zeros(self.num_classes, self.dims[self.modalities[0]])
        if label_embeds.dim() != 2 or label_embeds.shape[0] != self.num_classes:
            raise ConfigError(f"label_embeds must be ({self.num_classes}, E), got {list(label_embeds.shape)}")
        self.register_buffer("label_embeds", F.normalize(label_embeds.float(), dim=-1))  # (C, E)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("bias", torch.tensor(float(bias)))
        self.prompts = tuple(prompts)

    def forward(self, feats: Features) -> torch.Tensor:  # (B, C)
        z = F.normalize(feats[self.input_names()[0]], dim=-1)  # (B, E)
        return self.scale * z @ self.label_embeds.t() + self.bias

    def _load_from_state_dict(self, state_dict, prefix, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "label_embeds")
        if saved is not None and saved.shape != self.label_embeds.shape:  # E is known from the weights
            self.label_embeds = torch.zeros_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def check_prompts(prompts: Sequence[str]) -> tuple[str, ...]:
    """The prompt templates, each holding one ``{}`` for the label.

    Raises:
        ConfigError: no template, or one without exactly one ``{}``.
    """
    prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    bad = [p for p in prompts if not isinstance(p, str) or p.count("{}") != 1]
    if not prompts or bad:
        raise ConfigError(f"prompts must be templates with one {{}} for the label, e.g. 'a photo of a {{}}'; got {bad or 'none'}")
    return prompts


@torch.no_grad()
def label_embeddings(text_tower: Any, labels: Sequence[str], prompts: Sequence[str], spec: Any,
                     tokenizer_file: Path) -> torch.Tensor:
    """(C, E) label embeddings: each template filled with each label, run through ``text_tower``
    with the runtime's own tokenization of ``spec``, normalised, averaged over templates, normalised."""
    from mmedge.features import preprocessor

    tokenize = preprocessor("text", spec, tokenizer_file)
    texts = [p.format(label) for label in labels for p in prompts]
    arrays = tokenize(texts)
    embeds = text_tower(*[torch.from_numpy(arrays[n]) for n in text_tower.input_names])[-1]  # (C*T, E)
    embeds = F.normalize(embeds, dim=-1).reshape(len(labels), len(prompts), -1).mean(1)  # (C, E)
    return F.normalize(embeds, dim=-1)


def zero_shot_head(name: str | Path, *, labels: Sequence[str], prompts: Sequence[str] = DEFAULT_PROMPTS,
                   modality: str | None = None, text_spec: Any = None) -> ZeroShotHead:
    """The zero-shot head of a pretrained dual-encoder folder for ``labels``.

    Args:
        name: ``hf:PATH`` (or PATH) of a CLIP, SigLIP or CLAP folder holding a text tower.
        labels: Class names, in logit order.
        prompts: Templates with one ``{}`` (several are averaged).
        modality: The tower it scores (default: the folder's other tower: image, or audio for CLAP).
        text_spec: The text preprocessing (default: the folder's own, ``encoder_spec``).

    Raises:
        ConfigError: a folder without a text tower or a second tower, bad prompts or labels.
    """
    from mmedge.config import encoder_spec
    from mmedge.encoders import create_encoder
    from mmedge.hf_folder import HF_PREFIX, TOKENIZER, hf_folder, hf_name, is_hf_name

    name = hf_name(str(name) if is_hf_name(str(name)) else f"{HF_PREFIX}{name}")
    prompts = check_prompts(prompts)
    if isinstance(labels, str) or len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"a zero-shot head needs at least 2 distinct labels, got {labels!r}")
    text = create_encoder(name, modality="text")
    query = modality or next((m for m in text.scores if m != "text"), None)
    if query is None or query not in text.scores:
        raise ConfigError(f"{name[len(HF_PREFIX):]} holds a {text.record['class']} without a {modality or 'second'} "
                          "tower to score: use a dual-encoder folder (CLIPModel, SiglipModel, ClapModel)")
    spec = text_spec if text_spec is not None else encoder_spec(name, "text")
    embeds = label_embeddings(text, labels, prompts, spec, hf_folder(name) / TOKENIZER)
    score = text.scores[query]
    return ZeroShotHead(modalities=(query,), dims={query: text.embed_dim}, num_classes=len(labels),
                        label_embeds=embeds, scale=score.scale, bias=score.bias, prompts=prompts)
