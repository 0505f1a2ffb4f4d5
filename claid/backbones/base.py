"""Contract every detector backbone keeps: image -> PatchGrid.

Implementations live beside this file (one per family) and are selected from
``conf/backbone/*.yaml`` with Hydra ``_target_``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from claid.structures import PatchGrid


class Backbone(nn.Module):
    """A ViT that turns an RGB image into last-layer patch tokens.

    Subclasses set ``patch_size`` and ``embed_dim`` and implement
    ``preprocess`` and ``forward``.
    """

    patch_size: int
    embed_dim: int

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, tuple[float, float]]:
        """Resize, crop to a multiple of the patch size and normalise one RGB image.

        Returns:
            pixels: (3, h, w) float32, h and w multiples of ``patch_size``.
            scale: (sy, sx) original pixels per input pixel.
        """
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, (h/P)*(w/P), D) patch tokens, CLS/register tokens dropped."""
        raise NotImplementedError

    @torch.no_grad()
    def extract_patches(self, image: Image.Image) -> PatchGrid:
        """One image -> its PatchGrid (convenience for single images; batched
        extraction goes through ``claid.engine``)."""
        pixels, scale = self.preprocess(image)
        h, w = pixels.shape[-2:]
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        tokens = self(pixels.unsqueeze(0).to(device))[0]
        return PatchGrid(
            tokens=tokens.float().cpu().numpy().astype(np.float32, copy=False),
            grid=(h // self.patch_size, w // self.patch_size),
            patch_size=self.patch_size,
            scale=scale,
            image_size=(image.height, image.width),
        )
