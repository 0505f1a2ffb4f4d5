"""getObject of Algorithm 1: split a set of patches into its 8-connected pieces."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def get_objects(
    members: np.ndarray, grid: tuple[int, int], min_patches: int
) -> tuple[list[np.ndarray], int]:
    """8-connected components of a patch set, small ones dropped.

    Args:
        members: (m,) int64 global patch indices (row-major over ``grid``).
        grid: (H, W).
        min_patches: components with fewer patches are dropped.
    Returns:
        The kept components as sorted (k,) int64 index arrays, in raster order of
        their first patch, and the size of the largest component (kept or not).
    """
    h, w = grid
    mask = np.zeros(h * w, dtype=bool)
    mask[members] = True
    labelled, n_components = ndimage.label(mask.reshape(h, w), structure=_EIGHT_CONNECTED)
    if n_components == 0:
        return [], 0
    flat = labelled.ravel()
    counts = np.bincount(flat, minlength=n_components + 1)
    sizes = counts.copy()
    sizes[0] = 0  # label 0 is the outside of the set
    keep = np.flatnonzero(sizes >= min_patches)
    if keep.size == 0:
        return [], int(sizes.max())
    # one stable sort groups the kept components' patches, each group stays ascending
    order = np.argsort(flat, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)))
    pieces = [order[starts[k] : starts[k] + sizes[k]].astype(np.int64) for k in keep]
    return pieces, int(sizes.max())
