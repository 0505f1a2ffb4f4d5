"""The one rule that turns patch-level region masks into original-image pixel masks.

Used by the region store (``RegionStore.mask_pixels``), the detection evaluation
(``claid.evaluation.detection.patch_masks_to_pixels``) and the pictures
(``claid.figures.hierarchy_figure``), so a region covers the same pixels everywhere.
"""

from __future__ import annotations

import numpy as np

__all__ = ["patch_mask_to_pixels"]


def patch_mask_to_pixels(
    masks: np.ndarray, cell: tuple[float, float], image_size: tuple[int, int]
) -> np.ndarray:
    """Patch masks -> original-image masks, by the authors' patch-to-pixel geometry.

    The rule: patch (i, j) of the grid covers the original-image rectangle
    ``[i * cy, (i + 1) * cy) x [j * cx, (j + 1) * cx)``, where ``(cy, cx)`` is one
    patch cell in original pixels (the patch size P times the original / resized
    ratio). Pixel (y, x), taken at its integer (top-left) coordinate, belongs to
    patch ``(floor(y / cy), floor(x / cx))``; pixels at or past the grid's extent
    ``(h * cy, w * cx)`` (the border the backbone cropped to a multiple of P) belong
    to no patch and are False. This is the authors' mapping: their detector places
    patch i at original pixel ``int(i * P * rate)`` (``get_objects_coordinate``,
    ``rate`` = original / resized height), and their descriptor maps an original
    coordinate c to cell ``floor(c / rate / stride)`` (``method_roi``), i.e. truncation
    of ``c / cell`` at a pixel's integer coordinate, not at its centre.

    Args:
        masks: (h, w) or (R, h, w) bool patch-level masks.
        cell: (cy, cx) > 0, original pixels per patch along y and x.
        image_size: (H, W) of the original image.
    Returns:
        (H, W) or (R, H, W) bool, matching the input's rank.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim not in (2, 3):
        raise ValueError(f"masks must be (h, w) or (R, h, w), got shape {masks.shape}")
    cy, cx = (float(c) for c in cell)
    if not (np.isfinite(cy) and np.isfinite(cx) and cy > 0 and cx > 0):
        raise ValueError(f"cell must be two positive pixel sizes, got {cell!r}")
    height, width = (int(v) for v in image_size)
    if height < 0 or width < 0:
        raise ValueError(f"image_size must be (H, W) >= 0, got {image_size!r}")
    grid_h, grid_w = masks.shape[-2:]
    rows = np.floor(np.arange(height) / cy).astype(np.int64)
    cols = np.floor(np.arange(width) / cx).astype(np.int64)
    inside_rows = rows < grid_h
    inside_cols = cols < grid_w
    out = np.zeros(masks.shape[:-2] + (height, width), dtype=bool)
    # rows/cols increase with the pixel index, so the pixels inside the grid are a prefix
    inner = masks[..., rows[inside_rows], :][..., cols[inside_cols]]
    out[..., : int(inside_rows.sum()), : int(inside_cols.sum())] = inner
    return out
