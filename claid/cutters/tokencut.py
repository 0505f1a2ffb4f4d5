"""TokenCut and MaskCut single-cut region finders (their cores: no CRF, no pseudo-mask training).

TokenCut (Wang et al., CVPR 2022, ``object_discovery.ncut``): one normalised cut of
the binary patch affinity ``A = (F F^T > alpha)`` (eps where not, diagonal included),
the second-smallest generalised eigenvector of ``(D - A) x = lambda D x`` solved
dense with LAPACK (not ARPACK), split at its mean (strict ``>``), the foreground is
the side of the ``argmax |x|`` seed, and the region is the 4-connected component
(``scipy.ndimage.label``'s default structure) holding the seed.

MaskCut (CutLER, CVPR 2023, ``maskcut_forward``): ``n_masks`` cuts; before each cut
after the first, the patches of the earlier kept masks get their features zeroed
(they stay in the graph with affinity eps). Orientation: flip when >= 3 of the four
corners are foreground, else when the ``argmax |x|`` seed is background; the seed is
then re-chosen as the argmax of the oriented vector. Drop rule (from the second
mask on): IoU with the current mask > 0.5 or area <= 1 % of the patches; a dropped
mask is not painted and the current mask becomes empty. Generalised from the
reference's square ``ps x ps`` grid to ``h x w``; no CRF (not implemented here).

Not yet wired into ``components.py`` / ``conf/cutter``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy import ndimage


def _unit_rows(tokens: np.ndarray) -> np.ndarray:
    """L2-normalise rows; zero rows stay zero (as ``F.normalize`` with its eps)."""
    t = np.asarray(tokens, dtype=np.float64)
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    return t / np.maximum(norm, 1e-12)


def second_eigenvector(tokens: np.ndarray, alpha: float, eps: float = 1e-5) -> np.ndarray:
    """Second-smallest generalised eigenvector of the binary affinity's Laplacian.

    Args:
        tokens: (N, D) patch features (any scale).
        alpha: affinity threshold (strict ``>``) on cosines.
        eps: weight of non-edges.
    Returns:
        (N,) float64 eigenvector (LAPACK's sign).
    """
    unit = _unit_rows(tokens)
    affinity = np.where(unit @ unit.T > alpha, 1.0, eps)
    degree = np.diag(affinity.sum(axis=1))
    _, vectors = scipy.linalg.eigh(degree - affinity, degree, subset_by_index=[1, 2])
    return vectors[:, 0].copy()


def _seed_component(bipartition: np.ndarray, seed: int, grid: tuple[int, int]) -> np.ndarray:
    labels, _ = ndimage.label(bipartition.reshape(grid))
    return labels == labels[np.unravel_index(seed, grid)]


def tokencut_mask(
    tokens: np.ndarray, grid: tuple[int, int], *, alpha: float = 0.2, eps: float = 1e-5
) -> np.ndarray:
    """TokenCut's one region: (H, W) bool mask of the seed's 4-connected component."""
    _check(tokens, grid)
    x = second_eigenvector(tokens, alpha, eps)
    bipartition = x > x.mean()
    seed = int(np.argmax(np.abs(x)))
    if not bipartition[seed]:
        bipartition = ~bipartition
    return _seed_component(bipartition, seed, grid)


def _corners_foreground(bipartition: np.ndarray, grid: tuple[int, int]) -> int:
    b = bipartition.reshape(grid)
    return int(b[0, 0]) + int(b[0, -1]) + int(b[-1, 0]) + int(b[-1, -1])


def maskcut_masks(
    tokens: np.ndarray,
    grid: tuple[int, int],
    *,
    n_masks: int = 3,
    alpha: float = 0.15,
    eps: float = 1e-5,
    disjoint: bool = False,
) -> list[np.ndarray]:
    """MaskCut's masks: list of (H, W) bool, non-empty ones only.

    By default the raw seed components of the kept cuts (possibly overlapping, as
    claid's own regions do). ``disjoint=True`` gives
    CutLER's post-processing, each mask minus the earlier ones, which is what the
    ``bipartitions`` list of ``maskcut_forward`` holds once upsampled.
    """
    _check(tokens, grid)
    if n_masks < 1:
        raise ValueError(f"maskcut needs n_masks >= 1, got {n_masks}")
    original = np.asarray(tokens, dtype=np.float64)
    n = original.shape[0]
    painting = np.zeros(n)
    current = np.zeros(n, dtype=bool)
    kept: list[np.ndarray] = []
    for i in range(n_masks):
        x = second_eigenvector(original * (1.0 - painting)[:, None], alpha, eps)
        bipartition = x > x.mean()
        seed = int(np.argmax(np.abs(x)))
        flip = _corners_foreground(bipartition, grid) >= 3 or not bipartition[seed]
        if flip:
            bipartition = ~bipartition
            seed = int(np.argmax(-x))
        else:
            seed = int(np.argmax(x))
        mask = _seed_component(bipartition, seed, grid).reshape(-1)
        if i >= 1:
            union = np.logical_or(current, mask).sum()
            iou = np.logical_and(current, mask).sum() / union if union else 0.0
            if iou > 0.5 or mask.sum() / n <= 0.01:
                current = np.zeros(n, dtype=bool)
                continue
        painting = np.minimum(painting + mask, 1.0)
        current = mask
        kept.append(mask)
    if disjoint:
        seen = np.zeros(n, dtype=bool)
        out = []
        for m in kept:
            out.append(m & ~seen)
            seen |= m
        kept = out
    return [m.reshape(grid) for m in kept if m.any()]


def _check(tokens: np.ndarray, grid: tuple[int, int]) -> None:
    h, w = grid
    if tokens.ndim != 2 or tokens.shape[0] != h * w or h < 2 or w < 2:
        raise ValueError(f"tokens of shape {tokens.shape} do not fit a {h}x{w} grid")
