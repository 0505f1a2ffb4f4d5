"""Which local descriptors an image keeps: the ``k`` positions of highest detector weight.

As the released DINOv2 extraction of AMES (github pavelsuma/ames, ``extract/extract_dino.py``,
``get_local``): ``torch.topk`` over the flattened weights, highest first; a grid with fewer
positions keeps them all. With ``nms`` a position must first survive the 3x3 non-maxima
suppression that file defines (``non_maxima_suppression_2d``: kept where its weight is at
least 0.9 times the 3x3 maximum around it; its extraction does not call it).
Positions are (row, column) on the patch grid; the reference's locations are their
centres as fractions of the network input, ``((row + 0.5) / H, (col + 0.5) / W)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NMS_RATIO = 0.9


def nms_keep(weights: np.ndarray) -> np.ndarray:
    """(H, W) bool: positions whose weight is >= 0.9 x the maximum of their 3x3 neighbourhood."""
    heat = torch.as_tensor(np.asarray(weights, np.float32))[None, None]
    peak = F.max_pool2d(heat, kernel_size=3, stride=1, padding=1)
    return (heat >= NMS_RATIO * peak)[0, 0].numpy()


def select_local(weights: np.ndarray, k: int, *, nms: bool = False) -> np.ndarray:
    """(n,) int64 flat positions (row-major) of the kept descriptors, highest weight
    first, n = min(k, candidates)."""
    flat = torch.as_tensor(np.asarray(weights, np.float32)).reshape(1, -1)
    if nms:
        flat = flat.masked_fill(~torch.as_tensor(nms_keep(weights)).reshape(1, -1), float("-inf"))
        candidates = int(torch.isfinite(flat).sum())
    else:
        candidates = flat.shape[1]
    _, ids = torch.topk(flat, k=min(k, candidates), dim=1)
    return ids[0].numpy().astype(np.int64)


def grid_positions(flat: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(n, 2) int16 (row, column) of flat positions on an (H, W) grid."""
    rows, cols = np.divmod(np.asarray(flat, np.int64), grid[1])
    return np.stack([rows, cols], axis=1).astype(np.int16)
