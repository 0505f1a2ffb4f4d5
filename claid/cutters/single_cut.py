"""``cutter=tokencut`` / ``cutter=maskcut``: the Hydra shells around claid.cutters.tokencut.

They take the same PatchGrid as the k-sums / NCut cutters (the paper's "same tokens"
comparison) and return a flat RegionTree (depth 1, no parents). ``connectivity`` is
the mean binary affinity inside each region (c(S) of Eq. 9 with the diagonal);
``energy_share`` is not defined for these methods and is NaN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from claid.cutters.tokencut import _unit_rows, maskcut_masks, tokencut_mask
from claid.structures import PatchGrid, RegionTree


@dataclass(frozen=True)
class TokenCutSettings:
    alpha: float = 0.2  # TokenCut's tau: edge when cosine > alpha
    eps: float = 1e-5  # weight of non-edges

    def __post_init__(self) -> None:
        if not -1.0 <= self.alpha < 1.0 or not 0.0 < self.eps < 1.0:
            raise ValueError(
                f"tokencut needs -1 <= alpha < 1 and 0 < eps < 1, got {self.alpha}, {self.eps}"
            )


@dataclass(frozen=True)
class MaskCutSettings:
    alpha: float = 0.15  # CutLER README's tau for its ImageNet pseudo-labels
    eps: float = 1e-5
    n_masks: int = 3  # MaskCut's N
    disjoint: bool = False  # True: each mask minus the earlier ones (CutLER's post-processing)

    def __post_init__(self) -> None:
        if not -1.0 <= self.alpha < 1.0 or not 0.0 < self.eps < 1.0 or self.n_masks < 1:
            raise ValueError(
                f"maskcut needs -1 <= alpha < 1, 0 < eps < 1, n_masks >= 1; got {self.alpha}, {self.eps}, {self.n_masks}"
            )


def _tree(
    masks: list[np.ndarray], tokens: np.ndarray, grid: tuple[int, int], alpha: float, n_cuts: int
) -> RegionTree:
    if not masks:
        return RegionTree.empty(grid, n_cuts=n_cuts, n_nodes=n_cuts + 1)
    stack = np.stack(masks).astype(bool)
    unit = _unit_rows(tokens)
    boxes, conn = [], []
    for m in stack:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        u = unit[m.reshape(-1)]
        conn.append(float((u @ u.T > alpha).mean()))
    r = stack.shape[0]
    return RegionTree(
        masks=stack,
        boxes=np.asarray(boxes, dtype=np.int64),
        parent=np.full(r, -1, dtype=np.int64),
        depth=np.ones(r, dtype=np.int64),
        connectivity=np.asarray(conn, dtype=np.float32),
        energy_share=np.full(r, np.nan, dtype=np.float32),
        n_cuts=n_cuts,
        n_nodes=n_cuts + 1,
        grid=tuple(grid),
    )


class _SingleCut:
    SETTINGS: type

    def __init__(self, **settings: Any) -> None:
        self.settings = self.SETTINGS(**settings)

    def config(self) -> dict[str, Any]:
        return {"cutter": self.NAME, **dataclasses.asdict(self.settings)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class TokenCutCutter(_SingleCut):
    """TokenCut: one region per image (the seed's 4-connected foreground component)."""

    SETTINGS = TokenCutSettings
    NAME = "tokencut"

    def __call__(self, patch_grid: PatchGrid) -> RegionTree:
        s = self.settings
        mask = tokencut_mask(patch_grid.tokens, patch_grid.grid, alpha=s.alpha, eps=s.eps)
        return _tree([mask] if mask.any() else [], patch_grid.tokens, patch_grid.grid, s.alpha, 1)


class MaskCutCutter(_SingleCut):
    """MaskCut: up to ``n_masks`` regions per image (no CRF; see claid.cutters.tokencut)."""

    SETTINGS = MaskCutSettings
    NAME = "maskcut"

    def __call__(self, patch_grid: PatchGrid) -> RegionTree:
        s = self.settings
        masks = maskcut_masks(
            patch_grid.tokens,
            patch_grid.grid,
            n_masks=s.n_masks,
            alpha=s.alpha,
            eps=s.eps,
            disjoint=s.disjoint,
        )
        return _tree(masks, patch_grid.tokens, patch_grid.grid, s.alpha, s.n_masks)
