"""Small users' modules the export tests share (not registered in mmedge)."""
from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """A user's image backbone: returns named features (a dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())

    def forward(self, pixel_values):
        seq = self.body(pixel_values).flatten(2).transpose(1, 2)  # (B, H/4 * W/4, 16)
        return {"pooled": seq.mean(1), "seq": seq}
