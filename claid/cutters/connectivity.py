"""In-node degrees and the average internal connectivity of Eq. (8)/(9).

All functions take the image's (N, N) Gram matrix of unit tokens and the sorted
global patch indices ``idx`` of one node; the affinity of Eq. (5) is
``gram > alpha`` and is never stored.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def node_degrees(gram: np.ndarray, idx: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Degrees inside one node and its smallest pairwise cosine.

    Args:
        gram: (N, N) float32 cosine similarities of the image's unit tokens.
        idx: (n,) int64 global patch indices of the node.
        alpha: edge threshold (edge when cosine > alpha).
    Returns:
        degrees: (n,) int64, ``sum_{j in S, j != i} A_ij`` (the diagonal is excluded).
        min_cosine: smallest off-diagonal cosine in the node (1.0 when n < 2); a node
            whose tokens all point the same way cannot be bisected.
    """
    n = idx.shape[0]
    degrees = np.zeros(n, dtype=np.int64)
    min_cosine = 1.0
    # the Gram matrix is symmetric: read the upper triangle once, credit both ends
    for a in range(n):
        row = gram[idx[a]]
        for b in range(a + 1, n):
            g = row[idx[b]]
            if g > alpha:
                degrees[a] += 1
                degrees[b] += 1
            if g < min_cosine:
                min_cosine = g
    return degrees, min_cosine


def average_connectivity(degrees: np.ndarray, count_diagonal: bool = False) -> float:
    """cbar(S) of Eq. (9) from in-node degrees.

    Args:
        degrees: (n,) in-node degrees without the diagonal (``node_degrees``).
        count_diagonal: False (paper): ``2 c(S) / (n (n - 1))`` with c(S) the edges
            i < j, in [0, 1]. True (the authors' code): the n self-edges are added to
            the numerator, ``(2 c(S) + n) / (n (n - 1))``, which can exceed 1.
    Returns:
        cbar in [0, 1] (paper form); 1.0 for n < 2 (a single patch is not divisible).
    """
    n = degrees.shape[0]
    if n < 2:
        return 1.0
    edges_twice = float(degrees.sum()) + (n if count_diagonal else 0)
    return edges_twice / (n * (n - 1))
