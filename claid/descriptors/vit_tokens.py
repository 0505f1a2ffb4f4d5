"""Region descriptor from the detector's own tokens: no second network.

Each region's vector pools the detector's patch tokens (``PatchGrid.tokens``)
under the region's patch mask (or its box, when no masks are given). Tokens are
L2-normalised one by one before pooling (``normalize_tokens``), so every patch
weighs the same whatever its norm (the raw norms carry the saliency the cutter
uses, not the content); the pooled vector is L2-normalised again.
``pooling: mean`` (default) averages them; ``max`` takes the channel-wise max;
``gem`` clamps negatives to ~0 first, so it only suits non-negative features.

Queries need tokens of the query image. ``describe_query(image, box, patch_grid)``
pools the given full-image ``patch_grid`` when ``query: pool``; otherwise (and for
``query: crop``) it runs its own backbone: by default one built from the same
backbone config and weights (seeded random weights are identical across builds),
or the detector instance itself when it is passed as ``backbone``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

from claid.backbones.base import Backbone
from claid.descriptors.base import QUERY_MODES, RegionDescriptor
from claid.descriptors.pooling import boxes_to_cells, check_pooling, l2_normalise, pool_cells
from claid.models.preprocessing import crop_box_pixels, require_image
from claid.structures import PatchGrid


def grid_feature_map(patch_grid: PatchGrid, normalize_tokens: bool) -> torch.Tensor:
    """PatchGrid -> (D, H, W) float32 map, tokens L2-normalised if asked."""
    h, w = patch_grid.grid
    tokens = torch.from_numpy(np.asarray(patch_grid.tokens, dtype=np.float32))
    if normalize_tokens:
        tokens = torch.nn.functional.normalize(tokens, dim=1)
    return tokens.T.reshape(-1, h, w)


def build_backbone(
    backbone: Backbone | Mapping | None, pretrained: bool, checkpoint: str | None
) -> Backbone | None:
    """A Backbone instance as is; a backbone config instantiated with this
    descriptor's ``pretrained`` / ``checkpoint``; None stays None."""
    if backbone is None or isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, Mapping):
        from hydra.utils import instantiate

        return instantiate(backbone, pretrained=pretrained, checkpoint=checkpoint)
    raise ValueError(f"backbone must be a Backbone, a backbone config or None, got {backbone!r}")


class ViTTokenDescriptor(RegionDescriptor):
    """Pools the detector backbone's patch tokens inside each region.

    Args:
        backbone: the backbone for query images: a ``Backbone`` (e.g. the
            detector itself, shared), a backbone config (``${backbone}`` in the
            YAML: built here with ``pretrained``/``checkpoint``), or None (then
            only ``query: pool`` with a given ``patch_grid`` works).
        pretrained, checkpoint: weights of a backbone built from a config.
        dim: token dimension (the backbone's ``embed_dim``; checked).
        pooling: ``mean`` | ``max`` | ``gem`` over the region's tokens.
        gem_p: GeM power.
        normalize_tokens: L2-normalise each token before pooling.
        mask_pooling: pool the tokens under the region's mask when masks are
            given (else, or when false, every token in the region's box).
        query: ``crop`` | ``pool``.
        network: False builds no backbone (as ``backbone=None``): pooling the
            detector's PatchGrids, e.g. cached ones, needs none.
    """

    needs_image = False
    poolable_without_network = True

    def __init__(
        self,
        *,
        backbone: Backbone | Mapping | None,
        pretrained: bool,
        checkpoint: str | None = None,
        dim: int,
        pooling: str = "mean",
        gem_p: float = 3.0,
        normalize_tokens: bool = True,
        mask_pooling: bool = True,
        query: str = "crop",
        network: bool = True,
    ) -> None:
        super().__init__()
        check_pooling(pooling, gem_p)
        if query not in QUERY_MODES:
            raise ValueError(f"query must be one of {QUERY_MODES}, got {query!r}")
        self.backbone = build_backbone(backbone if network else None, pretrained, checkpoint)
        self.has_network = self.backbone is not None
        if self.backbone is not None and self.backbone.embed_dim != dim:
            raise ValueError(f"dim={dim} but the backbone's tokens have {self.backbone.embed_dim}")
        self.dim = dim
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.normalize_tokens = normalize_tokens
        self.mask_pooling = mask_pooling
        self.query = query
        self.eval()

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, tuple[float, float]]:
        """The backbone's preprocessing (this descriptor reads tokens, not pixels)."""
        return self._require_backbone("preprocess images").preprocess(image)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, D, h/P, w/P): the backbone's tokens as a map."""
        backbone = self._require_backbone("run on pixels")
        tokens = backbone(pixels)
        b, _, h, w = pixels.shape
        p = backbone.patch_size
        return tokens.transpose(1, 2).reshape(b, -1, h // p, w // p)

    def pool(
        self,
        feature_map: torch.Tensor | None,
        boxes: np.ndarray,
        scale: tuple[float, float],
        masks: np.ndarray | None = None,
        patch_grid: PatchGrid | None = None,
        mask_cell_px: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Pool ``patch_grid``'s tokens per region -> (R, dim) float32, L2-normalised.

        ``boxes`` are original pixels (mapped to patches with the grid's scale);
        ``masks`` (R, H, W) must be on the grid itself. ``feature_map``, ``scale``
        and ``mask_cell_px`` are unused: the grid carries its own geometry."""
        if patch_grid is None:
            raise ValueError("vit_tokens pools the detector's tokens: pass patch_grid")
        if patch_grid.tokens.shape[1] != self.dim:
            raise ValueError(
                f"patch_grid tokens have dim {patch_grid.tokens.shape[1]}, not {self.dim}"
            )
        fmap = grid_feature_map(patch_grid, self.normalize_tokens)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        cells = boxes_to_cells(boxes, patch_grid.scale, patch_grid.patch_size, patch_grid.grid)
        cell_masks = None
        if self.mask_pooling and masks is not None:
            cell_masks = np.asarray(masks, dtype=bool)
            if cell_masks.shape != (len(boxes), *patch_grid.grid):
                raise ValueError(
                    f"masks shape {cell_masks.shape} != ({len(boxes)}, *grid {patch_grid.grid})"
                )
        return l2_normalise(pool_cells(fmap, cells, self.pooling, self.gem_p, cell_masks))

    @torch.no_grad()
    def describe(
        self,
        image: Image.Image | None,
        boxes: np.ndarray,
        masks: np.ndarray | None = None,
        patch_grid: PatchGrid | None = None,
    ) -> np.ndarray:
        """(R, 4) pixel boxes (and optional (R, H, W) masks on the grid) -> (R, dim)
        float32 L2-normalised. Pools ``patch_grid``; without one, the backbone
        computes the grid of ``image`` first."""
        if patch_grid is None and image is not None:
            backbone = self._require_backbone("describe images without a patch_grid")
            patch_grid = backbone.extract_patches(image)
        return super().describe(image, boxes, masks, patch_grid)

    @torch.no_grad()
    def describe_query(
        self,
        image: Image.Image,
        box: tuple[float, float, float, float] | None,
        patch_grid: PatchGrid | None = None,
    ) -> np.ndarray:
        """(dim,) float32 L2-normalised vector of a query box (None = whole image).

        ``crop``: the backbone describes the cropped box, all its tokens pooled.
        ``pool``: the box is pooled from ``patch_grid`` (the full query image's
        grid) or, when None, from the backbone's grid of ``image``."""
        require_image(image)
        x1, y1, x2, y2 = crop_box_pixels(box, image.height, image.width)
        if self.query == "crop":
            crop = image.crop((x1, y1, x2, y2))
            grid = self._require_backbone("describe cropped queries").extract_patches(crop)
            whole = np.array([[0, 0, crop.width, crop.height]], dtype=np.float32)
            return self.pool(None, whole, (1.0, 1.0), patch_grid=grid)[0]
        if patch_grid is None:
            patch_grid = self._require_backbone("describe queries").extract_patches(image)
        if box is None:
            box = (0.0, 0.0, float(image.width), float(image.height))
        return self.pool(None, np.asarray([box], np.float32), (1.0, 1.0), patch_grid=patch_grid)[0]

    def _require_backbone(self, action: str) -> Backbone:
        if self.backbone is None:
            raise ValueError(
                f"vit_tokens has no backbone to {action}: give it one "
                "(backbone: ${backbone} in the YAML) or use query: pool with a patch_grid"
            )
        return self.backbone
