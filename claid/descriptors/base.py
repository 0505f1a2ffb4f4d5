"""Contract every region descriptor keeps: image + regions -> one vector per region.

Implementations live beside this file and are selected from
``conf/descriptor/*.yaml`` with Hydra ``_target_``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from claid.structures import PatchGrid


class RegionDescriptor(nn.Module):
    """Pools one L2-normalised vector of length ``dim`` per region box.

    ``needs_image`` is False for descriptors that pool the detector's own tokens
    (no second network): those read ``patch_grid`` and ignore the pixels.
    """

    dim: int
    needs_image: bool = True
    query: str = "crop"  # "crop": feed the cropped query box; "pool": pool the box from the full map

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, tuple[float, float]]:
        """One RGB image -> ((3, h, w) normalised float32 input, (sy, sx) original
        pixels per input pixel)."""
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, C, h', w') feature map."""
        raise NotImplementedError

    def pool(
        self,
        feature_map: torch.Tensor,
        boxes: np.ndarray,
        scale: tuple[float, float],
        masks: np.ndarray | None = None,
        patch_grid: PatchGrid | None = None,
    ) -> np.ndarray:
        """Pool regions from one image's feature map.

        Args:
            feature_map: (C, h', w') from ``forward`` (unused when not needs_image).
            boxes: (R, 4) original-image pixels, exclusive end.
            scale: the (sy, sx) that ``preprocess`` returned for this image.
            masks: optional (R, H, W) bool patch masks for mask pooling.
            patch_grid: the detector's tokens (for token-pooling descriptors).
        Returns:
            (R, dim) float32, L2-normalised rows.
        """
        raise NotImplementedError

    @torch.no_grad()
    def describe(
        self,
        image: Image.Image,
        boxes: np.ndarray,
        masks: np.ndarray | None = None,
        patch_grid: PatchGrid | None = None,
    ) -> np.ndarray:
        """One image and its (R, 4) pixel boxes -> (R, dim) float32 L2-normalised."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not self.needs_image:
            return self.pool(None, boxes, (1.0, 1.0), masks, patch_grid)
        pixels, scale = self.preprocess(image)
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        fmap = self(pixels.unsqueeze(0).to(device))[0]
        return self.pool(fmap, boxes, scale, masks, patch_grid)

    @torch.no_grad()
    def describe_query(
        self, image: Image.Image, box: tuple[float, float, float, float] | None
    ) -> np.ndarray:
        """One query (image + pixel box, None = whole image) -> (dim,) float32,
        L2-normalised. ``self.query`` picks crop-then-describe or pool-from-full-map."""
        raise NotImplementedError
