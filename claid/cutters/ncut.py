"""Normalised-cut bisection of one node, TokenCut style ("CLAID (NCut)", Table I/V).

On the node's affinity W (Eq. 5: 1 for cosine > alpha, else a tiny ``epsilon``
so the graph is connected, diagonal included as in TokenCut), the relaxed NCut
solves ``(D - W) y = lambda D y`` for the second-smallest eigenvector. We solve the
equivalent symmetric problem ``D^-1/2 W D^-1/2 u = mu u`` for its second-largest
eigenvector with ARPACK (``scipy.sparse.linalg.eigsh``, k=2, dense mat-vecs) and
set ``y = D^-1/2 u``; small nodes use LAPACK with ``subset_by_index``. Like TokenCut
the node is split at the mean of y. The half holding the highest-degree patch is
returned as S_b (label 0), so S_b/S_w mean the same as for k-sums.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

# below this size a dense LAPACK solve is cheaper and ARPACK's k < n rule is safe
_DENSE_BELOW = 64


def fiedler_vector(weights: np.ndarray, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Second-smallest generalised eigenvector of ``(D - W) y = lambda D y``.

    Args:
        weights: (n, n) float64 symmetric, non-negative, with positive row sums.
        rng: start-vector generator for ARPACK (for determinism).
    Returns:
        (n,) float64 y (sign arbitrary).
    """
    n = weights.shape[0]
    inv_sqrt_deg = 1.0 / np.sqrt(weights.sum(axis=1))
    normalised = weights * inv_sqrt_deg[:, None] * inv_sqrt_deg[None, :]
    if n < _DENSE_BELOW:
        _, vectors = scipy.linalg.eigh(normalised, subset_by_index=[n - 2, n - 1])
        u = vectors[:, 0]
    else:
        rng = rng if rng is not None else np.random.default_rng(0)
        start = rng.standard_normal(n)
        values, vectors = scipy.sparse.linalg.eigsh(normalised, k=2, which="LA", v0=start, tol=1e-6)
        u = vectors[:, np.argsort(values)[0]]
    return u * inv_sqrt_deg


def ncut_bisect(
    gram: np.ndarray,
    idx: np.ndarray,
    degrees: np.ndarray,
    *,
    alpha: float = 0.2,
    epsilon: float = 1e-5,
    state: int | np.uint64 = 0,
) -> np.ndarray:
    """Bisect one node by the normalised cut of its affinity graph.

    Args:
        gram: (N, N) float32 cosines of the image's unit tokens.
        idx: (n,) int64 sorted global patch indices of the node, n >= 2.
        degrees: (n,) int64 in-node degrees, to name the halves.
        alpha: edge threshold of Eq. (5).
        epsilon: weight given to non-edges (TokenCut uses 1e-5).
        state: uint64 generator state of this node (ARPACK start vector).
    Returns:
        (n,) int8 labels, 0 = the half holding the highest-degree patch. One half
        is empty when y is constant (nothing to cut).
    """
    n = idx.shape[0]
    if n < 2:
        raise ValueError(f"cannot bisect a node of {n} patch(es)")
    weights = np.where(gram[np.ix_(idx, idx)] > alpha, 1.0, epsilon)
    y = fiedler_vector(weights, rng=np.random.default_rng(int(state)))
    side = y > y.mean()
    labels = side.astype(np.int8)
    if labels[int(np.argmax(degrees))] == 1:
        labels = (1 - labels).astype(np.int8)
    return labels
