"""Tiny pretrained-style Hugging Face folders (CLIP, SigLIP, CLAP), built offline with ``save_pretrained``.

Each builder writes a folder as the real checkpoints on the Hub are laid out: the model (a tiny config,
random weights from a fixed seed), its tokenizer (``tokenizer.json`` + ``tokenizer_config.json``, trained in
code with ``tokenizers`` on a fixed corpus) and its real processor class with the family's real settings
(only the sizes are small). Two calls with the same arguments write the same files. Import the builders
(``from tiny_pretrained import clip_folder``) or the session fixture ``pretrained_folders``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

IMAGE_SIZE = 32  # px: the tiny vision towers' input side
CLAP_RATE = 48000  # CLAP's real rate
CLAP_SECONDS = 1  # max_length_s of the tiny CLAP feature extractor (the real one: 10)
_WORDS = ("a photo of the cat dog red blue green mug person car bird tree house road sky robot arm camera "
          "street night day small large old new two three one zero picture drawing sound music speech dog's "
          "barking engine running water rain wind bell ring playing guitar piano voice of an in on with").split()
_EXTRA = ["Café crème, naïve façade — déjà vu!", "Über straße: größer?", "東京 タワー 日本", "emoji 🙂 ok",
          "Hello, World! It's 3:45pm; e-mail: a.b@c.de", "(brackets) [square] {curly} <angle> #tag $5 %50",
          "CAPITALS and MiXeD case", "tabs\tand\nnewlines", "Ελληνικά Русский العربية"]


def corpus() -> list[str]:
    """The fixed training text of the tiny tokenizers: word pairs and triples plus punctuated,
    capitalised and non-ASCII lines."""
    words = list(_WORDS)
    lines = [f"{a} {b}" for a in words[:20] for b in words[20:40]]
    lines += [f"{a} of {b}, {c}." for a, b, c in zip(words, words[7:], words[13:])]
    return lines + _EXTRA * 3


def _bpe_merges(suffix: str, count: int, pre_tokenizer) -> list[tuple[str, str]]:
    """``count`` BPE merges learnt from ``corpus()`` (most frequent pair first, ties broken by the pair
    itself: deterministic, unlike the ``tokenizers`` trainer); ``suffix`` marks a word's last symbol."""
    from collections import Counter

    words: Counter = Counter()
    for line in corpus():
        for piece, _ in pre_tokenizer.pre_tokenize_str(line.lower() if suffix else line):
            words[tuple(piece[:-1]) + (piece[-1] + suffix,)] += 1
    merges = []
    for _ in range(count):
        pairs: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        words = Counter({_merged(w, best): n for w, n in words.items()})
    return merges


def _merged(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _byte_level_vocab(merges: list[tuple[str, str]], head: list[str], tail: list[str], suffix: str) -> dict:
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = head + alphabet + ([c + suffix for c in alphabet] if suffix else [])
    tokens += [a + b for a, b in merges] + tail
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab


def clip_tokenizer(folder: Path, max_length: int = 16):
    """A CLIP tokenizer (``CLIPTokenizer``: lowercasing byte-level BPE with ``</w>`` word ends,
    ``<|startoftext|>`` ... ``<|endoftext|>``, pad = eos as in openai/clip-*), saved to ``folder``."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import CLIPTokenizer

    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""), "removed",
                             invert=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    merges = _bpe_merges("</w>", 300, split)
    vocab = _byte_level_vocab(merges, [], ["<|startoftext|>", "<|endoftext|>"], "</w>")
    tok = CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=max_length)
    tok.save_pretrained(folder)
    return tok


def roberta_tokenizer(folder: Path, max_length: int = 24):
    """A RoBERTa-style tokenizer (``RobertaTokenizer``: byte-level BPE, ``<s>`` ... ``</s>``, ``<pad>``),
    as CLAP's text tower uses, saved to ``folder``."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    merges = _bpe_merges("", 300, pre_tokenizers.ByteLevel(add_prefix_space=False))
    vocab = _byte_level_vocab(merges, ["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"], "")
    tok = RobertaTokenizer(vocab=vocab, merges=list(merges), model_max_length=max_length)
    tok.save_pretrained(folder)
    return tok


def _unigram_pieces(normalizer) -> list[tuple[str, float]]:
    """A Unigram vocabulary from ``corpus()``: the specials, every character, and each word seen twice or
    more (``▁word``) and its halves, scored by log frequency (deterministic)."""
    import math
    from collections import Counter

    counts: Counter = Counter()
    for line in corpus():
        for word in normalizer.normalize_str(line).split():
            counts[word[0]] += 1
            counts["\u2581" + word] += 1
            counts[word[len(word) // 2:]] += 1
            counts.update(word)
    counts["\u2581"] += len(counts)
    pieces = sorted((p for p, n in counts.items() if n >= 2 or len(p) == 1), key=lambda p: (-counts[p], p))
    total = sum(counts[p] for p in pieces)
    return [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, math.log(counts[p] / total)) for p in pieces]


def siglip_tokenizer(folder: Path, max_length: int = 64):
    """A SigLIP-style tokenizer: a lowercasing SentencePiece-like Unigram model (``▁`` word starts),
    ``</s>`` appended, pad = eos = ``</s>``, ``model_max_length`` 64 (SigLIP pads every text to it:
    ``padding="max_length"``), saved to ``folder`` as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok = Tokenizer(models.Unigram(_unigram_pieces(normalizer), unk_id=2, byte_fallback=False))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)
    fast.save_pretrained(folder)
    return fast


def _save(model, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    return folder


def _vision(**extra) -> dict:
    return dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, **extra)


def _text(vocab_size: int, positions: int, **extra) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=positions, **extra)


def clip_image_processor(folder: Path):
    """``CLIPImageProcessor`` with CLIP's real settings (shortest-edge resize, bicubic, centre crop,
    convert to RGB, CLIP's mean/std) at ``IMAGE_SIZE``."""
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                              resample=3, do_center_crop=True, do_convert_rgb=True)
    proc.save_pretrained(folder)
    return proc


def clip_folder(path: Path) -> Path:
    """A tiny ``CLIPModel`` (2-layer 32-wide towers, 16-d projection, 32 px, 8 px patches, seed 0), a CLIP
    tokenizer (16 tokens) and a ``CLIPImageProcessor`` with CLIP's real settings, in ``path``."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer(path)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=_text(len(tok), 16, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                          pad_token_id=tok.pad_token_id),
                        vision_config=_vision(), projection_dim=16)
    clip_image_processor(path)
    return _save(CLIPModel(config).eval(), path)


def clip_vision_with_projection_folder(path: Path) -> Path:
    """A tiny ``CLIPVisionModelWithProjection`` (as ``clip_folder``'s vision tower, seed 3) with a
    ``CLIPImageProcessor`` of CLIP's real settings, in ``path``."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(3)
    clip_image_processor(path)
    return _save(CLIPVisionModelWithProjection(CLIPVisionConfig(**_vision(), projection_dim=16)).eval(), path)


def siglip_folder(path: Path) -> Path:
    """A tiny ``SiglipModel`` (2-layer 32-wide towers, 64 text positions, seed 1), a SigLIP-style tokenizer
    padding to 64 and a ``SiglipImageProcessor`` with SigLIP's real settings (squash resize to the square
    size, bicubic, rescale, mean/std 0.5) at 32 px, in ``path``."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = siglip_tokenizer(path)
    torch.manual_seed(1)
    config = SiglipConfig(text_config=_text(len(tok), 64, pad_token_id=tok.pad_token_id, bos_token_id=None,
                                            eos_token_id=tok.eos_token_id),
                          vision_config=_vision())
    SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3, image_mean=[0.5] * 3,
                            image_std=[0.5] * 3).save_pretrained(path)
    return _save(SiglipModel(config).eval(), path)


def clap_feature_extractor(folder: Path, truncation: str = "rand_trunc", padding: str = "repeatpad"):
    """``ClapFeatureExtractor`` with CLAP's real settings (48 kHz, 1024-point FFT, hop 480, 50 Hz-14 kHz,
    repeat-padding) but 16 mel bands and 1 s clips; ``truncation`` ``"rand_trunc"`` (the deterministic
    choice for clips up to the length) or ``"fusion"``."""
    from transformers import ClapFeatureExtractor

    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=CLAP_RATE, hop_length=480, max_length_s=CLAP_SECONDS,
                              fft_window_size=1024, frequency_min=50, frequency_max=14000, truncation=truncation,
                              padding=padding)
    fe.save_pretrained(folder)
    return fe


def clap_folder(path: Path, truncation: str = "rand_trunc") -> Path:
    """A tiny ``ClapModel`` (HTSAT audio tower: 16 mel bands, spec_size 64, two 1-block stages; a 2-layer
    32-wide RoBERTa text tower; 16-d projection; seed 2), a RoBERTa-style tokenizer and a
    ``ClapFeatureExtractor`` (``clap_feature_extractor``), in ``path``."""
    import torch
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = roberta_tokenizer(path)
    torch.manual_seed(2)
    audio = ClapAudioConfig(num_mel_bins=16, spec_size=64, window_size=4, patch_size=4, patch_stride=(4, 4),
                            depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32,
                            projection_dim=16, enable_fusion=truncation == "fusion")
    text = ClapTextConfig(**_text(len(tok), 26, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id), projection_dim=16, type_vocab_size=1)
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    clap_feature_extractor(path, truncation)
    return _save(ClapModel(config).eval(), path)


BUILDERS = {"clip": clip_folder, "siglip": siglip_folder, "clap": clap_folder,
            "clip_vision": clip_vision_with_projection_folder}


@pytest.fixture(scope="session")
def pretrained_folders(tmp_path_factory) -> dict[str, Path]:
    """``{"clip", "siglip", "clap", "clip_vision"}`` -> a tiny folder of each, built once per session."""
    root = tmp_path_factory.mktemp("pretrained")
    return {name: build(root / name) for name, build in BUILDERS.items()}
