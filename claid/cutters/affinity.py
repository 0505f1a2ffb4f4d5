"""Per-image preparation shared by every cutter: token checks, the Gram matrix of
L2-normalised tokens (its thresholding is the affinity of Eq. 5) and the
high-energy set H of Sec. III-D.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def token_matrix(
    tokens: Any, grid: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Check and flatten one image's patch tokens.

    Args:
        tokens: (H*W, D) with ``grid=(H, W)``, or (H, W, D); numpy array or torch
            tensor (any float dtype, any device).
        grid: (H, W) patch rows and columns; required for 2-D tokens, checked
            against 3-D tokens when given.
    Returns:
        (H*W, D) float32 C-contiguous tokens (row-major over the grid) and (H, W).
    Raises:
        ValueError: wrong rank, grid mismatch, empty input, NaN or inf values.
    """
    if hasattr(tokens, "detach"):  # a torch tensor; torch is not imported here on purpose
        tokens = tokens.detach().float().cpu().numpy()
    array = np.asarray(tokens)
    if array.ndim == 3:
        h, w, d = array.shape
        if grid is not None and tuple(int(g) for g in grid) != (h, w):
            raise ValueError(f"grid {tuple(grid)} does not match tokens of shape {array.shape}")
        array = array.reshape(h * w, d)
    elif array.ndim == 2:
        if grid is None:
            raise ValueError(
                f"tokens of shape {array.shape} are flat: pass grid=(H, W) or (H, W, D) tokens"
            )
        if len(grid) != 2:
            raise ValueError(f"grid must be (H, W), got {grid!r}")
        h, w = (int(g) for g in grid)
        if h <= 0 or w <= 0:
            raise ValueError(f"grid ({h}, {w}) is empty: tokens are empty or the image was too small")
        if h * w != array.shape[0]:
            raise ValueError(
                f"grid ({h}, {w}) holds {h * w} patches but tokens have {array.shape[0]} rows"
            )
    else:
        raise ValueError(f"tokens must be (H*W, D) or (H, W, D), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"tokens are empty: shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"tokens must be real numbers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"tokens hold NaN or inf in {bad_rows.size} patch(es), first at row {bad_rows[0]}"
        )
    return array, (h, w)


def normalise_rows(tokens: np.ndarray) -> np.ndarray:
    """(N, D) float32 -> (N, D) float32 with unit L2 rows.

    Raises:
        ValueError: a row has zero norm (its direction, hence its affinity, is undefined).
    """
    norms = np.linalg.norm(tokens, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"{zero.size} token(s) have zero L2 norm (first at row {zero[0]}): "
            "cosine affinity is undefined for them"
        )
    return (tokens / norms[:, None]).astype(np.float32, copy=False)


def gram_matrix(unit_tokens: np.ndarray) -> np.ndarray:
    """(N, D) unit rows -> (N, N) float32 cosine similarities ``X X^T``.

    One float32 BLAS product per image; the affinity of Eq. (5) is ``gram > alpha``
    and the k-sums distances of Eq. (3) are ``2 n - 2 * sum(gram[i, S])``, so no other
    pairwise quantity is ever computed.
    """
    return unit_tokens @ unit_tokens.T


def high_energy_mask(tokens: np.ndarray, quantile: float = 0.3) -> np.ndarray:
    """The high-energy set H of Sec. III-D as a mask.

    Args:
        tokens: (N, D) *un-normalised* tokens.
        quantile: share of patches in H, in (0, 1].
    Returns:
        (N,) bool, True for the ``round(quantile * N)`` (at least 1) patches with the
        largest L1 norm; ties go to the lower patch index (stable sort), so the
        set is deterministic.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"energy_quantile must be in (0, 1], got {quantile}")
    n = tokens.shape[0]
    k = min(n, max(1, int(round(quantile * n))))
    l1 = np.abs(tokens).sum(axis=1, dtype=np.float64)
    top = np.argsort(-l1, kind="stable")[:k]
    mask = np.zeros(n, dtype=bool)
    mask[top] = True
    return mask
