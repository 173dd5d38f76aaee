"""Encoders registered by name: ``create_encoder("efficientnet_lite0")``, ``list_encoders()``; local
Hugging Face folders by ``create_encoder("hf:PATH")`` (``mmedge.encoders.hf``)."""
from mmedge.encoders.base import (ENCODERS, Encoder, create_encoder, encoder_tokenizer, freeze, list_encoders,
                                  register_encoder)
from mmedge.encoders import audio, image, text  # noqa: F401  (registers the encoders)

__all__ = ["ENCODERS", "Encoder", "create_encoder", "encoder_tokenizer", "freeze", "list_encoders", "register_encoder"]
