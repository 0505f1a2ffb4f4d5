"""Contract every region descriptor keeps: image + regions -> one vector per region.

Implementations live beside this file and are selected from
``conf/descriptor/*.yaml`` with Hydra ``_target_``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from claid.models.preprocessing import crop_box_pixels, require_image
from claid.structures import PatchGrid

QUERY_MODES = ("crop", "pool")


class RegionDescriptor(nn.Module):
    """Pools one L2-normalised vector of length ``dim`` per region box.

    ``needs_image`` is False for descriptors that pool the detector's own tokens
    (no second network): those read ``patch_grid`` and ignore the pixels.
    """

    dim: int
    needs_image: bool = True
    #: False for an instance built with ``network=False``: it pools cached feature maps
    #: (:mod:`claid.engine.feature_cache`) and cannot run on pixels.
    has_network: bool = True
    #: whether the class accepts ``network=False`` (plus its ``pooling_geometry()``
    #: as keywords), so a re-cut on cached maps builds no network
    poolable_without_network: bool = False
    query: str = (
        "crop"  # "crop": feed the cropped query box; "pool": pool the box from the full map
    )

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, tuple[float, float]]:
        """One RGB image -> ((3, h, w) normalised float32 input, (sy, sx) original
        pixels per input pixel)."""
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, C, h', w') feature map."""
        raise NotImplementedError

    def pooling_geometry(self) -> dict:
        """What ``pool`` needs besides a feature map that only the network knows
        (keyword arguments of the constructor with ``network=False``), e.g. a CNN's
        ``{"stride": 32}``; recorded with cached maps."""
        return {}

    def pool(
        self,
        feature_map: torch.Tensor,
        boxes: np.ndarray,
        scale: tuple[float, float],
        masks: np.ndarray | None = None,
        patch_grid: PatchGrid | None = None,
        mask_cell_px: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Pool regions from one image's feature map.

        Args:
            feature_map: (C, h', w') from ``forward`` (unused when not needs_image).
            boxes: (R, 4) original-image pixels, exclusive end.
            scale: the (sy, sx) that ``preprocess`` returned for this image.
            masks: optional (R, H, W) bool patch masks for mask pooling.
            patch_grid: the detector's tokens (for token-pooling descriptors); also
                places ``masks`` in the image (patch size and scale).
            mask_cell_px: (height, width) of one mask patch in original pixels,
                used for ``masks`` when ``patch_grid`` is None.
        Returns:
            (R, dim) float32, L2-normalised rows.
        """
        raise NotImplementedError

    @torch.no_grad()
    def describe(
        self,
        image: Image.Image | None,
        boxes: np.ndarray,
        masks: np.ndarray | None = None,
        patch_grid: PatchGrid | None = None,
    ) -> np.ndarray:
        """One image and its (R, 4) pixel boxes -> (R, dim) float32 L2-normalised.

        ``masks`` (R, H, W) are placed in the image with ``patch_grid`` when given,
        else by spreading the mask grid evenly over the image (exact up to the
        detector's crop of less than one patch at the right / bottom).
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not self.needs_image:
            return self.pool(None, boxes, (1.0, 1.0), masks, patch_grid)
        require_image(image)
        mask_cell_px = None
        if masks is not None and patch_grid is None:
            grid_h, grid_w = np.asarray(masks).shape[-2:]
            mask_cell_px = (image.height / grid_h, image.width / grid_w)
        pixels, scale = self.preprocess(image)
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        fmap = self(pixels.unsqueeze(0).to(device))[0]
        return self.pool(fmap, boxes, scale, masks, patch_grid, mask_cell_px=mask_cell_px)

    @torch.no_grad()
    def describe_query(
        self,
        image: Image.Image,
        box: tuple[float, float, float, float] | None,
        patch_grid: PatchGrid | None = None,
    ) -> np.ndarray:
        """One query (image + pixel box, None = whole image) -> (dim,) float32,
        L2-normalised. ``self.query`` picks ``crop`` (the box is cut out, at whole
        pixels covering it, and described as an image of its own, as the paper
        says) or ``pool`` (the box is pooled from the full image's map, as the
        lab's evaluation code does). ``patch_grid`` is the detector's grid of the
        full query image, for descriptors that pool tokens."""
        require_image(image)
        if self.query not in QUERY_MODES:
            raise ValueError(f"query must be one of {QUERY_MODES}, got {self.query!r}")
        x1, y1, x2, y2 = crop_box_pixels(box, image.height, image.width)
        if self.query == "crop":
            crop = image.crop((x1, y1, x2, y2))
            whole = np.array([[0, 0, crop.width, crop.height]], dtype=np.float32)
            return self.describe(crop, whole)[0]
        if box is None:
            box = (0.0, 0.0, float(image.width), float(image.height))
        return self.describe(image, np.asarray([box], dtype=np.float32), patch_grid=patch_grid)[0]
