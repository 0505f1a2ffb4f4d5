"""CNN region descriptors: one layer of a timm ResNet / VGG, RoI-pooled per region.

The paper pools ImageNet ResNet-50 "block 4.0" (ResNet-101 and VGG-16 as
alternatives); the reference code pools ``layer4.1`` with GeM p = 3 at full
image resolution. The network is cut right after the chosen layer (torch.fx),
so the classifier never runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from claid.descriptors.base import QUERY_MODES, RegionDescriptor
from claid.descriptors.pooling import (
    boxes_to_cells,
    check_pooling,
    l2_normalise,
    masks_to_cells,
    pool_cells,
)
from claid.models.preprocessing import capped_size, prepare_full_image
from claid.models.weights import build_timm_model
from claid.structures import PatchGrid

# Head modules that torch.fx cannot trace (data-dependent branches) but that the
# cut never needs: traced as opaque calls, then pruned with the rest of the head.
_HEAD_NAMES = ("pre_logits", "head", "fc", "global_pool")
# Input side of the probe that measures the layer's stride and channels.
_PROBE_SIDE = 128


def truncate_at_layer(model: nn.Module, layer: str) -> nn.Module:
    """``model`` cut after module ``layer`` (e.g. ``layer4.0``, ``features.29``):
    (B, 3, h, w) -> (B, C, h', w')."""
    names = dict(model.named_modules())
    if layer not in names or layer == "":
        convs = [n for n, m in names.items() if n.count(".") <= 1 and n]
        raise ValueError(f"no layer {layer!r} in {type(model).__name__}; e.g. {convs[:12]}")
    leaves = []
    for name in _HEAD_NAMES:
        module = getattr(model, name, None)
        if module is not None and type(module) not in (nn.Sequential, nn.Identity):
            leaves.append(type(module))
    extractor = create_feature_extractor(
        model, return_nodes={layer: "features"}, tracer_kwargs={"leaf_modules": leaves}
    )
    return extractor


class CNNRegionDescriptor(RegionDescriptor):
    """Region vectors pooled from one layer of a timm CNN (inference only).

    Args:
        model_name: timm name and tag, e.g. ``resnet50.tv_in1k`` (torchvision's
            ImageNet weights).
        pretrained, checkpoint, seed, cache_dir: weights, see ``claid.models.weights``.
        layer: module whose output is pooled (``layer4.0``, ``layer4.1``,
            ``layer3``, ``features.29`` for VGG-16 conv5_3 after ReLU, ...).
        dim: expected channel count of that layer (checked).
        pooling: ``gem`` | ``max`` | ``mean`` over the region's cells.
        gem_p: GeM power.
        mask_pooling: pool only the cells under the region's patch mask (when
            masks are passed), else the whole box.
        query: ``crop`` | ``pool``, see ``RegionDescriptor.describe_query``.
        max_long_side: scale images down to this long side in pixels; None keeps
            the native resolution (the reference descriptor) at any size, so memory
            grows with the photo (ResNet-50 to layer4.0 on CPU: ~+0.2 GB at 1024 px,
            +0.4 GB at 1600, +0.65 GB at 2048, several GB for a 12 MP photo). The
            shipped configs cap it at 1024 px: the size of the Revisited Oxford /
            Paris images (and above COCO's 640 px), which stay native.
        mean, std: per-channel normalisation of [0, 1] RGB.
        network: False builds no network: the instance only pools cached maps
            (``pool``; ``forward`` and ``describe`` refuse), given their ``stride``.
        stride: input pixels per map cell of ``layer``; measured when the network is
            built (a given value is checked), required without it.
    """

    poolable_without_network = True

    def __init__(
        self,
        *,
        model_name: str,
        pretrained: bool,
        checkpoint: str | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        layer: str,
        dim: int,
        pooling: str = "gem",
        gem_p: float = 3.0,
        mask_pooling: bool = False,
        query: str = "crop",
        max_long_side: int | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        network: bool = True,
        stride: int | None = None,
    ) -> None:
        super().__init__()
        check_pooling(pooling, gem_p)
        if query not in QUERY_MODES:
            raise ValueError(f"query must be one of {QUERY_MODES}, got {query!r}")
        if max_long_side is not None and max_long_side < 1:
            raise ValueError(f"max_long_side must be >= 1 or null, got {max_long_side}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean/std need 3 values, std > 0; got {list(mean)}, {list(std)}")
        self.model_name = model_name
        self.layer = layer
        self.dim = dim
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.mask_pooling = mask_pooling
        self.query = query
        self.max_long_side = max_long_side
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        if stride is not None and (not isinstance(stride, int) or stride < 1):
            raise ValueError(f"stride must be an integer >= 1 or null, got {stride!r}")
        if not network:
            if stride is None:
                raise ValueError("network=False needs the layer's stride (cached maps record it)")
            self.has_network = False
            self.extractor = None
            self.stride = stride
            self.eval()
            return
        model = build_timm_model(
            model_name,
            pretrained=pretrained,
            checkpoint=checkpoint,
            seed=seed,
            cache_dir=cache_dir,
            num_classes=0,
        )
        self.extractor = truncate_at_layer(model, layer)
        self.extractor.eval()
        with torch.no_grad():
            probe = self.extractor(torch.zeros(1, 3, _PROBE_SIDE, _PROBE_SIDE))["features"]
        if probe.ndim != 4:
            raise ValueError(f"layer {layer!r} of {model_name} is not a spatial map")
        channels, map_side = probe.shape[1], probe.shape[2]
        if channels != dim:
            raise ValueError(
                f"layer {layer!r} of {model_name} has {channels} channels, config says dim={dim}"
            )
        self.stride = _PROBE_SIDE // map_side
        if stride is not None and stride != self.stride:
            raise ValueError(f"stride={stride}, but layer {layer!r} of {model_name} has "
                             f"stride {self.stride}")
        self.eval()

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) pixels an image of (height, width) goes through the network at."""
        return capped_size(height, width, max_long_side=self.max_long_side)

    def pooling_geometry(self) -> dict:
        """``{"stride": input pixels per map cell}``: with it, ``network=False`` pools."""
        return {"stride": int(self.stride)}

    def preprocess(self, image: Image.Image) -> tuple[torch.Tensor, tuple[float, float]]:
        """RGB image -> ((3, h, w) normalised input at native resolution, or capped
        at ``max_long_side``; sides below one stride are zero-padded so the map
        has >= 1 cell; (sy, sx) original pixels per input pixel)."""
        return prepare_full_image(
            image,
            max_long_side=self.max_long_side,
            min_side=self.stride,
            mean=self.mean,
            std=self.std,
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, dim, h', w') feature map of ``layer``."""
        if self.extractor is None:
            raise ValueError(f"{self.model_name} descriptor was built with network=False: it "
                             "pools cached feature maps only")
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected (B, 3, h, w) pixels, got {tuple(pixels.shape)}")
        return self.extractor(pixels)["features"]

    def pool(
        self,
        feature_map: torch.Tensor,
        boxes: np.ndarray,
        scale: tuple[float, float],
        masks: np.ndarray | None = None,
        patch_grid: PatchGrid | None = None,
        mask_cell_px: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """(C, h', w') map + (R, 4) original-pixel boxes -> (R, dim) float32,
        L2-normalised; with ``mask_pooling`` and ``masks``, only masked cells."""
        if feature_map is None or feature_map.ndim != 3 or feature_map.shape[0] != self.dim:
            shape = None if feature_map is None else tuple(feature_map.shape)
            raise ValueError(f"expected a ({self.dim}, h, w) feature map, got {shape}")
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        map_size = (int(feature_map.shape[1]), int(feature_map.shape[2]))
        cells = boxes_to_cells(boxes, scale, self.stride, map_size)
        cell_masks = None
        if self.mask_pooling and masks is not None:
            masks = np.asarray(masks, dtype=bool)
            if masks.ndim != 3 or len(masks) != len(boxes):
                raise ValueError(f"masks must be ({len(boxes)}, H, W), got {masks.shape}")
            if patch_grid is not None:
                sy, sx = patch_grid.scale
                mask_cell_px = (patch_grid.patch_size * sy, patch_grid.patch_size * sx)
            if mask_cell_px is None:
                raise ValueError("mask pooling needs patch_grid or mask_cell_px to place the masks")
            cell_masks = masks_to_cells(masks, mask_cell_px, scale, self.stride, map_size)
        vectors = pool_cells(feature_map, cells, self.pooling, self.gem_p, cell_masks)
        return l2_normalise(vectors)
