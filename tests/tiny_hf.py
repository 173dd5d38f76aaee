"""Tiny Hugging Face models built offline from configs (random weights, ``save_pretrained``):
a BERT with a WordPiece ``tokenizer.json`` built with ``tokenizers``, a ViT with its image
processor config, a wav2vec2 with its feature extractor config. Imported by the tests that
use them (``from tiny_hf import hf_models``: a session fixture)."""
from __future__ import annotations

from pathlib import Path

import pytest

WORDS = ["zero", "one", "two", "three", "the", "digit", "a", "photo", "of", "spoken"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", *WORDS]


def _tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(folder / "tokenizer.json"))


def build_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT and its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    _tokenizer(folder)
    return folder


def build_vit(folder: Path) -> Path:
    """A 2-layer, 32-wide ViT over 32x32 images (8x8 patches) and its image processor config."""
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(1)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        '{"image_processor_type": "ViTImageProcessor", "do_resize": true, "size": {"height": 32, "width": 32}, '
        '"resample": 2, "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true, '
        '"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}')
    return folder


def build_wav2vec2(folder: Path) -> Path:
    """A 2-layer, 32-wide wav2vec2 (3 conv layers, stride 80) and its feature extractor config."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(2)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    """``{"text": bert, "image": vit, "audio": wav2vec2}`` folders."""
    root = tmp_path_factory.mktemp("hf")
    builders = {"text": build_bert, "image": build_vit, "audio": build_wav2vec2}
    out = {}
    for modality, build in builders.items():
        folder = root / modality
        folder.mkdir()
        out[modality] = build(folder)
    return out
