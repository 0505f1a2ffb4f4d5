"""A cutter of its own, outside the package: a fixed pyramid of grid cells.

Every image gets the same regions: the cells of an ``n x n`` grid over the patch
grid for each ``n`` in ``levels`` (2 -> four quarters, 3 -> nine cells...), each cell a
child of the cell of the previous level that holds its centre. It ignores the tokens,
which makes it the simplest baseline a class-agnostic detector should beat, and a
template for your own cutter: a class whose ``__call__`` takes a
:class:`claid.structures.PatchGrid` and returns a :class:`claid.structures.RegionTree`
(:class:`claid.interfaces.Cutter`), with keyword-only settings (a misspelled config key
is then an error) and a ``config()`` that records them.

Run it (from the repository root)::

    python run.py 'hydra.searchpath=[file://examples/grid_cutter/conf]' cutter=grid
"""

from __future__ import annotations

import numpy as np

from claid.structures import PatchGrid, RegionTree


class GridCutter:
    """Regions = the cells of ``n x n`` grids over the patch grid, for ``n`` in ``levels``.

    Args:
        levels: grid sizes, coarse to fine (each >= 1); a level of 1 is the whole image.
    """

    def __init__(self, *, levels: list[int] = (2, 3)) -> None:
        levels = [int(n) for n in levels]
        if not levels or any(n < 1 for n in levels):
            raise ValueError(f"cutter.levels must be a list of integers >= 1, got {levels!r}")
        self.levels = levels

    def config(self) -> dict:
        return {"cutter": "grid", "levels": list(self.levels)}

    def __call__(self, patch_grid: PatchGrid) -> RegionTree:
        h, w = patch_grid.grid
        masks, boxes, parents, depths, centres = [], [], [], [], []
        previous: list[int] = []  # output indices of the previous level's cells
        for depth, n in enumerate(self.levels, start=1):
            ys = np.linspace(0, h, min(n, h) + 1).round().astype(int)
            xs = np.linspace(0, w, min(n, w) + 1).round().astype(int)
            level = []
            for y1, y2 in zip(ys[:-1], ys[1:]):
                for x1, x2 in zip(xs[:-1], xs[1:]):
                    mask = np.zeros((h, w), bool)
                    mask[y1:y2, x1:x2] = True
                    cy, cx = (y1 + y2) / 2, (x1 + x2) / 2
                    parent = next((p for p in previous if boxes[p][0] <= cx < boxes[p][2]
                                   and boxes[p][1] <= cy < boxes[p][3]), -1)
                    level.append(len(masks))
                    masks.append(mask)
                    boxes.append((x1, y1, x2, y2))
                    parents.append(parent)
                    depths.append(depth)
                    centres.append((cy, cx))
            previous = level
        r = len(masks)
        return RegionTree(
            masks=np.stack(masks) if r else np.zeros((0, h, w), bool),
            boxes=np.asarray(boxes, np.int64).reshape(r, 4),
            parent=np.asarray(parents, np.int64),
            depth=np.asarray(depths, np.int64),
            connectivity=np.zeros(r, np.float32),  # not measured: cells are not cut by affinity
            energy_share=np.ones(r, np.float32),
            n_cuts=0,
            n_nodes=r,
            grid=(h, w),
        )
