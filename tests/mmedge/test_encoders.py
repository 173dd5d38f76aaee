"""Encoders: outputs, and the trunk/tail split used to fine-tune the last blocks."""
import pytest
import torch

from mmedge.encoders import create_encoder
from mmedge.errors import ConfigError


@pytest.mark.parametrize("name,dim,patches", [("efficientnet_lite0", 1280, 16), ("efficientnet_lite0_s16", 112, 64)])
def test_lite0_outputs_and_finetune_split(name, dim, patches):
    enc = create_encoder(name).eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled, seq, mask = enc(x)
        trunk, tail, forward = enc.split_for_finetune(2)
        split_pooled = forward(trunk(x))[0]
    assert pooled.shape == (2, dim) and seq.shape == (2, patches, dim) and mask.shape == (2, patches)
    torch.testing.assert_close(split_pooled, pooled)
    assert sum(p.numel() for p in tail.parameters()) > 0


def test_unfreezing_more_blocks_than_exist_is_an_error():
    with pytest.raises(ConfigError, match="unfreeze between 1 and 11"):
        create_encoder("efficientnet_lite0_s16").split_for_finetune(12)


def test_text_encoder_cannot_be_unfrozen():
    with pytest.raises(ConfigError, match="does not support unfreezing"):
        create_encoder("minilm_l6").split_for_finetune(1)
