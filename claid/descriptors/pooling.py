"""Region pooling on a feature map: boxes and masks -> cells -> one vector each.

Pure functions. A feature map is ``(C, h, w)``; cell ``(i, j)`` covers input
pixels ``[i*stride, (i+1)*stride) x [j*stride, (j+1)*stride)``, i.e. original
pixels scaled by ``scale = (sy, sx)`` (original pixels per input pixel).

Box -> cells follows the reference descriptor (wlzhao22/CLAID ``descriptor.py``):
``floor(x1 / stride)`` to ``ceil(x2 / stride)`` in input pixels, so every cell the
box touches is pooled. Unlike the reference, a box that would get no cell (it
lies past the map's edge after cropping, or is degenerate) gets the nearest
cell instead of being dropped: every region gets a vector.
"""

from __future__ import annotations

import math

import numpy as np
import torch

POOLINGS = ("gem", "max", "mean")


def check_pooling(pooling: str, gem_p: float) -> None:
    """Raise ValueError unless ``pooling`` is one of POOLINGS and ``gem_p`` > 0."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if not gem_p > 0:
        raise ValueError(f"gem_p must be positive, got {gem_p}")


def boxes_to_cells(
    boxes: np.ndarray,
    scale: tuple[float, float],
    stride: float,
    map_size: tuple[int, int],
) -> np.ndarray:
    """(R, 4) original-pixel boxes -> (R, 4) int64 cell boxes (x1, y1, x2, y2),
    exclusive end, clipped to the map, each at least one cell.

    Args:
        boxes: (R, 4) float, original pixels, exclusive end.
        scale: (sy, sx) original pixels per network-input pixel.
        stride: input pixels per feature-map cell.
        map_size: (h, w) of the feature map.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("boxes contain NaN or infinite values")
    h, w = map_size
    if h < 1 or w < 1:
        raise ValueError(f"feature map has no cells ({h}x{w})")
    sy, sx = scale
    cell_w, cell_h = stride * sx, stride * sy  # original pixels per cell
    x1 = np.floor(boxes[:, 0] / cell_w)
    y1 = np.floor(boxes[:, 1] / cell_h)
    x2 = np.ceil(boxes[:, 2] / cell_w)
    y2 = np.ceil(boxes[:, 3] / cell_h)
    x1 = np.clip(x1, 0, w - 1)
    y1 = np.clip(y1, 0, h - 1)
    x2 = np.clip(np.maximum(x2, x1 + 1), 1, w)
    y2 = np.clip(np.maximum(y2, y1 + 1), 1, h)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)


def masks_to_cells(
    masks: np.ndarray,
    mask_cell_px: tuple[float, float],
    scale: tuple[float, float],
    stride: float,
    map_size: tuple[int, int],
) -> np.ndarray:
    """Patch-level masks -> (R, h, w) bool masks on the feature map: a cell is in
    when the mask patch under the cell's centre is in.

    Args:
        masks: (R, H, W) bool masks on the detector's patch grid.
        mask_cell_px: (height, width) of one mask patch in original pixels
            (``patch_size * sy`` / ``* sx`` of the detector's PatchGrid).
        scale, stride, map_size: the feature map's geometry, as in ``boxes_to_cells``.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (R, H, W), got shape {masks.shape}")
    if min(mask_cell_px) <= 0:
        raise ValueError(f"mask_cell_px must be positive, got {mask_cell_px}")
    h, w = map_size
    sy, sx = scale
    centre_y = (np.arange(h) + 0.5) * stride * sy
    centre_x = (np.arange(w) + 0.5) * stride * sx
    rows = np.floor(centre_y / mask_cell_px[0]).astype(np.int64)
    cols = np.floor(centre_x / mask_cell_px[1]).astype(np.int64)
    grid_h, grid_w = masks.shape[1:]
    # cells whose centre falls past the mask grid (cropped border) are out
    row_ok, col_ok = rows < grid_h, cols < grid_w
    sampled = masks[:, np.minimum(rows, grid_h - 1)][:, :, np.minimum(cols, grid_w - 1)]
    return sampled & row_ok[None, :, None] & col_ok[None, None, :]


def gem(values: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean over the last axis: ``mean(clamp(x, eps)^p)^(1/p)``.

    (..., n) -> (...). Negative inputs are clamped to ``eps`` (GeM is meant for
    non-negative, post-ReLU activations); p = 1 is the mean, p -> inf the max.
    Computed relative to the maximum, so large p does not overflow float32.
    """
    if not p > 0 or not math.isfinite(p):
        raise ValueError(f"GeM power must be a positive finite number, got {p}")
    values = values.clamp(min=eps)
    peak = values.amax(dim=-1, keepdim=True)
    return (values / peak).pow(p).mean(dim=-1).pow(1.0 / p) * peak.squeeze(-1)


# Elements of one (regions x channels x cells) block in GeM / max pooling: bounds the
# memory of the batched reduction (64 MiB of float32) whatever the region count.
_BLOCK_ELEMENTS = 1 << 24


def cell_keep_masks(
    cells: np.ndarray,
    map_size: tuple[int, int],
    cell_masks: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The cells each region pools, for all regions at once: (R, h * w) bool.

    Args:
        cells: (R, 4) int cell boxes (x1, y1, x2, y2), exclusive end, from
            ``boxes_to_cells``.
        map_size: (h, w) of the feature map.
        cell_masks: optional (R, h, w) bool; a cell is kept when it lies in both
            the box and the mask; a region whose mask misses its box keeps the box.
        device: where the result lives (the masks cross to it in one copy).
    """
    h, w = map_size
    bounds = torch.as_tensor(np.asarray(cells, dtype=np.int64).reshape(-1, 4), device=device)
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    x1, y1, x2, y2 = (bounds[:, k] for k in range(4))
    in_rows = (rows[None, :] >= y1[:, None]) & (rows[None, :] < y2[:, None])  # (R, h)
    in_cols = (cols[None, :] >= x1[:, None]) & (cols[None, :] < x2[:, None])  # (R, w)
    keep = (in_rows[:, :, None] & in_cols[:, None, :]).reshape(len(bounds), h * w)
    if cell_masks is not None:
        masked = keep & torch.from_numpy(np.ascontiguousarray(cell_masks, dtype=bool)).to(
            device).reshape(len(bounds), h * w)
        keep = torch.where(masked.any(dim=1, keepdim=True), masked, keep)
    return keep


def pool_cells(
    feature_map: torch.Tensor,
    cells: np.ndarray,
    method: str,
    p: float = 3.0,
    cell_masks: np.ndarray | None = None,
) -> torch.Tensor:
    """Pool each cell box (optionally restricted to a cell mask) into one vector.

    All regions go through one batched reduction on the feature map's device (mean:
    one matrix product; max and GeM: blocks of regions bounded by ``_BLOCK_ELEMENTS``),
    with no per-region host round-trip. Each region's value is exactly its formula
    over its kept cells (GeM as ``gem``: clamped, relative to the region's peak), up
    to the order of float summation.

    Args:
        feature_map: (C, h, w).
        cells: (R, 4) int cell boxes from ``boxes_to_cells``.
        method: ``gem`` (power ``p``), ``max`` or ``mean``.
        cell_masks: optional (R, h, w) bool; only cells inside both the box and
            the mask are pooled; a region whose mask misses its box entirely
            falls back to the whole box.
    Returns:
        (R, C) float32 on the feature map's device, not normalised.
    """
    if method not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {method!r}")
    if feature_map.ndim != 3:
        raise ValueError(f"feature_map must be (C, h, w), got {tuple(feature_map.shape)}")
    if method == "gem" and (not p > 0 or not math.isfinite(p)):
        raise ValueError(f"GeM power must be a positive finite number, got {p}")
    feature_map = feature_map.float()
    c, h, w = feature_map.shape
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 4)
    if cell_masks is not None and cell_masks.shape != (len(cells), h, w):
        raise ValueError(f"cell_masks shape {cell_masks.shape} != ({len(cells)}, {h}, {w})")
    if not len(cells):
        return feature_map.new_zeros((0, c))
    keep = cell_keep_masks(cells, (h, w), cell_masks, feature_map.device)  # (R, hw)
    flat = feature_map.reshape(c, h * w)
    counts = keep.sum(dim=1, keepdim=True).to(flat.dtype)  # (R, 1), >= 1
    if method == "mean":
        return (keep.to(flat.dtype) @ flat.T) / counts
    if method == "gem":
        flat = flat.clamp(min=1e-6)  # as gem(): GeM is meant for non-negative maps
    block = max(1, _BLOCK_ELEMENTS // max(c * h * w, 1))
    grid_map = flat.reshape(c, h, w)
    keep_map = keep.reshape(-1, h, w)
    vectors = []
    for start in range(0, len(cells), block):
        # only the window the block's boxes span (masks never reach past a box)
        x1, y1 = cells[start:start + block, :2].min(axis=0).tolist()
        x2, y2 = cells[start:start + block, 2:].max(axis=0).tolist()
        window = grid_map[:, y1:y2, x1:x2].reshape(c, -1)[None]  # (1, C, n)
        kept = keep_map[start:start + block, y1:y2, x1:x2].reshape(-1, 1, window.shape[2])
        if method == "max":
            fill = torch.tensor(float("-inf"), device=flat.device)
            vectors.append(torch.where(kept, window, fill).amax(dim=2))
            continue
        values = torch.where(kept, window, torch.zeros((), device=flat.device))
        peak = values.amax(dim=2, keepdim=True)  # (r, C, 1), > 0 (values >= eps)
        powered_mean = (values / peak).pow(p).sum(dim=2) / counts[start:start + block]
        vectors.append(powered_mean.pow(1.0 / p) * peak.squeeze(2))
    return torch.cat(vectors)


def l2_normalise(vectors: torch.Tensor | np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """(R, D) -> (R, D) float32 numpy rows of unit L2 norm (all-zero rows stay zero)."""
    array = vectors.detach().float().cpu().numpy() if torch.is_tensor(vectors) else vectors
    array = np.asarray(array, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return (array / np.maximum(norms, eps)).astype(np.float32)
